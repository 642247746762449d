"""`tuneforge adapters combine`: one LoRA adapter from a weighted combination of several.

peft's ``add_weighted_adapter`` does the arithmetic; this module checks the
request first, because peft either fails deep inside (mismatched ranks) or,
for a name that already exists, silently does nothing. Methods:

- ``linear``: A = Σ √(wᵢ sᵢ) Aᵢ, B = Σ √(wᵢ sᵢ) Bᵢ (sᵢ the adapter's scaling); equal ranks; exact for one
  adapter, for several BA has cross terms (cheap, approximate);
- ``cat``: the adapters side by side (rank Σ rᵢ), exactly Σ wᵢ ΔWᵢ;
- ``svd``: Σ wᵢ ΔWᵢ truncated by SVD to the largest rank;
- ``ties`` (Yadav et al. 2023), ``dare_linear`` / ``dare_ties`` (Yu et al. 2023), ``magnitude_prune``:
  prune each adapter to ``density`` of its entries before summing; equal ranks.

The output is a plain peft folder (``adapter_config.json`` at its top level),
the first adapter's tokenizer, and ``combine.json`` recording the recipe.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .inference import NAME_PATTERN, AdapterSet, AdapterSpec, describe, parse_named_paths
from .merge import ensure_new_output, write_atomically

METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
EQUAL_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
RECIPE_FILE = "combine.json"


class CombineRefused(ValueError):
    """A combination peft cannot (or would silently not) make; the message names the argument and the fix."""


@dataclass
class CombineResult:
    output: Path
    rank: int
    method: str


def lora_settings(spec: AdapterSpec) -> dict:
    """The adapter_config.json of a LoRA adapter folder."""
    return json.loads((spec.path / "adapter_config.json").read_text())


def rank_of(settings: dict) -> int:
    """The rank peft allocates for an adapter: ``r``, or the largest of its ``rank_pattern``."""
    return max([int(settings.get("r", 0)), *map(int, (settings.get("rank_pattern") or {}).values())])


def check_request(
    specs: list[AdapterSpec], weights: list[float], method: str, density: float | None, name: str
) -> None:
    """Refuse, before any weights load, what peft would reject late or get silently wrong."""
    if len(specs) < 1:
        raise CombineRefused("adapters combine: give at least one adapter (name=path or a path)")
    if method not in METHODS:
        raise CombineRefused(f"--method {method}: not one of {', '.join(METHODS)}")
    if len(weights) != len(specs):
        raise CombineRefused(
            f"--weights: {len(weights)} weight(s) for {len(specs)} adapter(s); give one weight per "
            "adapter, in the same order"
        )
    for spec in specs:
        if spec.kind != "lora":
            raise CombineRefused(f"{spec.name}: {spec.path} is a {spec.kind} adapter; peft combines LoRA adapters only")
    settings = {spec.name: lora_settings(spec) for spec in specs}
    for spec_name, cfg in settings.items():
        if cfg.get("use_dora"):
            raise CombineRefused(
                f"{spec_name}: a DoRA adapter (use_dora); its magnitude vector has no weighted "
                "combination in peft: combine plain LoRA adapters"
            )
        if cfg.get("modules_to_save"):
            raise CombineRefused(
                f"{spec_name}: trains whole modules too (modules_to_save: "
                f"{', '.join(cfg['modules_to_save'])}, e.g. a classifier head), which peft cannot "
                "combine"
            )
    ranks = {spec_name: rank_of(cfg) for spec_name, cfg in settings.items()}
    if method in EQUAL_RANK_METHODS and len(set(ranks.values())) > 1:
        shown = ", ".join(f"{n}: r={r}" for n, r in ranks.items())
        raise CombineRefused(
            f"--method {method} needs adapters of equal rank, these differ ({shown}); "
            "use --method cat or svd, which combine any ranks"
        )
    if method in DENSITY_METHODS and (density is None or not 0 < density <= 1):
        shown = "missing" if density is None else str(density)
        raise CombineRefused(
            f"--density: {method} keeps this share of each adapter's entries, a number in (0, 1] "
            f"(got {shown}); e.g. --density 0.5"
        )
    if method not in DENSITY_METHODS and density is not None:
        raise CombineRefused(f"--density: only {', '.join(DENSITY_METHODS)} prune; --method {method} does not use it")
    if not NAME_PATTERN.match(name):
        raise CombineRefused(f"--name {name}: use letters, digits, '_', '.' and '-' only")
    if name in {spec.name for spec in specs}:
        raise CombineRefused(
            f"--name {name}: already the name of an input adapter (peft would silently keep that "
            "one); choose another --name"
        )


def combine_adapters(
    inputs: list[str],
    weights: list[float],
    *,
    method: str,
    output: str | Path,
    density: float | None = None,
    name: str = "combined",
    model_name: str | None = None,
    trust_remote_code: bool = False,
) -> CombineResult:
    """Combine the LoRA adapters ``inputs`` (``name=path`` or paths) and write the result to ``output``."""
    named = parse_named_paths(inputs, flag="adapters combine", lone=None)
    specs = [describe(n, p, label="adapters combine") for n, p in named.items()]
    check_request(specs, weights, method, density, name)
    output = ensure_new_output(output)
    adapters = AdapterSet.load(model_name, {s.name: s.path for s in specs}, trust_remote_code=trust_remote_code)
    peft_model = adapters.model
    peft_model.base_model.add_weighted_adapter(
        adapters=[s.name for s in specs],
        weights=list(weights),
        adapter_name=name,
        combination_type=method,
        density=density,
    )
    if name not in peft_model.peft_config:  # peft returns quietly when it did nothing
        raise CombineRefused(f"--name {name}: peft did not add the combined adapter; choose another --name")
    _undo_rslora_scaling(peft_model, name)
    rank = int(peft_model.peft_config[name].r)
    recipe = {
        "method": method,
        "weights": list(weights),
        "density": density,
        "name": name,
        "rank": rank,
        "base": adapters.base_name,
        "inputs": [
            {
                "name": s.name,
                "path": str(s.path),
                "r": rank_of(lora_settings(s)),
                "lora_alpha": lora_settings(s).get("lora_alpha"),
            }
            for s in specs
        ],
    }

    def write(tmp: Path) -> None:
        _save_single_adapter(peft_model, name, tmp)
        adapters.tokenizers[specs[0].name].save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=1))

    write_atomically(output, write)
    return CombineResult(output=output, rank=rank, method=method)


def _undo_rslora_scaling(peft_model, name: str) -> None:
    """peft builds the combined adapter with lora_alpha = r but keeps use_rslora, scaling it by √r instead of 1.

    The combination already carries each input's scaling, so the combined adapter must scale by 1:
    plain LoRA with alpha = r.
    """
    config = peft_model.peft_config[name]
    if not getattr(config, "use_rslora", False):
        return
    config.use_rslora = False
    from peft.tuners.lora import LoraLayer

    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and name in module.scaling:
            module.scaling[name] = 1.0


def _save_single_adapter(peft_model, name: str, folder: Path) -> None:
    """Save adapter ``name`` alone, with adapter_config.json at the top of ``folder``.

    peft's save_pretrained puts every adapter other than "default" in a subfolder named after it.
    """
    staging = folder / ".peft"
    peft_model.save_pretrained(str(staging), selected_adapters=[name], safe_serialization=True)
    written = staging if name == "default" else staging / name
    for item in written.iterdir():
        shutil.move(str(item), str(folder / item.name))
    shutil.rmtree(staging)

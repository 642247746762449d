"""What an export starts from: a run folder (or its adapter / model folder) and its merged weights.

A run records everything an export needs: the base (``config.yaml`` ``model.name``), how prompts were
rendered (``data.template``, ``data.system_prompt``: ``adapters.inference.run_rendering``), whether the
base was quantized in training (``model.quantize``) and the tokenizer (saved beside the adapter).

Quantized bases. A LoRA trained on a 4-bit (QLoRA, Dettmers et al. 2023, arXiv 2305.14314) or 8-bit
base learned a correction to the *quantized* weights. ``tuneforge merge`` folds it into the
full-precision base, which is not what training saw; an export instead loads the base quantized as in
training, dequantizes it (transformers' ``model.dequantize()``) and merges there:
W = dequant(Q(W₀)) + ΔW, the weights the run computed with. What that changes is measured by
``verify-export`` against the run's own held-out answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.templates import PromptRendering
from . import ExportRefused

GENERATIVE_TASKS = (None, "CAUSAL_LM")


@dataclass
class RunSource:
    """A trained run's output and the facts an export needs about it."""

    folder: Path  # the run's adapter/ (or model/) folder, or the folder given
    run_dir: Path | None  # the run folder holding config.yaml, when there is one
    adapter_kind: str | None  # adapter type (lora, …); None for a full model folder
    base: str | None  # the base model the adapter belongs to
    rendering: PromptRendering
    task: str | None  # peft task type: CAUSAL_LM, SEQ_CLS, FEATURE_EXTRACTION (None: unrecorded)
    quantize: str | None  # model.quantize in training: 4bit | 8bit | None
    config: dict = field(default_factory=dict)  # the run's saved config.yaml (empty outside a run)

    @property
    def label(self) -> str:
        return str(self.run_dir or self.folder)


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) and "method" in data else {}


def resolve_source(path: str | Path) -> RunSource:
    """A :class:`RunSource` for ``runs/NAME``, ``runs/NAME/adapter`` or ``runs/NAME/model``."""
    from ..adapters import adapter_type_of, is_adapter_folder
    from ..adapters.inference import run_base_name, run_rendering, task_of

    given = Path(path).expanduser()
    if not given.exists():
        raise FileNotFoundError(f"RUN: {given} does not exist; give a run folder (runs/NAME)")
    if (given / "adapter").is_dir() and is_adapter_folder(given / "adapter"):
        folder = given / "adapter"
    elif (given / "model" / "config.json").is_file():
        folder = given / "model"
    elif is_adapter_folder(given) or (given / "config.json").is_file():
        folder = given
    else:
        raise ExportRefused(
            f"RUN: {given} holds no trained output (no adapter/ or model/ folder); give a run folder (runs/NAME)"
        )
    run_dir = folder.parent if folder.name in ("adapter", "model") and _read_config(folder.parent) else None
    config = _read_config(run_dir) if run_dir else {}
    is_adapter = is_adapter_folder(folder)
    model = config["model"] if isinstance(config.get("model"), dict) else {}
    return RunSource(
        folder=folder,
        run_dir=run_dir,
        adapter_kind=adapter_type_of(folder) if is_adapter else None,
        base=run_base_name(folder) if is_adapter else str(folder),
        rendering=run_rendering(folder),
        task=_method_task(config) or (task_of(folder) if is_adapter else None),
        quantize=model.get("quantize"),
        config=config,
    )


def _method_task(config: dict) -> str | None:
    """The peft task type of the run's method (interface member ``peft_task_type``), None outside a run."""
    from ..registry import get_method

    try:
        return get_method(config["method"]).peft_task_type if config.get("method") else None
    except KeyError:
        return None


def check_generative(source: RunSource, fmt: str) -> None:
    """Refuse, with the reason, runs whose model is not a text generator (GGUF and Ollama run text generation)."""
    task = source.task if source.task is not None else _method_task(source.config)
    if task in GENERATIVE_TASKS:
        return
    what = {"SEQ_CLS": "a classifier / reward head", "FEATURE_EXTRACTION": "an embedding model"}.get(
        task or "", f"a {task} model"
    )
    raise ExportRefused(
        f"{source.label}: is {what}; --format {fmt} holds text generators only (llama.cpp and Ollama have no "
        "place for its head): export --format merged, which plain transformers loads"
    )


def load_merged_model(source: RunSource, *, trust_remote_code: bool = False):
    """The run's model as one plain fp32 transformers causal LM, and a note on how it was made (or None)."""
    import torch

    from ..adapters.merge import check_mergeable, merge_adapter
    from ..models.load import load_causal_lm

    if source.adapter_kind is None:
        return load_causal_lm(str(source.folder), dtype=torch.float32, trust_remote_code=trust_remote_code), None
    check_mergeable(source.folder)  # soft prompts, bottleneck adapters: MergeRefused with the reason
    if source.base is None:
        raise ExportRefused(f"{source.folder}: records no base model (no run config.yaml, no base_model_name_or_path)")
    if not source.quantize:
        base = load_causal_lm(source.base, dtype=torch.float32, trust_remote_code=trust_remote_code)
        return merge_adapter(base, source.folder).eval(), None
    base = _dequantized_base(source, trust_remote_code)
    merged = merge_adapter(base, source.folder).to(torch.float32).eval()
    note = (
        f"the run trained on a {source.quantize} base: the base was loaded {source.quantize} as in training, "
        "dequantized, and the adapter merged into those dequantized weights (W = dequant(Q(W0)) + dW); "
        "verify-export measures what this changes"
    )
    return merged, note


def _dequantized_base(source: RunSource, trust_remote_code: bool):
    """The base loaded quantized as the run loaded it, then dequantized to plain float weights."""
    import torch

    from ..config.loader import validate_dict
    from ..models.load import load_causal_lm, quantization_config

    model_cfg = validate_dict(source.config, str(source.run_dir / "config.yaml")).model  # type: ignore[operator]
    quantized = load_causal_lm(
        source.base,
        dtype=torch.float32,
        trust_remote_code=trust_remote_code,
        quantization_config=quantization_config(model_cfg, torch.float32),
    )
    return quantized.dequantize()

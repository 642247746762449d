"""Everything `tuneforge validate` checks, without loading model weights.

Schema problems are caught earlier, by `config.load_config`. Here: the data
(every row), the chat template on real rendered samples, and whether the
method, model and options fit together. `tuneforge train` runs the same checks
before it reads a single weight.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from .models.kind import model_kind


class ChecksFailed(Exception):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n  ".join(["the config did not pass its checks:", *errors]))


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ChecksFailed(self.errors)


def check_config(config, *, tokenizer, method=None) -> CheckReport:
    """Shared option checks, the model family against the method, then the method's own checks."""
    from .registry import get_method

    method = method or get_method(config.method)
    if getattr(config, "stages", None):
        return _check_stages(config, tokenizer, method)
    report = CheckReport()
    _check_output_dir(config, report)
    _check_options(config, report)
    model_config = _read_model_config(config, report)
    if model_config is None:
        return report  # the reason is in the errors; every later check needs the model's config
    kind = model_kind(model_config)
    report.facts["model_type"] = getattr(model_config, "model_type", "?")
    if kind not in method.model_kinds:
        # One clear line instead of the method's data / template checks failing on the wrong model.
        report.errors.append(_wrong_kind_message(config, method, kind, model_config))
        return report
    errors, warnings, facts = method.check(config, tokenizer)
    report.errors.extend(errors)
    report.warnings.extend(warnings)
    report.facts.update(facts)
    from .adapters.checks import check_adapter

    errors, warnings, facts = check_adapter(config, method, model_config)
    report.errors.extend(errors)
    report.warnings.extend(warnings)
    report.facts.update(facts)
    _check_model_limits(config, tokenizer, model_config, report)
    if not report.errors:
        _check_plan(config, report)
    return report


def check_files(config) -> CheckReport:
    """`tuneforge validate --schema-only`: the local files the config reads exist, and output_dir can be a folder.

    Data sources (``data.train`` / ``data.eval``, or each stage's) and ``continual.general_text`` are resolved
    as loading would resolve them (a folder must hold data files, a glob must match); hub datasets are named,
    not looked up. No row is read and no model, tokenizer or torch is loaded, so the model is not checked.
    """
    from .config.schema import stage_data
    from .data.sources import resolve
    from .data.types import DataError

    report = CheckReport()
    _check_output_dir(config, report)
    sections = [("data", config.data)]
    if getattr(config, "stages", None):  # each stage's data: is the shared one with the stage's keys over it
        sections = [(f"stages[{k}] ({s.name}).data", stage_data(config, k)) for k, s in enumerate(config.stages)]
    named = [(f"{where}.{key}", getattr(data, key)) for where, data in sections for key in ("train", "eval")]
    continual = getattr(config, "continual", None)
    if continual is not None:
        named.append(("continual.general_text", continual.general_text))
    files, hub = set(), []
    for key, value in named:
        for source in _paths(value):
            try:
                resolved = resolve(source)
            except DataError as exc:
                report.errors.extend(f"{key}: {problem}" for problem in exc.problems)
                continue
            if isinstance(resolved, tuple):
                hub.append(source)
            else:
                files.update(resolved)
    not_checked = f"; hub datasets, not looked up: {', '.join(dict.fromkeys(hub))}" if hub else ""
    report.facts["files"] = f"{len(files)} local data file(s) found{not_checked}"
    return report


def _check_stages(config, tokenizer, method) -> CheckReport:
    """A continual config: its own refusals, then every stage's config checked as a one-stage run."""
    from .continual.checks import continual_problems
    from .continual.stages import stage_config

    report = CheckReport()
    report.errors.extend(continual_problems(config, method))
    described = []
    for k, stage in enumerate(config.stages):
        stage_report = check_config(stage_config(config, k), tokenizer=tokenizer, method=method)
        report.errors.extend(f"stage {stage.name}: {e}" for e in stage_report.errors)
        report.warnings.extend(
            f"stage {stage.name}: {w}" for w in stage_report.warnings if not any(w in seen for seen in report.warnings)
        )
        if stage_report.facts.get("data"):
            described.append(f"{stage.name}: {stage_report.facts['data']}")
        for key in ("rows", "examples", "tokens", "loss_tokens", "truncated"):  # summed over the stages
            if isinstance(stage_report.facts.get(key), int):
                report.facts[key] = report.facts.get(key, 0) + stage_report.facts[key]
        for key in ("precision", "model_type"):
            if key in stage_report.facts:
                report.facts[key] = stage_report.facts[key]
    if described:
        report.facts["data"] = "\n  ".join(described)
    return report


_KIND_NAMES = {
    "causal-lm": "a causal language model",
    "encoder": "an encoder",
    "encoder-decoder": "an encoder-decoder model",
    "other": "a model of a kind tuneforge does not train",
}


def _wrong_kind_message(config, method, kind: str, model_config) -> str:
    from .registry import get_method, method_names

    needs = " or ".join(_KIND_NAMES[k] for k in method.model_kinds)
    takers = [name for name in method_names() if kind in get_method(name).model_kinds]
    which = (
        f"methods that take {_KIND_NAMES[kind]}: {', '.join(takers)}"
        if takers
        else "no method takes this kind of model"
    )
    return (
        f"model.name: {config.model.name} is {_KIND_NAMES[kind]} (model_type: "
        f"{getattr(model_config, 'model_type', '?')}); method '{config.method}' needs {needs}; {which}"
    )


def _check_output_dir(config, report: CheckReport) -> None:
    from pathlib import Path

    parent = Path(config.output_dir)
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            report.errors.append(
                f"output_dir: {folder} is a file, not a folder; point output_dir at a folder (it is created if missing)"
            )
            return


def _check_options(config, report: CheckReport) -> None:
    import torch  # here, not at the top: check_files (validate --schema-only) runs without torch

    cuda = torch.cuda.is_available()
    t = config.training
    if not cuda and t.mixed_precision == "fp16":
        report.errors.append(
            "training.mixed_precision: 'fp16' needs a CUDA GPU and none is visible; use 'auto' "
            "(bf16 autocast where this CPU runs it faster, else fp32) or 'bf16'"
        )
    else:
        from .training.precision import cpu_bf16_flags, resolve_precision

        report.facts["precision"] = resolve_precision(t.mixed_precision, cpu=not cuda).describe()
        if not cuda and t.mixed_precision == "bf16" and not cpu_bf16_flags()[0]:
            report.warnings.append(
                f"training.mixed_precision: bf16 on this CPU is emulated and very slow ({cpu_bf16_flags()[1]}); "
                "'auto' picks fp32 here"
            )
    if not cuda and config.model.dtype in ("bfloat16", "float16"):
        report.warnings.append(
            f"model.dtype: {config.model.dtype} on CPU is very slow on most CPUs and trains without fp32 master "
            "weights; 'auto' uses float32 here (training.mixed_precision picks bf16 autocast where it is faster)"
        )
    if config.model.attn_implementation == "flash_attention_2" and not cuda:
        report.errors.append("model.attn_implementation: flash_attention_2 needs CUDA; use sdpa")
    for tracker in t.trackers:
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}[tracker]
        if importlib.util.find_spec(module) is None:
            report.errors.append(
                f"training.trackers: '{tracker}' is not installed; pip install {module} "
                "(or pip install 'tuneforge[track]' for TensorBoard)"
            )
    if config.adapter is None and config.training.learning_rate > 1e-3:
        report.warnings.append(
            f"training.learning_rate {config.training.learning_rate} is high for full fine-tuning (usual: 1e-5 … 1e-4)"
        )


def _read_model_config(config, report: CheckReport):
    """The model's config.json (no weights), or None with the reason added to the errors."""
    from transformers import AutoConfig

    from .models.load import ModelNotFoundError, resolve_model

    try:
        return AutoConfig.from_pretrained(
            resolve_model(config.model.name), trust_remote_code=config.model.trust_remote_code
        )
    except ModelNotFoundError as exc:  # its message names the key, and the step that writes a missing run folder
        report.errors.append(str(exc))
        return None
    except (OSError, ValueError) as exc:
        report.errors.append(f"model.name: cannot read the model's config: {exc}")
        return None


def _check_model_limits(config, tokenizer, model_config, report: CheckReport) -> None:
    """Limits in the model's config worth checking up front."""
    limit = getattr(model_config, "max_position_embeddings", None)
    max_length = getattr(config.data, "max_length", None)
    if limit and max_length and max_length > limit:
        report.errors.append(f"data.max_length: {max_length} exceeds the model's context of {limit} tokens")
    vocab = getattr(model_config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        report.errors.append(f"model: the tokenizer has {len(tokenizer)} tokens but the model only {vocab} embeddings")
    _check_packed_attention(config, model_config, report)


def _check_packed_attention(config, model_config, report: CheckReport) -> None:
    """model.packed_attention against the model (models/segment_attention.py)."""
    from .models.segment_attention import unsupported_reason

    setting = config.model.packed_attention
    if setting == "segments" and getattr(config.data, "packing", False):
        reason = unsupported_reason(model_config)
        if reason:
            report.errors.append(
                f"model.packed_attention: segments cannot stand in for this model's attention: "
                f"{reason}; use auto (the mask for this model) or mask"
            )
    if setting == "mask" and config.model.attn_implementation == "flash_attention_2":
        report.warnings.append(
            "model.packed_attention: mask does not apply to flash_attention_2, which always "
            "gets the packed rows' boundaries (its mask path would let them attend to each other)"
        )


def _check_plan(config, report: CheckReport) -> None:
    """Warn when the resource plan (planning/) says the run needs more memory than is free."""
    from .planning import plan_warning

    warning = plan_warning(config, report.facts)  # never raises; None when it fits or cannot be planned
    if warning and not warning.startswith("resource plan unavailable"):
        report.warnings.append(warning)


def _paths(value) -> list[str]:
    """The source strings of a ``train`` / ``eval`` value: a path, a list of them, or mixture sources."""
    out: list[str] = []
    for item in [value] if isinstance(value, str) else value or []:
        if isinstance(item, str):
            out.append(item)
        else:  # a mixture's source: its path(s) and its own held-out file(s)
            for part in (item.path, item.eval):
                out.extend([part] if isinstance(part, str) else part or [])
    return out

"""Everything `tuneforge validate` checks, without loading model weights.

Schema problems are caught earlier, by `config.load_config`. Here: the data
(every row), the chat template on real rendered samples, and whether the
method, model and options fit together. `tuneforge train` runs the same checks
before it reads a single weight.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch


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


def check_config(config, *, tokenizer) -> CheckReport:
    from .data import validate_data

    report = CheckReport()
    _check_options(config, report)
    data_report = validate_data(config.data, tokenizer)
    report.errors.extend(data_report.problems)
    report.warnings.extend(data_report.warnings)
    report.facts.update({
        "rows": data_report.rows,
        "examples": data_report.examples,
        "tokens": data_report.tokens,
        "loss_tokens": data_report.loss_tokens,
        "loss_fraction": round(data_report.loss_fraction, 4),
        "truncated": data_report.truncated,
    })
    if data_report.tokens and data_report.loss_tokens == 0:
        report.errors.append("data: no token carries a loss; check data.format and data.completion_only_loss")
    _check_model_limits(config, tokenizer, report)
    return report


def _check_options(config, report: CheckReport) -> None:
    cuda = torch.cuda.is_available()
    t = config.training
    if not cuda and t.mixed_precision in ("bf16", "fp16"):
        report.errors.append(
            f"training.mixed_precision: '{t.mixed_precision}' needs a CUDA GPU and none is visible; "
            "use 'auto' (fp32 on CPU)"
        )
    if not cuda and config.model.dtype in ("bfloat16", "float16"):
        report.warnings.append(
            f"model.dtype: {config.model.dtype} on CPU is very slow on most CPUs; 'auto' uses float32 here"
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
    if config.eval is not None:
        from .eval.scorers import resolve_scorer

        for spec in config.eval.scorers:
            try:
                resolve_scorer(spec)
            except (ValueError, ImportError, AttributeError, FileNotFoundError) as exc:
                report.errors.append(f"eval.scorers: {exc}")
        if config.data.eval is None and config.data.eval_fraction == 0 and not (
            config.data.format == "natural_instructions"
        ):
            report.errors.append(
                "eval: needs held-out data; set data.eval to a file or data.eval_fraction (e.g. 0.1)"
            )
    if config.adapter is None and config.training.learning_rate > 1e-3:
        report.warnings.append(
            f"training.learning_rate {config.training.learning_rate} is high for full fine-tuning "
            "(usual: 1e-5 … 1e-4)"
        )


def _check_model_limits(config, tokenizer, report: CheckReport) -> None:
    """Read the model's config.json (no weights) for limits worth checking up front."""
    from transformers import AutoConfig

    from .models.load import resolve_model

    try:
        model_config = AutoConfig.from_pretrained(resolve_model(config.model.name),
                                                  trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        report.errors.append(f"model.name: cannot read the model's config: {exc}")
        return
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit and config.data.max_length > limit:
        report.errors.append(
            f"data.max_length: {config.data.max_length} exceeds the model's context of {limit} tokens"
        )
    vocab = getattr(model_config, "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        report.errors.append(
            f"model: the tokenizer has {len(tokenizer)} tokens but the model only {vocab} embeddings"
        )
    report.facts["model_type"] = getattr(model_config, "model_type", "?")

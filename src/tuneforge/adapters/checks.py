"""What `validate` checks about the `adapter:` section and `model.quantize`, without weights.

Combinations are checked by rule first (each message says why it can't work),
then the adapter is attached to the model built on the meta device from its
config alone: that finds target modules that don't exist, a BitFit on a model
without biases, an OFT block size that doesn't divide a layer, and gives the
exact trainable-parameter count before any weight is read.
"""

from __future__ import annotations

import warnings

import torch

from . import config as C


def check_adapter(config, method, model_config) -> tuple[list[str], list[str], dict]:
    errors: list[str] = []
    notes: list[str] = []
    facts: dict = {}
    adapter, quantize = config.adapter, config.model.quantize
    causal = method.peft_task_type == "CAUSAL_LM"
    if quantize:
        if adapter is None:
            errors.append(
                f"model.quantize: {quantize} loads frozen quantized weights, which full fine-tuning "
                "cannot train; add an adapter (e.g. adapter: {type: lora}) — that is QLoRA"
            )
        elif adapter.type in C.SELECTIVE:
            errors.append(
                f"model.quantize: adapter.type {adapter.type} trains the base's own weights, which are "
                "quantized and frozen; use lora / layernorm / ia3, or drop model.quantize"
            )
        if not causal:
            errors.append(
                f"model.quantize: supported for the causal-LM methods (cpt, sft, dpo, ppo); not yet "
                f"for method '{config.method}'"
            )
        if adapter is not None and adapter.type == "lora" and adapter.init in ("pissa", "olora"):
            errors.append(
                f"adapter.init: {adapter.init} rewrites the base weights from their SVD / QR, which "
                "a quantized base doesn't allow; drop model.quantize or use init: default"
            )
    if adapter is None:
        return errors, notes, facts
    if adapter.type in C.SOFT_PROMPTS:
        if not causal:
            errors.append(
                f"adapter.type: {adapter.type} (virtual tokens) is supported for the causal-LM methods; "
                f"method '{config.method}' pools or classifies over the input positions, which the virtual "
                "tokens would shift; use lora, ia3 or bottleneck"
            )
        if getattr(config.data, "packing", False):
            errors.append(
                f"adapter.type: {adapter.type} prepends its virtual tokens once per row, and packing puts "
                "several examples in one row, so every example after the first would not see them; "
                "set data.packing: false"
            )
    if adapter.type == "lora" and adapter.init in ("pissa", "olora"):
        # peft converts these to plain LoRA at save time and keeps only the A / B matrices,
        # so a DoRA magnitude or a classification head would be lost from the saved adapter.
        if adapter.use_dora:
            errors.append(
                f"adapter.init: {adapter.init} with use_dora: peft's conversion at save time keeps only "
                "the LoRA matrices and would drop DoRA's magnitudes; use one or the other"
            )
        if method.peft_task_type == "SEQ_CLS":
            errors.append(
                f"adapter.init: {adapter.init} for classify: peft's conversion at save time would drop "
                "the trained label head; use init: default"
            )
    if adapter.type == "adalora" and not causal:
        errors.append(
            f"adapter.type: adalora is supported for the causal-LM methods; method '{config.method}' "
            "computes its "
            "loss outside peft, where AdaLoRA's orthogonality term would be missing; use lora"
        )
    if errors:
        return errors, notes, facts
    try:
        trainable, total = dry_run_counts(config, method, model_config)
    except (ValueError, TypeError, RuntimeError, KeyError, AttributeError) as exc:
        errors.append(f"adapter: {exc}".replace("adapter: adapter", "adapter"))
        return errors, notes, facts
    facts.update(
        {
            "trainable_parameters": trainable,
            "total_parameters": total,
            "trainable_percent": round(100 * trainable / max(total, 1), 4),
        }
    )
    facts["adapter"] = (
        f"{adapter.type}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / max(total, 1):.4f}%)"
    )
    return errors, notes, facts


def meta_model(model_config, task_type: str, num_labels: int = 2) -> torch.nn.Module:
    """The model's architecture on the meta device: shapes without memory or weights."""
    import transformers

    cls = {
        "CAUSAL_LM": transformers.AutoModelForCausalLM,
        "SEQ_CLS": transformers.AutoModelForSequenceClassification,
        "FEATURE_EXTRACTION": transformers.AutoModel,
    }[task_type]
    if task_type == "SEQ_CLS":
        model_config = type(model_config).from_dict({**model_config.to_dict(), "num_labels": num_labels})
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_config(model_config)


def dry_run_counts(config, method, model_config) -> tuple[int, int]:
    """(trainable, total) parameters of the adapted model, counted on the meta device."""
    from ..models.load import count_parameters
    from . import attach_adapter

    # A method with a fixed head size says so (PlanProfile.head_outputs; reward: 1); classify's label count is in
    # its data (2 assumed here).
    model = meta_model(model_config, method.peft_task_type, method.plan_profile(config).head_outputs or 2)
    cfg = config.adapter
    if cfg.type == "lora" and cfg.init != "default":
        # PiSSA / OLoRA / LoftQ decompose real weights at attach time; the count doesn't depend on the init.
        cfg = cfg.model_copy(update={"init": "default"})
    if cfg.type == "prompt_tuning" and cfg.init == "text":
        cfg = cfg.model_copy(update={"init": "random", "init_text": None})
    adapted = attach_adapter(model, cfg, task_type=method.peft_task_type, total_steps=1_000_000)
    return count_parameters(adapted.model)

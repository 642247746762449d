"""What a continual config is refused for before anything loads (`validate` and `train` alike)."""

from __future__ import annotations

from pathlib import Path

from ..config.continual import ContinualConfig


class ContinualRefused(ValueError):
    """A continual setup that cannot work as asked; the message names the key and the fix."""


def continual_problems(config, method) -> list[str]:
    """Every reason this continual config cannot run, each naming the key and the fix."""
    from ..registry import get_method, method_names

    if not method.continual:
        able = ", ".join(n for n in method_names() if get_method(n).continual)
        return [
            f"stages: method {config.method} cannot be trained in continual stages (its training step or "
            f"its model does not carry over from stage to stage); methods that can: {able}"
        ]
    settings = config.continual or ContinualConfig()
    problems = list(method.stage_problems(config))
    adapter = config.adapter
    if settings.strategy == "adapter":
        if adapter is None or adapter.type != "lora":
            problems.append(
                "continual.strategy adapter: needs adapter: {type: lora, ...} (one LoRA per stage; "
                "O-LoRA's penalty is defined on LoRA's A matrices)"
            )
        elif config.model.quantize:
            problems.append(
                "continual.strategy adapter: not with model.quantize (stage adapters are merged in "
                "full precision); leave model.quantize out"
            )
    if config.training.early_stopping is not None:
        problems.append(
            "training.early_stopping: not in continual runs (every stage trains its own steps); leave it out"
        )
    if adapter is not None and adapter.type == "adalora":
        problems.append(
            "adapter.type adalora: its rank schedule spans one run's steps, not a sequence of stages; use lora"
        )
    if settings.general_text and not method.causal_lm_output:
        problems.append(
            f"continual.general_text: perplexity needs a method whose output is a causal LM, not {config.method}"
        )
    if settings.general_text and not Path(settings.general_text).exists():
        problems.append(f"continual.general_text: no file at {settings.general_text}")
    if settings.strategy != "adapter" and settings.adapter.merge:
        problems.append("continual.adapter.merge: only with continual.strategy adapter")
    return problems

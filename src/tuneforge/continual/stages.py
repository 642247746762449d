"""From one continual config to one ordinary run config per stage.

A stage's config is the top-level config with the stage's ``data`` keys laid over ``data:`` and its
``training`` overrides over ``training:``; ``stages`` / ``continual`` are dropped, so each stage
config is exactly what a one-stage run of the same method would get (the method's own checks,
data loading and evaluation run on it unchanged).
"""

from __future__ import annotations

from ..config.schema import stage_data  # config validation needs it too, so it lives there


def stage_config(config, index: int):
    """The run config of stage ``index`` (0-based): what a plain run on that stage's data would use."""
    stage = config.stages[index]
    overrides = stage.training.model_dump(exclude_none=True)
    training = config.training.model_copy(update=overrides) if overrides else config.training
    if "warmup_steps" not in overrides and "warmup_ratio" in overrides:
        training = training.model_copy(update={"warmup_steps": None})
    return config.model_copy(
        update={
            "data": stage_data(config, index),
            "training": training,
            "stages": None,
            "continual": None,
            "name": stage.name,
        }
    )


def stage_names(config) -> list[str]:
    return [stage.name for stage in config.stages]

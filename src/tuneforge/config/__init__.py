"""Validated run configs: ``load_config(path, overrides)`` → a CptConfig / SftConfig."""

from .loader import ConfigError, dump_config, load_config, parse_overrides, validate_dict
from .schema import (
    METHODS,
    CptConfig,
    DataConfig,
    EvalConfig,
    LoraConfig,
    ModelConfig,
    RunConfig,
    SftConfig,
    TrainingConfig,
)

__all__ = [
    "METHODS", "ConfigError", "CptConfig", "DataConfig", "EvalConfig", "LoraConfig", "ModelConfig",
    "RunConfig", "SftConfig", "TrainingConfig", "dump_config", "load_config", "parse_overrides",
    "validate_dict",
]

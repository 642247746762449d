"""Validated run configs: ``load_config(path, overrides)`` → the method's config object.

The shared sections are here (``schema.py``); each method's run config class is
in its folder under ``methods/`` and is found through ``registry.py``.
"""

from ..adapters.config import LoraConfig
from .loader import ConfigError, dump_config, load_config, parse_overrides, validate_dict
from .schema import DataConfig, EvalConfig, ModelConfig, RunBase, TrainingConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "RunBase",
    "TrainingConfig",
    "dump_config",
    "load_config",
    "parse_overrides",
    "validate_dict",
]

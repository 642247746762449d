"""The one place that maps a ``method:`` value to its config class and its recipe.

Config classes are imported eagerly (they are light pydantic classes, needed to
validate any config); recipes lazily, by module path, so `tuneforge validate`
never imports a method's model code. Adding a method: a folder under
``methods/`` with ``config.py`` and ``recipe.py`` (``METHOD = ...``), and one
line in each dict below. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib

from .methods.classify.config import ClassifyConfig
from .methods.contrastive.config import ContrastiveConfig
from .methods.cpt.config import CptConfig
from .methods.dpo.config import DpoConfig
from .methods.ppo.config import PpoConfig
from .methods.reward.config import RewardConfig
from .methods.sft.config import SftConfig

_CONFIGS: dict[str, type] = {
    "cpt": CptConfig,
    "sft": SftConfig,
    "classify": ClassifyConfig,
    "contrastive": ContrastiveConfig,
    "dpo": DpoConfig,
    "reward": RewardConfig,
    "ppo": PpoConfig,
}
_RECIPES: dict[str, str] = {
    "cpt": "tuneforge.methods.cpt.recipe",
    "sft": "tuneforge.methods.sft.recipe",
    "classify": "tuneforge.methods.classify.recipe",
    "contrastive": "tuneforge.methods.contrastive.recipe",
    "dpo": "tuneforge.methods.dpo.recipe",
    "reward": "tuneforge.methods.reward.recipe",
    "ppo": "tuneforge.methods.ppo.recipe",
}
_REGISTERED: dict[str, object] = {}  # methods registered at run time (plug-ins, tests)


def method_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys([*_CONFIGS, *_REGISTERED]))


def config_class(name: str) -> type:
    if name in _REGISTERED:
        return _REGISTERED[name].config_class
    return _CONFIGS[name]


def get_method(name: str):
    """The method object (see ``interface.py``) for a ``method:`` value."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _RECIPES:
        raise KeyError(f"unknown method '{name}'; known: {', '.join(method_names())}")
    return importlib.import_module(_RECIPES[name]).METHOD


def register_method(method) -> None:
    """Make a method defined outside this package known (its ``name`` and ``config_class``).

    The built-in methods are listed above instead; this is for plug-ins and tests.
    """
    from .interface import Method

    if method.name in _CONFIGS:
        raise ValueError(f"method '{method.name}' is built in and cannot be replaced")
    if Method not in type(method).__mro__:
        raise TypeError(
            f"method '{method.name}': its class must subclass tuneforge.interface.Method "
            f"(that gives it the optional members' defaults)"
        )
    _REGISTERED[method.name] = method


def unregister_method(name: str) -> None:
    _REGISTERED.pop(name, None)

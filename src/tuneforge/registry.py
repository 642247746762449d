"""The one place that maps a ``method:`` value to its config class and its recipe.

Config classes are imported eagerly (they are light pydantic classes, needed to
validate any config); recipes lazily, by module path, so `tuneforge validate`
never imports a method's model code. Adding a method: a folder under
``methods/`` with ``config.py`` and ``recipe.py`` (``METHOD = ...``), and one
line in each dict below. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
# Commands a method adds to `tuneforge` (predict, score, embed): a module whose ``add_parser(sub)``
# adds them. Imported whenever the parser is built, so such a module imports torch only inside its
# command functions (`validate --schema-only` stays torch-free).
_COMMANDS: dict[str, str] = {
    "classify": "tuneforge.methods.classify.cli",
    "reward": "tuneforge.methods.reward.cli",
    "contrastive": "tuneforge.methods.contrastive.cli",
}
_REGISTERED: dict[str, object] = {}  # methods registered at run time (plug-ins, tests)
_REGISTERED_COMMANDS: dict[str, str] = {}


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


def text_scoring_method(data_format: str):
    """The method whose loss scores held-out rows of ``data_format`` by next-token loss (`tuneforge eval`):
    cpt for raw text, sft for prompts and completions (only completion tokens carry the loss)."""
    return get_method("cpt" if data_format == "text" else "sft")


def add_method_commands(sub) -> None:
    """Add each method's own commands to the `tuneforge` subparsers ``sub`` (``_COMMANDS``, then plug-ins')."""
    for module in [*_COMMANDS.values(), *_REGISTERED_COMMANDS.values()]:
        importlib.import_module(module).add_parser(sub)


def inference_loader_for(adapter_folder: Path) -> Callable[..., Any]:
    """How to load the base under an adapter folder (`eval`, `generate`, `merge`, `adapters combine`): the loader
    of the first method that claims the folder (``Method.inference_loader``), else
    ``models.load.load_causal_lm``. Every method is asked, plug-ins included (their recipes are imported).
    A loader is called as ``loader(name, *, trust_remote_code=False) -> model``."""
    for name in method_names():
        loader = get_method(name).inference_loader(Path(adapter_folder))
        if loader is not None:
            return loader
    from .models.load import load_causal_lm

    return load_causal_lm


def register_method(method, *, commands: str | None = None) -> None:
    """Make a method defined outside this package known (its ``name`` and ``config_class``).

    ``commands``: the module path of its own `tuneforge` commands (an ``add_parser(sub)`` function, as in
    ``_COMMANDS``). The built-in methods are listed above instead; this is for plug-ins and tests.
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
    if commands is not None:
        _REGISTERED_COMMANDS[method.name] = commands


def unregister_method(name: str) -> None:
    _REGISTERED.pop(name, None)
    _REGISTERED_COMMANDS.pop(name, None)

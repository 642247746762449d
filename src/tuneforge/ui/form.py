"""The new-run form, generated from the config schema: one field per key, with its default,
description and choices. Torch-free: the page asks for it before anything heavy is imported.

A field is ``{"key": "training.learning_rate", "kind": "number", "default": 0.0002,
"description": "...", "choices": [...], "required": bool}``; kinds: ``choice`` (a Literal),
``bool``, ``int``, ``number``, ``text`` and ``yaml`` (lists, dicts and unions of those, typed
as a YAML value). The adapter section is a tagged union: ``adapters`` holds each type's fields,
and the page swaps them when ``adapter.type`` changes.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# Sections the form leaves to the YAML editor: a list of whole configs, or settings only they use.
YAML_ONLY = ("stages", "continual")


def _plain(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return annotation, False


def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _kind(annotation: Any) -> tuple[str, list | None]:
    if typing.get_origin(annotation) is Literal:
        return "choice", list(typing.get_args(annotation))
    if annotation is bool:
        return "bool", None
    if annotation is int:
        return "int", None
    if annotation is float:
        return "number", None
    if annotation is str:
        return "text", None
    return "yaml", None


def _default(info) -> Any:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        return None
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def fields_of(model: type[BaseModel], prefix: str = "") -> list[dict]:
    """Every leaf key of ``model`` (nested sections flattened to dotted keys), in schema order."""
    out: list[dict] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if not prefix and name in YAML_ONLY:
            continue
        annotation, optional = _plain(info.annotation)
        if typing.get_origin(annotation) is typing.Annotated or key == "adapter":
            continue  # the adapter union: adapter_fields()
        section = _section(annotation)
        if section is not None:
            out.extend(fields_of(section, key + "."))
            continue
        kind, choices = _kind(annotation)
        if kind == "choice" and optional:
            choices = [None, *(choices or [])]
        out.append(
            {
                "key": key,
                "kind": kind,
                "choices": choices,
                "default": _default(info),
                "description": info.description or "",
                "required": info.is_required(),
                "optional": optional,
            }
        )
    return out


def adapter_fields() -> dict[str, list[dict]]:
    """Each adapter type's keys (``adapter.r`` …), without ``type`` itself."""
    from ..adapters.config import ADAPTER_TYPES, adapter_class

    return {
        name: [f for f in fields_of(adapter_class(name), "adapter.") if f["key"] != "adapter.type"]
        for name in ADAPTER_TYPES
    }


def form_spec() -> dict:
    """What the page builds the form from: every method's fields and the adapter types'."""
    from ..registry import config_class, method_names

    return {"methods": {name: fields_of(config_class(name)) for name in method_names()}, "adapters": adapter_fields()}

"""YAML → validated config object, with `a.b=c` overrides and friendly errors."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(Exception):
    """A config problem, already phrased for the user (file, key, what to write instead)."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["training.learning_rate=1e-4", "adapter=null"]`` into a nested dict.

    Values are parsed as YAML scalars/flow collections, so ``1e-4``, ``true``,
    ``[q_proj, v_proj]`` and ``null`` mean what they would in the file.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"override '{item}' must look like key.subkey=value"], "command line")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError([f"override '{item}' has an empty key"], "command line")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(
                [f"override '{item}': the value is not valid YAML ({problem}); quote it, e.g. {dotted}='\"…\"'"],
                "command line",
            ) from None
        value = _normalise_floats(value)
        cursor = nested
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
            if not isinstance(cursor, dict):
                raise ConfigError([f"override '{item}' conflicts with another override"], "command line")
        cursor[keys[-1]] = value
    return nested


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"file not found: {path}. Check the path, or copy one from configs/."], str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"],
            str(path),
        ) from None
    try:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(["the top level must be a mapping of keys (method:, model:, data:, …)"], str(path))
        return _normalise_floats(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"not valid YAML: {getattr(exc, 'problem', None) or exc}"], where) from None
    except RecursionError:  # thousands of nested brackets, or an alias that contains itself (a: &a [*a])
        raise ConfigError(["nested too deeply (or a YAML alias that contains itself)"], str(path)) from None


_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _normalise_floats(node: Any) -> Any:
    """YAML 1.1 reads `2e-4` (no dot) as a string; users mean a number."""
    if isinstance(node, dict):
        return {k: _normalise_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_normalise_floats(v) for v in node]
    if isinstance(node, str) and _SCIENTIFIC.match(node.strip()):
        return float(node)
    return node


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, data: dict | None = None):
    """Read, merge overrides and validate. Raises ConfigError with every problem found."""
    source = str(path) if path is not None else "config"
    raw = read_yaml(path) if path is not None else dict(data or {})
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    return validate_dict(raw, source)


def validate_dict(raw: dict, source: str = "config"):
    """Validate against the config class the registry gives for ``raw["method"]``."""
    from ..registry import config_class, method_names

    names = method_names()
    method = raw.get("method")
    if method is None:
        raise ConfigError([f"missing key 'method': one of {', '.join(names)}"], source)
    if method not in names:
        raise ConfigError(
            [f"method: unknown method '{method}'{_suggest(str(method), names)}; choose one of {', '.join(names)}"],
            source,
        )
    model_cls = config_class(method)
    try:
        return model_cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, model_cls), source) from None


def _explain(exc: ValidationError, model_cls: type[BaseModel]) -> list[str]:
    from ..adapters.config import ADAPTER_TYPES, adapter_class

    problems = []
    union_keys: dict[str, list[str]] = {}  # key → what each member of a plain union wanted
    for err in exc.errors():
        loc = list(err["loc"])
        # A plain union (e.g. list[str] | 'all-linear') puts each member's name in the path
        # and gives one error per member: fold them into one line per key.
        member = next((p for p in loc[1:] if isinstance(p, str) and ("[" in p or p.startswith("literal"))), None)
        if member is not None:
            key = ".".join(str(p) for p in loc[: loc.index(member)] if not (p in ADAPTER_TYPES and loc[0] == "adapter"))
            union_keys.setdefault(key, []).append(_member_name(member))
            continue
        adapter_cls = None
        # The adapter section is a tagged union: pydantic puts the tag in the path (adapter.ia3.rr).
        if len(loc) > 1 and loc[0] == "adapter" and loc[1] in ADAPTER_TYPES:
            adapter_cls = adapter_class(loc.pop(1))
        key = ".".join(str(p) for p in loc)
        if err["type"] == "union_tag_not_found" and loc == ["adapter"]:
            problems.append(f"adapter.type: missing or empty; choose one of {', '.join(ADAPTER_TYPES)}")
            continue
        if err["type"] == "union_tag_invalid" and loc == ["adapter"]:
            tag = str(err.get("ctx", {}).get("tag", ""))
            problems.append(
                f"adapter.type: unknown adapter type '{tag}'{_suggest(tag, ADAPTER_TYPES)}; "
                f"choose one of {', '.join(ADAPTER_TYPES)}"
            )
            continue
        if err["type"] == "extra_forbidden":
            parent_cls = adapter_cls if adapter_cls and len(loc) == 2 else _section_class(model_cls, loc[:-1])
            valid = sorted(parent_cls.model_fields) if parent_cls else []
            hint = _suggest(str(loc[-1]), valid)
            valid_text = f" Valid keys here: {', '.join(valid)}." if valid and not hint else ""
            problems.append(f"{key}: unknown key{hint}.{valid_text}")
        elif err["type"] == "missing":
            problems.append(f"{key}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = f" (got {value!r})" if not isinstance(value, (dict, list)) and key else ""
            problems.append(f"{key}: {msg}{shown}" if key else msg)
    for key, members in union_keys.items():
        problems.append(f"{key}: expected {' or '.join(dict.fromkeys(members))}")
    return problems


def _member_name(member: str) -> str:
    """pydantic's name for a union member, as a user would say it: "a list", "'all-linear'"."""
    if member.startswith("literal[") and member.endswith("]"):
        return member[len("literal[") : -1]
    if member.startswith("list["):
        return "a list (e.g. [q_proj, v_proj])"
    return member


def _section_class(model_cls: type[BaseModel], path: list) -> type[BaseModel] | None:
    """Follow a location path through nested pydantic models to the section class."""
    import typing

    current: type[BaseModel] | None = model_cls
    for part in path:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return current if isinstance(part, int) else None
        annotation = current.model_fields[part].annotation
        current = None
        for candidate in (annotation, *typing.get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
    return current


def _suggest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def dump_config(config) -> str:
    """The resolved config as YAML (every default spelled out) for the run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

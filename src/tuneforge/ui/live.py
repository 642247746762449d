"""What the page shows while a config is edited: `validate`'s findings placed at their keys, and
`plan`'s numbers. Both are the CLI's own functions (config.validate_dict, checks.check_config,
planning.build_plan); nothing here decides what is valid.

``check(raw, roots)`` → ``{"errors": [{"key", "message"}], "warnings": [...], "facts": {...},
"plan": {...} | None, "stage": "schema" | "checks" | "plan"}``. A message whose first word is a
config key (``training.learning_rat: unknown key (did you mean …)``, ``data.train: …``) is placed
at that key; a ``file:line`` data problem at ``data.train``; anything else at the top (key "").
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import yaml

from .paths import PathRefused, outside_roots

_LOCK = threading.Lock()  # one check at a time: tokenizer and data caches are shared
_REQUESTED = 0  # full checks asked for so far: a check still queued behind a newer one is skipped
_KEY = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w\[\]]+)*):\s")


def place(message: str, keys: set[str]) -> dict:
    """``{"key", "message"}``: the dotted key a message names first, or the data key for a row problem."""
    match = _KEY.match(message)
    if match:
        key = re.sub(r"\[\d+\]", "", match.group(1))
        parts = key.split(".")
        meant = re.search(r"did you mean `([^`]+)`", message)
        if meant and ".".join([*parts[:-1], meant.group(1)]) in keys:
            return {"key": ".".join([*parts[:-1], meant.group(1)]), "message": message}
        # the deepest known key the message names (adapter.r, data.train, or a section)
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in keys or any(k.startswith(candidate + ".") for k in keys):
                return {"key": candidate, "message": message}
        return {"key": key, "message": message}
    if re.match(r"^\S+\.(jsonl|json|csv|parquet|txt)(:\d+)?:", message):
        return {"key": "data.train", "message": message}
    return {"key": "", "message": message}


def parse_yaml(text: str) -> dict:
    """The YAML the user typed, as a dict; a ValueError with the parser's line on bad YAML."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(
            f"not valid YAML: {str(exc).splitlines()[0]} {getattr(exc, 'problem_mark', '') or ''}"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError("the config must be a mapping of keys (method:, model:, data: …)")
    return raw


def to_yaml(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def _path_problems(raw: dict, roots: list[Path], base: Path) -> list[dict]:
    """Files the config names that lie outside the folders this page may read."""
    found = []
    data: dict = raw["data"] if isinstance(raw.get("data"), dict) else {}
    model: dict = raw["model"] if isinstance(raw.get("model"), dict) else {}
    named = {"data.train": data.get("train"), "data.eval": data.get("eval"), "model.name": model.get("name")}
    for key, value in named.items():
        for item in value if isinstance(value, list) else [value]:
            path = item.get("path") if isinstance(item, dict) else item
            if isinstance(path, str) and outside_roots(path, roots, base):
                found.append({"key": key, "message": f"{key}: {path} is outside the folders this page may read"})
    return found


def check(raw: dict, roots: list[Path], base: Path, *, full: bool = True) -> dict:
    """Schema, then (``full``) the data / template / model checks and the plan, as `validate` and `plan`."""
    from ..config import ConfigError, validate_dict
    from .form import form_spec

    method = raw.get("method")
    spec = form_spec()
    keys = {f["key"] for f in spec["methods"].get(method, [])} | {"method", "adapter.type"}
    keys |= {f["key"] for fields in spec["adapters"].values() for f in fields}
    result: dict = {"errors": [], "warnings": [], "facts": {}, "plan": None, "stage": "schema"}
    result["errors"] = _path_problems(raw, roots, base)
    try:
        config = validate_dict(raw)
    except ConfigError as exc:
        result["errors"] += [place(p, keys) for p in exc.problems]
        return result
    if result["errors"] or not full:
        return result
    from ..checks import check_files

    # Missing files and a taken run folder first, torch-free: no tokenizer is loaded for a config that cannot run.
    result["errors"] = [place(p, keys) for p in check_files(config).errors]
    if result["errors"]:
        return result
    result["stage"] = "checks"
    global _REQUESTED
    _REQUESTED += 1
    mine = _REQUESTED
    with _LOCK:
        if mine != _REQUESTED:  # a newer edit is waiting: this one's answer would be thrown away
            return {**result, "stale": True}
        try:
            report = _checks(config)
        except Exception as exc:  # a missing model, unreadable data: one line at its key
            result["errors"].append(place(_one_line(exc), keys))
            return result
        result["errors"] += [place(p, keys) for p in report.errors]
        result["warnings"] = report.warnings
        result["facts"] = {k: str(v) for k, v in report.facts.items()}
        if report.errors:
            return result
        result["stage"] = "plan"
        result["plan"] = _plan(config)
    return result


def _one_line(exc: Exception) -> str:
    problems = getattr(exc, "problems", None) or getattr(exc, "errors", None)
    if isinstance(problems, list) and problems:
        return str(problems[0])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _checks(config):
    from ..checks import check_config
    from ..models.load import load_tokenizer

    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    return check_config(config, tokenizer=tokenizer)


def _plan(config) -> dict:
    """The plan's numbers for the page (planning.Plan.summary plus the parameter counts)."""
    from ..planning import safe_plan

    plan, problem = safe_plan(config)
    if plan is None:
        return {"error": problem}
    summary = plan.summary()
    return {
        "device": plan.device,
        "precision": plan.precision,
        "memory_mb": summary["memory_mb"],
        "peak_memory_mb": summary["peak_memory_mb"],
        "free_memory_mb": summary["free_memory_mb"],
        "fits": plan.fits,
        "step_seconds": plan.step_seconds,
        "run_seconds": plan.run_seconds,
        "steps": plan.step.steps,
        "tokens_per_step": summary["tokens_per_step"],
        "data": plan.step.source,
        "notes": plan.notes,
    }


__all__ = ["PathRefused", "check", "outside_roots", "parse_yaml", "place", "to_yaml"]

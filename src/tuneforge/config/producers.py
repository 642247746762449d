"""Which command makes a missing folder that a config names as its input.

Configs that chain runs (``configs/sentiment_control/``: SFT → merge → reward,
DPO, PPO) name folders under ``runs/`` that only an earlier step writes. On a
fresh checkout those folders do not exist, and "not a model folder" would send
the user looking for a typo. Instead :func:`missing_output_hint` reads the run
configs under ``configs/`` (from the working directory, where config paths are
resolved) and names the step that writes the folder:

- the folder is a config's run folder, ``output_dir/name`` (``name`` defaults
  to the config file's stem, as in ``runner.resolve_run_dir``), or a folder
  inside it → ``tuneforge train CONFIG``;
- the folder is that run folder's name plus ``-merged`` beside it and the
  config trains an adapter → ``tuneforge train CONFIG`` then ``tuneforge merge
  RUN --output FOLDER`` (``merge`` takes its output on the command line, so
  ``-merged`` is the naming convention the shipped chain uses, not a record);
- otherwise, a folder under a ``runs/`` folder is still the output of some run,
  and the hint says so without naming one.

Only the YAML is read (no validation): a config with its own problems still
says which folder it writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

CONFIGS_FOLDER = "configs"
MERGED_SUFFIX = "-merged"


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute against the working directory, ``..`` folded, symlinks left alone."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _shown(path: Path) -> str:
    """``path`` as the user would type it from the working directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _run_configs(root: Path):
    """(config file, run folder, trains an adapter) for each run config under ``root``, in path order."""
    from .schema import RunBase

    default_output_dir = RunBase.model_fields["output_dir"].default
    for path in sorted(root.rglob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(raw, dict) or "method" not in raw:  # e.g. configs/accelerate/: launch setups
            continue
        name = raw.get("name") or path.stem
        run_dir = _absolute(Path(str(raw.get("output_dir") or default_output_dir)) / str(name))
        yield path, run_dir, bool(raw.get("adapter"))


def producing_commands(path: str | Path) -> list[str]:
    """The commands, in order, that write ``path`` according to a config under ``configs/``; [] if none does.

    When several configs write it, the first in path order is named.
    """
    target = _absolute(path)
    root = Path.cwd() / CONFIGS_FOLDER
    if not root.is_dir():
        return []
    for config_path, run_dir, has_adapter in _run_configs(root):
        train = f"tuneforge train {_shown(config_path)}"
        if target == run_dir or run_dir in target.parents:
            return [train]
        if has_adapter and target.parent == run_dir.parent and target.name == run_dir.name + MERGED_SUFFIX:
            return [train, f"tuneforge merge {_shown(run_dir)} --output {_shown(target)}"]
    return []


def missing_output_hint(path: str | Path) -> str | None:
    """A clause for an error about the missing ``path``: the commands that write it, or None if none is known."""
    commands = producing_commands(path)
    if commands:
        steps = " and ".join(f"`{c}`" for c in commands)
        return f"it is written by an earlier step: run {steps} first"
    if "runs" in Path(path).parts[:-1]:
        return (
            "it is under a runs/ folder, so an earlier run (or `tuneforge merge`) writes it, and no config "
            f"under {CONFIGS_FOLDER}/ names it as its output; run that step first, or fix the path"
        )
    return None

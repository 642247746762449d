"""The run folder: where a run writes, never over an earlier run; small atomic file helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class RunFolderExists(Exception):
    pass


@dataclass
class RunResult:
    run_dir: Path
    output_dir: Path
    summary: dict
    model: object = None  # the trained model (plain or peft), for callers in the same process


def run_name(config, config_path: str | Path | None, fallback: str) -> str:
    return config.name or (Path(config_path).stem if config_path else fallback)


def resolve_run_dir(config, config_path: str | Path | None, *, resume: bool) -> Path:
    """``output_dir / name``: must be new (or empty), or, with ``resume``, hold a checkpoint."""
    name = run_name(config, config_path, config.method)
    run_dir = Path(config.output_dir) / name
    if resume:
        from ..training.checkpoint import latest_checkpoint

        if not run_dir.exists():
            raise RunFolderExists(f"--resume: no run folder at {run_dir} to continue")
        if latest_checkpoint(run_dir) is None:
            raise RunFolderExists(
                f"--resume: {run_dir} has no checkpoint to continue from; start a new run with a new name, "
                f"e.g. `name={name}-2`, or delete the folder yourself"
            )
        return run_dir
    refuse_earlier_run(run_dir, name)
    return run_dir


def refuse_earlier_run(run_dir: Path, name: str) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderExists(
            f"{run_dir} already holds an earlier run and is never overwritten. Continue it with --resume, "
            f"or start a new run with a new name, e.g. `name={name}-2` on the command line."
        )


def save_json(path: Path, data) -> None:
    save_text(path, json.dumps(data, indent=2, default=float))


def save_text(path: Path, text: str) -> None:
    """Write whole or not at all: a crash mid-write leaves the previous file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop logged steps past ``step``: after a crash the log may run past the checkpoint resumed from."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    save_text(path, "".join(line + "\n" for line in kept))


def write_config(run_dir: Path, config, *, resume: bool) -> None:
    """A resumed run keeps the config it started with; what it resumed with goes beside it."""
    from ..config import dump_config

    save_text(run_dir / ("config.resumed.yaml" if resume else "config.yaml"), dump_config(config))

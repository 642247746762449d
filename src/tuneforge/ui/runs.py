"""Runs: the folders under ``--runs`` are the source of truth; the page keeps nothing else.

A run the page launches is an ordinary ``tuneforge train CONFIG`` in a process of its own (its own
session, so neither a closed tab nor a killed UI stops it). Next to the runs, ``.ui/`` holds what
the page wrote: ``NAME.yaml`` (the config, ``name`` and ``output_dir`` spelled out, so
``tuneforge train .ui/NAME.yaml --resume`` continues it), ``NAME.log`` (the process's output) and
``NAME.pid``. A run's status is read from its folder every time:

- ``running``: its pid is alive and is a tuneforge process;
- ``finished``: ``summary.json`` is written (the run's last step);
- ``stopped``: a checkpoint and no summary (SIGINT → checkpoint; continue with resume);
- ``failed``: none of these (the log's last lines say why).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .live import to_yaml

UI_DIR = ".ui"


class LaunchRefused(Exception):
    pass


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl, the run's own log; a line cut by a crash is skipped."""
    out: list[dict] = []
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _alive(pid: int) -> bool:
    """A live, non-zombie tuneforge process (a reused pid of another program is not the run)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return state != "Z" and "tuneforge" in cmdline
    return True


def _has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(folder.iterdir())


class Runs:
    """The runs folder: list, read, launch, stop, resume."""

    def __init__(self, root: Path, project: Path):
        self.root = root
        self.project = project
        self.ui = root / UI_DIR
        self._children: dict[str, subprocess.Popen] = {}  # this UI's own children, reaped here

    # ------------------------------------------------------------------ reading

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        if child is not None:
            return child.pid if child.poll() is None else None
        try:
            pid = int((self.ui / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def status(self, name: str) -> str:
        run_dir = self.root / name
        if self.pid(name) is not None:
            return "running"
        if (run_dir / "summary.json").exists():
            return "finished"
        if _has_checkpoint(run_dir):
            return "stopped"
        return "failed" if (run_dir.exists() or (self.ui / f"{name}.log").exists()) else "unknown"

    def names(self) -> list[str]:
        found = {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if self.ui.is_dir():
            found |= {p.stem for p in self.ui.glob("*.yaml")}
        return sorted(found)

    def config(self, name: str) -> dict:
        import yaml

        for path in (self.root / name / "config.yaml", self.ui / f"{name}.yaml"):
            if path.exists():
                try:
                    loaded = yaml.safe_load(path.read_text())
                except yaml.YAMLError:
                    continue
                if isinstance(loaded, dict):
                    return loaded
        return {}

    def row(self, name: str) -> dict:
        """One line of the runs table."""
        run_dir = self.root / name
        summary = _read_json(run_dir / "summary.json") or {}
        config = self.config(name)
        metrics = read_metrics(run_dir)
        status = self.status(name)
        before = summary.get("before") or _read_json(run_dir / "before.json") or {}
        if isinstance(before, dict) and "metrics" in before and isinstance(before["metrics"], dict):
            before = before["metrics"]
        after = summary.get("after") or {}
        key = _key_metric(before, after)
        train = summary.get("train") or {}
        steps = [m for m in metrics if "loss" in m]
        total = _planned_steps(summary, config, _read_json(self.ui / f"{name}.json") or {})
        return {
            "name": name,
            "status": status,
            "method": config.get("method", ""),
            "model": (config.get("model") or {}).get("name", ""),
            "adapter": (config.get("adapter") or {}).get("type", "full") if config else "",
            "key_metric": key,
            "before": before.get(key) if key else None,
            "after": after.get(key) if key else None,
            "wall_seconds": train.get("wall_seconds"),
            "step": steps[-1]["step"] if steps else 0,
            "total_steps": total,
            "eta_seconds": _eta(run_dir, steps, total) if status == "running" else None,
            "report": (run_dir / "report.html").exists(),
            "continual": bool(config.get("stages")),
        }

    def detail(self, name: str) -> dict:
        run_dir = self.root / name
        log = self.ui / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        return {
            **self.row(name),
            "metrics": read_metrics(run_dir),
            "summary": _read_json(run_dir / "summary.json"),
            "config": self.config(name),
            "log": tail,
            "r_matrix": _r_matrix(run_dir),
        }

    # ------------------------------------------------------------------ launching

    def launch(self, raw: dict, *, resume: bool = False, steps: int | None = None) -> str:
        """Start ``tuneforge train`` on ``raw`` (a config dict) in a process of its own."""
        name = str(raw.get("name") or "").strip()
        if not name or "/" in name or name.startswith("."):
            raise LaunchRefused("name: give the run a plain folder name")
        if self.pid(name) is not None:
            raise LaunchRefused(f"{name} is running already")
        if not resume and (self.root / name).exists() and any((self.root / name).iterdir()):
            raise LaunchRefused(f"name: {self.root / name} holds an earlier run; choose another name or resume it")
        self.ui.mkdir(parents=True, exist_ok=True)
        config_path = self.ui / f"{name}.yaml"
        if not resume:
            raw = {**raw, "name": name, "output_dir": os.path.relpath(self.root, self.project)}
            config_path.write_text(to_yaml(raw))
            (self.ui / f"{name}.json").write_text(json.dumps({"steps": steps, "launched": time.time()}))
        elif not config_path.exists():
            config_path.write_text((self.root / name / "config.yaml").read_text())
        cmd = [sys.executable, "-m", "tuneforge", "train", str(config_path)] + (["--resume"] if resume else [])
        env = {**os.environ, "TUNEFORGE_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.ui / f"{name}.log", "a") as log:
            log.write(f"\n$ {' '.join(cmd[1:])}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.flush()
            child = subprocess.Popen(
                cmd, cwd=self.project, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._children[name] = child
        (self.ui / f"{name}.pid").write_text(str(child.pid))
        return name

    def stop(self, name: str) -> bool:
        """SIGINT, as Ctrl-C: the run writes a checkpoint and exits; resume continues it."""
        pid = self.pid(name)
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)
        return True

    def resume(self, name: str) -> str:
        if self.status(name) != "stopped":
            raise LaunchRefused(f"{name} is {self.status(name)}: only a stopped run (with a checkpoint) resumes")
        return self.launch({"name": name}, resume=True)

    def close(self) -> None:
        """The UI is going: its children go on (own sessions); reap the ones already done."""
        for child in self._children.values():
            child.poll()


def _key_metric(before: dict, after: dict) -> str | None:
    """The metric the table shows: the first non-loss metric both sides report, else eval_loss."""
    shared = [k for k in after if k in before and isinstance(after[k], (int, float))] if after else list(before)
    for key in shared:
        if "loss" not in key and "perplexity" not in key:
            return key
    return "eval_loss" if "eval_loss" in (after or before) else (shared[0] if shared else None)


def _planned_steps(summary: dict, config: dict, launched: dict) -> int | None:
    """The run's steps: what it measured, else training.max_steps, else the plan made at launch."""
    done = (summary.get("train") or {}).get("steps")
    max_steps = (config.get("training") or {}).get("max_steps")
    total = done or max_steps or launched.get("steps")
    return int(total) if total else None


def _eta(run_dir: Path, steps: list[dict], total: int | None) -> float | None:
    """Seconds left: the steps to go at the pace of the last logged ones (metrics.jsonl's mtime)."""
    if not total or len(steps) < 2:
        return None
    try:
        elapsed = (run_dir / "metrics.jsonl").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
    except OSError:
        return None
    done = steps[-1]["step"]
    return max(0.0, elapsed / max(done, 1) * (total - done))


def _r_matrix(run_dir: Path):
    """A continual run's R matrix ({rows, columns, values}: each stage's score after each training stage)."""
    summary = _read_json(run_dir / "summary.json") or {}
    matrix = summary.get("matrix")
    return matrix if isinstance(matrix, dict) and "values" in matrix else None

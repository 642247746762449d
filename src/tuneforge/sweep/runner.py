"""A sweep's parts: its file read and checked, its folder and state, each trial's config and planned cost."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config
from ..config.loader import read_yaml
from ..run.folder import RunFolderExists, save_json
from .config import SweepConfig
from .space import distributions, draw, grid, optuna_params, suggest

STATE = "sweep.json"


class SweepRefused(ValueError):
    """A sweep that cannot run as asked (budget, metric, folder); the message says what to change."""


@dataclass
class Sweep:
    """What every step of a sweep shares."""

    config: SweepConfig
    path: Path  # the sweep file
    base_path: Path  # the base run config
    folder: Path
    lower: bool  # the metric falls as it improves
    state: dict

    def save(self) -> None:
        save_json(self.folder / STATE, self.state)


def read_sweep(path: str | Path) -> SweepConfig:
    from pydantic import ValidationError

    raw = read_yaml(path)
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'sweep'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(problems, str(path)) from None


def open_sweep(path: str | Path, *, resume: bool = False) -> Sweep:
    from ..eval.report import lower_is_better

    path = Path(path)
    config = read_sweep(path)
    base_path = (path.parent / config.config).resolve()
    if not base_path.exists():
        raise ConfigError([f"config: no base run config at {base_path}"], str(path))
    base = load_config(base_path)
    for key in config.parameters:
        load_config(base_path, [f"{key}={_probe(config.parameters[key])}"])  # an unknown key fails here, named
    folder = Path(base.output_dir) / (config.name or path.stem)
    if resume:
        if not (folder / STATE).exists():
            raise RunFolderExists(f"--resume: {folder} holds no sweep to continue ({STATE} missing)")
        state = json.loads((folder / STATE).read_text())
    else:
        if folder.exists() and any(folder.iterdir()):
            raise RunFolderExists(
                f"{folder} already holds an earlier sweep and is never overwritten; continue it with --resume "
                f"or give the sweep another name (name: in {path.name})"
            )
        state = {"sweep": str(path), "metric": config.metric, "trials": [], "elapsed_seconds": 0.0}
    mode = config.mode if config.mode != "auto" else ("min" if lower_is_better(config.metric) else "max")
    return Sweep(config, path, base_path, folder, mode == "min", state)


def _probe(spec) -> Any:
    return spec.values[0] if spec.values is not None else spec.range[0]


def planned_trials(sweep: Sweep) -> list[dict[str, Any]] | None:
    """The trials' values when known in advance (grid, random: seeded draws); None for tpe."""
    cfg = sweep.config
    if cfg.strategy == "grid":
        return grid(cfg.parameters, cfg.trials)
    if cfg.strategy == "random":
        rng = random.Random(cfg.seed)
        return [draw(cfg.parameters, rng) for _ in range(cfg.trials)]
    return None


def trial_config(sweep: Sweep, number: int, values: dict[str, Any], suffix: str = ""):
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    overrides += [f"name=trial-{number:03d}{suffix}", f"output_dir={sweep.folder / 'trials'}"]
    return load_config(sweep.base_path, overrides)


def predicted_seconds(config) -> float | None:
    """The planner's run time for a trial (training steps only), or None when it cannot plan it."""
    from ..planning import safe_plan

    plan, _problem = safe_plan(config)
    return None if plan is None else float(plan.run_seconds)


def now() -> float:
    return time.perf_counter()


def make_study(sweep: Sweep):
    """An Optuna study with TPE, told about the trials an earlier session finished."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = sweep.config
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(3, cfg.trials))
    study = optuna.create_study(direction="minimize" if sweep.lower else "maximize", sampler=sampler)
    dists = distributions(cfg.parameters)
    for trial in sweep.state["trials"]:
        if trial.get("value") is not None:
            study.add_trial(
                optuna.trial.create_trial(
                    params=optuna_params(cfg.parameters, trial["values"]), distributions=dists, value=trial["value"]
                )
            )
    return study, dists


def suggested_values(sweep: Sweep, study) -> tuple[Any, dict[str, Any]]:
    ask = study.ask()
    return ask, suggest(sweep.config.parameters, ask)

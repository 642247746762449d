"""Running a sweep: plan and budget, the trials (``trials.py``), the best config and the report."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..config import load_config
from ..config.loader import deep_merge, parse_overrides, read_yaml
from ..training.engine import console
from .config import budget_seconds
from .report import duration
from .runner import STATE, Sweep, SweepRefused, open_sweep, planned_trials, predicted_seconds, trial_config
from .trials import run_trials


def run_sweep(path: str | Path, *, budget: str | None = None, resume: bool = False, dry_run: bool = False) -> dict:
    """Run (or continue) the sweep in ``path``; returns sweep.json's content (``best`` included)."""
    sweep = open_sweep(path, resume=resume)
    cfg = sweep.config
    chosen = budget or cfg.budget
    limit = budget_seconds(chosen) if chosen else None
    planned = planned_trials(sweep)
    if planned is None:  # tpe: the trials' values are not known yet; the base config's cost stands in
        base_cost = predicted_seconds(load_config(sweep.base_path))
        costs = [base_cost] * cfg.trials
    else:
        costs = [predicted_seconds(trial_config(sweep, k, values)) for k, values in enumerate(planned)]
    _print_plan(sweep, planned, costs, limit)
    known = [c for c in costs if c is not None]
    if limit is not None and known and min(known) > limit:
        raise SweepRefused(
            f"budget {budget or cfg.budget}: even the cheapest trial is planned at {min(known) / 60:.1f} min; "
            f"raise --budget or make the trials smaller (training.max_steps, data.max_examples)"
        )
    if dry_run:
        return sweep.state
    sweep.folder.mkdir(parents=True, exist_ok=True)
    sweep.save()
    run_trials(sweep, planned, costs, limit)
    return finish(sweep)


def _print_plan(sweep: Sweep, planned, costs: list, limit: float | None) -> None:
    from rich.table import Table

    table = Table(title=f"sweep {sweep.folder.name}: {sweep.config.strategy}, {sweep.config.trials} trial(s)")
    table.add_column("trial")
    table.add_column("values")
    table.add_column("planned", justify="right")
    for k, cost in enumerate(costs):
        values = ", ".join(f"{key}={value}" for key, value in planned[k].items()) if planned else "(chosen by TPE)"
        table.add_row(str(k), values, duration(cost) if cost is not None else "?")
    console.print(table)
    total = sum(c for c in costs if c is not None)
    line = f"planned total {total / 60:.1f} min (training steps only, the planner's estimate)"
    if limit is not None:
        line += f"; budget {limit / 60:.1f} min: trials that would not fit in what is left are not started"
    console.print(line)


def finish(sweep: Sweep) -> dict:
    """The best trial, its config written out ready to train, and the report."""
    from .report import write_sweep_report

    done = [t for t in sweep.state["trials"] if t.get("value") is not None]
    if done:
        best = (min if sweep.lower else max)(done, key=lambda t: t["value"])
        sweep.state["best"] = {"trial": best["number"], "value": best["value"], "values": best["values"]}
        raw = deep_merge(
            read_yaml(sweep.base_path), parse_overrides([f"{k}={json.dumps(v)}" for k, v in best["values"].items()])
        )
        text = f"# The best trial of sweep {sweep.folder.name} ({sweep.config.metric} {best['value']:.4g}).\n"
        (sweep.folder / "best.yaml").write_text(text + yaml.safe_dump(raw, sort_keys=False))
        console.print(
            f"Best: trial {best['number']} ({sweep.config.metric} {best['value']:.4g}) with "
            + ", ".join(f"{k}={v}" for k, v in best["values"].items())
            + f"\nTrain it: tuneforge train {sweep.folder / 'best.yaml'}"
        )
    sweep.save()
    report = write_sweep_report(sweep)
    console.print(f"Sweep: {sweep.folder / STATE}\nReport: {report}")
    return sweep.state

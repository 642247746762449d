"""The trials of a sweep, one after another, each recorded in sweep.json as it starts and as it ends."""

from __future__ import annotations

from pathlib import Path

from ..training.engine import console
from .runner import STATE, Sweep, SweepRefused, make_study, now, suggested_values, trial_config
from .stopping import MedianStopping


def run_trials(sweep: Sweep, planned, costs: list, limit: float | None) -> None:
    """Run every trial not finished yet, within the budget; Ctrl-C leaves sweep.json resumable."""
    from ..eval.report import lower_is_better
    from ..training.checkpoint import latest_checkpoint
    from ..training.divergence import DivergenceError
    from ..training.loop import TrainingInterrupted
    from ..training.step import NonFiniteLossError

    cfg, trials = sweep.config, sweep.state["trials"]
    earlier, started = float(sweep.state.get("elapsed_seconds", 0.0)), now()
    study, _ = make_study(sweep) if cfg.strategy == "tpe" else (None, None)
    stop_lower = lower_is_better(cfg.stop_poor_trials.metric)
    for k in range(cfg.trials):
        record = next((t for t in trials if t["number"] == k), None)
        if record is not None and record["status"] != "running":
            continue
        elapsed = earlier + now() - started
        if limit is not None and costs[k] is not None and elapsed + costs[k] > limit:
            console.print(
                f"[yellow]budget: {elapsed / 60:.1f} of {limit / 60:.1f} min used; trial {k} is planned at "
                f"{costs[k] / 60:.1f} min and is not started (nor any later one)[/]"
            )
            sweep.state["budget_stopped_before_trial"] = k
            break
        ask, resume, suffix = None, False, ""
        if record is None:
            if planned is not None:
                values = planned[k]
            else:
                ask, values = suggested_values(sweep, study)
            record = {"number": k, "values": values, "status": "running", "predicted_seconds": costs[k]}
            trials.append(record)
        else:  # a trial an interrupted session left running: continue it from its checkpoint, or start it anew
            values, suffix = record["values"], record.get("suffix", "")
            folder = Path(record["run_dir"])
            if folder.exists() and latest_checkpoint(folder) is not None:
                resume = True
            elif folder.exists():
                suffix += "-retry"  # the earlier attempt's folder stays as it was: runs are never overwritten
        config = trial_config(sweep, k, values, suffix)
        record.update(run_dir=str(Path(config.output_dir) / config.name), suffix=suffix)
        sweep.save()
        console.print(f"[bold]trial {k}[/]: " + ", ".join(f"{key}={v}" for key, v in values.items()))
        earlier_curves = [
            t.get("curve") or [] for t in trials if t is not record and t["status"] in ("complete", "stopped")
        ]
        stopper = MedianStopping(cfg.stop_poor_trials, earlier_curves, lower=stop_lower)
        t0 = now()
        try:
            result = _train(config, sweep, resume, stopper)
        except TrainingInterrupted:
            record["curve"] = stopper.curve
            sweep.state["elapsed_seconds"] = round(earlier + now() - started, 2)
            sweep.save()
            console.print(f"[yellow]Sweep paused in trial {k}.[/] Continue with: tuneforge sweep {sweep.path} --resume")
            raise
        except (DivergenceError, NonFiniteLossError) as exc:  # the trial's own failure: the sweep goes on
            record.update(status="failed", error=str(exc).splitlines()[0], wall_seconds=round(now() - t0, 2))
            if study is not None:
                study.tell(ask, state=_failed())
            sweep.state["elapsed_seconds"] = round(earlier + now() - started, 2)
            sweep.save()
            continue
        after = result.summary["after"]
        if cfg.metric not in after:
            raise SweepRefused(
                f"metric '{cfg.metric}': the trials report {', '.join(sorted(after)) or 'nothing'} after training; "
                f"set metric: in {sweep.path.name} to one of them"
            )
        value = float(after[cfg.metric])
        record.update(
            status="stopped" if stopper.stopped_at is not None else "complete",
            value=value,
            curve=stopper.curve,
            stopped_at_step=stopper.stopped_at,
            steps=result.summary["train"]["steps"],
            wall_seconds=round(now() - t0, 2),
        )
        if study is not None and ask is not None:
            study.tell(ask, value)
        sweep.state["elapsed_seconds"] = round(earlier + now() - started, 2)
        sweep.save()
    console.print(f"Sweep state: {sweep.folder / STATE}")


def _train(config, sweep: Sweep, resume: bool, stopper):
    from ..runner import train_from_config

    return train_from_config(config, config_path=sweep.base_path, resume=resume, on_eval=stopper)


def _failed():
    import optuna

    return optuna.trial.TrialState.FAIL

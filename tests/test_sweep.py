"""`tuneforge sweep`: the search space, median stopping, trials as ordinary runs, the best config,
the budget check, TPE, and resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
import yaml
from conftest import chat_rows, write_jsonl

from tuneforge.config import ConfigError, load_config
from tuneforge.sweep.config import Parameter, StopPoorTrials, SweepConfig, budget_seconds
from tuneforge.sweep.run import run_sweep
from tuneforge.sweep.runner import SweepRefused
from tuneforge.sweep.space import draw, grid
from tuneforge.sweep.stopping import MedianStopping
from tuneforge.training.loop import TrainingInterrupted


def test_budget_and_the_file_checks():
    assert budget_seconds("30m") == 1800 and budget_seconds("1h30m") == 5400 and budget_seconds("900s") == 900
    with pytest.raises(ValueError, match="write it like 30m"):
        budget_seconds("half an hour")
    with pytest.raises(ValueError, match="either values"):
        Parameter()
    with pytest.raises(ValueError, match="strategy grid: every parameter needs values"):
        SweepConfig(config="c.yaml", metric="eval_loss", strategy="grid", parameters={"x": {"range": [0, 1]}})


def test_grid_and_random_draws():
    params = {"a": Parameter(values=[1, 2]), "b": Parameter(values=["x", "y", "z"])}
    assert grid(params, 10) == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    assert len(grid(params, 4)) == 4
    lr = {"lr": Parameter(range=(1e-5, 1e-2), log=True), "r": Parameter(range=(2, 16), integer=True)}
    draws = [draw(lr, random.Random(3)) for _ in range(2)]
    assert draws[0] == draws[1]  # seeded: a resumed sweep draws the same trials
    many = [draw(lr, random.Random(s)) for s in range(200)]
    assert all(1e-5 <= d["lr"] <= 1e-2 and isinstance(d["r"], int) and 2 <= d["r"] <= 16 for d in many)
    assert sum(d["lr"] < 3.2e-4 for d in many) > 60  # log scale: about half below the geometric middle


def test_median_stopping_compares_best_so_far_at_the_same_step():
    settings = StopPoorTrials(metric="eval_loss", min_trials=2, min_evals=1)
    earlier = [[[2, 1.0], [4, 0.8]], [[2, 1.2], [4, 0.6]], [[2, 0.9]]]  # the third did not reach step 4
    # At step 2 the earlier trials' best values are 1.0, 1.2, 0.9: median 1.0.
    assert not MedianStopping(settings, earlier, lower=True)(2, {"eval_loss": 0.95})
    trailing = MedianStopping(settings, earlier, lower=True)
    assert trailing(2, {"eval_loss": 1.05}) and trailing.stopped_at == 2
    # At step 4 only two trials got there (bests 0.8, 0.6: median 0.7); the trial's best so far counts.
    late = MedianStopping(settings, earlier, lower=True)
    assert not late(2, {"eval_loss": 0.95}) and not late(4, {"eval_loss": 0.65})
    assert late(4 + 0, {"eval_loss": 0.99}) is False  # best so far is still 0.65 < 0.7
    # Too few finished trials: never stopped; a metric the evaluation did not report: ignored.
    assert not MedianStopping(settings, earlier[:1], lower=True)(2, {"eval_loss": 9.0})
    assert not MedianStopping(settings, earlier, lower=True)(2, {"accuracy": 0.1})
    # Higher is better: the comparison flips.
    assert MedianStopping(settings, [[[2, 0.8]], [[2, 0.6]]], lower=False)(2, {"eval_loss": 0.5})


def _sweep_files(tmp_path, model_dir, *, strategy="random", trials=3, extra=None, training=None):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(24, seed=1))
    held = write_jsonl(tmp_path / "eval.jsonl", chat_rows(6, seed=2))
    base = {
        "method": "sft",
        "name": "base",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"format": "chat", "train": str(train), "eval": str(held), "max_length": 128},
        "adapter": {"type": "lora", "r": 4, "alpha": 8},
        "training": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "save_every": 2, "seed": 3, **(training or {})},
        "eval": {"scorers": [], "max_new_tokens": 2},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "config": "base.yaml",
        "name": "search",
        "metric": "eval_loss",
        "strategy": strategy,
        "trials": trials,
        "seed": 1,
        "parameters": {
            "training.learning_rate": {"values": [5e-3, 1e-6, 2e-3]}
            if strategy != "tpe"
            else {"range": [1e-5, 1e-2], "log": True}
        },
        **(extra or {}),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path / "sweep.yaml"


def test_a_grid_sweep_runs_trials_stops_a_poor_one_and_writes_the_best_config(tmp_path, tiny_model_dir, isolated_cache):
    path = _sweep_files(tmp_path, tiny_model_dir, strategy="grid", extra={"stop_poor_trials": {"min_trials": 1}})
    state = run_sweep(path)
    folder = tmp_path / "runs" / "search"
    trials = state["trials"]
    assert [t["values"]["training.learning_rate"] for t in trials] == [5e-3, 1e-6, 2e-3]
    for t in trials:  # each trial an ordinary run folder with its summary
        summary = json.loads((folder / "trials" / f"trial-{t['number']:03d}" / "summary.json").read_text())
        assert t["value"] == pytest.approx(summary["after"]["eval_loss"])
    # lr 1e-6 learns nothing: at step 2 it trails trial 0's held-out loss and is stopped there.
    assert trials[1]["status"] == "stopped" and trials[1]["stopped_at_step"] == 2 and trials[1]["steps"] == 2
    best = min((t for t in trials if t["value"] is not None), key=lambda t: t["value"])
    assert state["best"]["trial"] == best["number"]
    written = load_config(folder / "best.yaml")  # ready to train: the base config with the best values
    assert written.training.learning_rate == best["values"]["training.learning_rate"]
    assert written.data.train == str(tmp_path / "train.jsonl") and written.name == "base"
    assert (folder / "report.html").exists() and (folder / "plots" / "training.learning_rate.png").exists()
    with pytest.raises(Exception, match="never overwritten"):
        run_sweep(path)


def test_budget_refuses_what_cannot_fit_and_tpe_runs(tmp_path, tiny_model_dir, isolated_cache):
    path = _sweep_files(tmp_path, tiny_model_dir, strategy="tpe", trials=2)
    with pytest.raises(SweepRefused, match="even the cheapest trial is planned at"):
        run_sweep(path, budget="0.0001s")
    state = run_sweep(path)
    assert [t["status"] for t in state["trials"]] == ["complete", "complete"] or any(
        t["status"] == "stopped" for t in state["trials"]
    )
    assert all(1e-5 <= t["values"]["training.learning_rate"] <= 1e-2 for t in state["trials"])


def test_unknown_parameter_key_is_named(tmp_path, tiny_model_dir):
    path = _sweep_files(tmp_path, tiny_model_dir, extra={"parameters": {"training.learnig_rate": {"values": [1]}}})
    with pytest.raises(ConfigError, match="learnig_rate"):
        run_sweep(path, dry_run=True)


def test_ctrl_c_in_a_trial_resumes_it_from_its_checkpoint(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    path = _sweep_files(
        tmp_path, tiny_model_dir, strategy="grid", trials=2, extra={"stop_poor_trials": {"enabled": False}}
    )
    original, calls = CausalLMLoss.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4 + 3:  # trial 1's third step (trial 0 took 4)
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(CausalLMLoss, "forward", forward)
        with pytest.raises(TrainingInterrupted):
            run_sweep(path)
    folder = tmp_path / "runs" / "search"
    state = json.loads((folder / "sweep.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["complete", "running"]
    state = run_sweep(path, resume=True)
    assert [t["status"] for t in state["trials"]] == ["complete", "complete"]
    trial = folder / "trials" / "trial-001"
    assert (trial / "config.resumed.yaml").exists() and (trial / "summary.json").exists()
    assert state["elapsed_seconds"] > 0

"""training.early_stopping: the counter, the direction, the best weights kept as the output and the
last ones beside them, a metric beyond the loss, resume, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import chat_rows, write_jsonl
from safetensors.torch import load_file

from tuneforge.config import ConfigError, load_config
from tuneforge.runner import train_from_config
from tuneforge.training.early_stop import BestWeights, EarlyStopMetricMissing, direction


class Settings:
    def __init__(self, metric="eval_loss", mode="auto", patience=2, min_delta=0.0):
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta


def _state():
    return {"w": torch.ones(2)}


def test_patience_counts_evaluations_without_a_gain_of_min_delta(tmp_path):
    best = BestWeights(Settings(patience=2, min_delta=0.05), tmp_path / "best")
    assert not best.observe(10, {"eval_loss": 1.00}, _state)  # first: a best
    assert not best.observe(20, {"eval_loss": 0.90}, _state)  # gain 0.10 > 0.05: a best
    assert not best.observe(30, {"eval_loss": 0.86}, _state)  # gain 0.04 < 0.05: not one (1)
    assert best.observe(40, {"eval_loss": 0.95}, _state)  # worse (2): stop
    assert (best.best_step, best.best_value, best.stopped_at) == (20, 0.90, 40)
    # A resumed run reads the counter back and does not count an evaluation twice.
    again = BestWeights(Settings(patience=2, min_delta=0.05), tmp_path / "best")
    assert (again.best_step, again.evals_without_gain, again.last_step) == (20, 2, 40)
    assert again.observe(40, {"eval_loss": 0.1}, _state) and again.best_step == 20


def test_direction_follows_the_metric_unless_set():
    assert direction("eval_loss", "auto") == "min" and direction("eval_perplexity", "auto") == "min"
    assert direction("macro_f1", "auto") == "max" and direction("recall@1", "auto") == "max"
    assert direction("eval_loss", "max") == "max"
    best = BestWeights(Settings(metric="macro_f1", patience=1), "/nonexistent/best")
    best.main = False  # nothing written
    assert not best.observe(1, {"macro_f1": 0.5}, _state)
    assert best.observe(2, {"macro_f1": 0.4}, _state) and best.best_value == 0.5
    misspelt = BestWeights(Settings(metric="f1"), "/nonexistent/best")
    with pytest.raises(EarlyStopMetricMissing, match="reports accuracy, macro_f1; pick one of those"):
        misspelt.check_metric({"macro_f1": 1, "accuracy": 1})


def _config(tmp_path, model_dir, name, **training):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(32, seed=1))
    held = write_jsonl(tmp_path / "eval.jsonl", chat_rows(8, seed=2))
    return load_config(
        data={
            "method": "sft",
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(model_dir)},
            "data": {"format": "chat", "train": str(train), "eval": str(held), "max_length": 128},
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "training": {"batch_size": 4, "learning_rate": 5e-3, "seed": 7, "scheduler": "constant", **training},
            "eval": {"scorers": [], "max_new_tokens": 2},
        }
    )


def test_the_best_weights_become_the_output_and_the_last_ones_are_kept(tmp_path, tiny_model_dir, isolated_cache):
    # min_delta 100: no evaluation after the first counts as a gain, so the best is step 2 and the run
    # stops after `patience` more evaluations (step 6), well before max_steps.
    early = {"metric": "eval_loss", "patience": 2, "min_delta": 100.0}
    result = train_from_config(
        _config(tmp_path, tiny_model_dir, "early", max_steps=40, eval_every=2, early_stopping=early)
    )
    stop = result.summary["early_stopping"]
    assert stop["best_step"] == 2 and stop["stopped_at_step"] == 6 and result.summary["train"]["steps"] == 6
    logged = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in logged if "eval_loss" in r]
    assert [s for s, _ in evals] == [2, 4, 6] and stop["evaluations"] == [[s, v] for s, v in evals]
    assert (result.run_dir / "plots" / "loss.png").exists()

    # The output holds the weights of step 2: a run of exactly 2 steps writes the same adapter.
    two = train_from_config(_config(tmp_path, tiny_model_dir, "two", max_steps=2))
    best = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
    reference = load_file(str(two.run_dir / "adapter" / "adapter_model.safetensors"))
    last = load_file(str(result.run_dir / "adapter-last" / "adapter_model.safetensors"))
    assert best.keys() == reference.keys() == last.keys()
    assert all(torch.allclose(best[k], reference[k], atol=1e-6) for k in best)
    assert any(not torch.allclose(best[k], last[k]) for k in best)  # the last weights are the step-6 ones
    assert stop["last_output"].endswith("adapter-last")


def test_a_metric_beyond_the_loss_runs_the_full_evaluation(tmp_path, tiny_model_dir, isolated_cache):
    early = {"metric": "eval_perplexity", "patience": 5}
    result = train_from_config(
        _config(tmp_path, tiny_model_dir, "ppl", max_steps=4, eval_every=2, early_stopping=early)
    )
    stop = result.summary["early_stopping"]
    assert stop["mode"] == "min" and [s for s, _ in stop["evaluations"]] == [2, 4]
    assert stop["stopped_at_step"] is None and stop["best_step"] in (2, 4)
    assert (result.run_dir / "plots" / "early_stopping.png").exists()


def test_refusals_name_the_key(tmp_path, tiny_model_dir, isolated_cache):
    with pytest.raises(ConfigError, match="early_stopping needs eval_every"):
        _config(tmp_path, tiny_model_dir, "x", max_steps=4, early_stopping={})
    config = _config(tmp_path, tiny_model_dir, "bad", max_steps=4, eval_every=2, early_stopping={"metric": "bleu"})
    with pytest.raises(EarlyStopMetricMissing, match="'bleu': the held-out evaluation reports .*eval_loss"):
        train_from_config(config)

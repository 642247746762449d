"""Whole continual runs on a tiny saved model: every strategy, frozen adapters, routing, resume."""

import json

import pytest
import torch
from conftest import chat_rows, interrupt_in_stage, write_jsonl
from safetensors.torch import load_file

from tuneforge.config import load_config
from tuneforge.continual import session as session_module
from tuneforge.continual.runner import run_continual
from tuneforge.training.loop import TrainingInterrupted


def make_config(tmp_path, model_dir, strategy="naive", *, name=None, continual=None, adapter=False, **top):
    stages = []
    for k in range(3):
        train = write_jsonl(tmp_path / "data" / f"s{k}_train.jsonl", chat_rows(12, seed=10 + k))
        held = write_jsonl(tmp_path / "data" / f"s{k}_eval.jsonl", chat_rows(4, seed=20 + k))
        stages.append({"name": f"s{k}", "data": {"train": str(train), "eval": str(held)}})
    general = write_jsonl(
        tmp_path / "data" / "general.jsonl",
        [{"text": f"the river {i} runs past the stone and the cloud"} for i in range(6)],
    )
    raw = {
        "method": "sft",
        "name": name or strategy,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"format": "chat", "max_length": 128},
        "training": {
            "max_steps": 4,
            "batch_size": 2,
            "learning_rate": 5e-3,
            "save_every": 2,
            "keep_checkpoints": 5,
            "seed": 3,
        },
        # eval_loss as the score: every cell of R is a real number on a tiny model (lower is better)
        "eval": {"scorers": [], "max_new_tokens": 4, "batch_size": 4},
        "stages": stages,
        "continual": {"strategy": strategy, "general_text": str(general), "metric": "eval_loss", **(continual or {})},
        **top,
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}
    return load_config(data=raw)


@pytest.mark.parametrize("strategy", ["naive", "replay", "l2", "ewc", "joint"])
def test_every_strategy_writes_the_matrix_summary_csv_and_report(tmp_path, tiny_model_dir, isolated_cache, strategy):
    result = run_continual(make_config(tmp_path, tiny_model_dir, strategy, continual={"wise_ft": {"alphas": [0, 1]}}))
    run = result.run_dir
    for name in ("config.yaml", "summary.json", "matrix.csv", "report.html", "continual_state.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    rows = ["base", "joint"] if strategy == "joint" else ["base", "s0", "s1", "s2"]
    assert summary["matrix"]["rows"] == rows and summary["matrix"]["columns"] == ["s0", "s1", "s2"]
    values = summary["matrix"]["values"]
    assert len(values) == len(rows) and all(len(r) == 3 for r in values)
    assert all(v > 0 for r in values for v in r)  # eval_loss of every task after every stage
    assert len(summary["general_perplexity"]["values"]) == len(rows)
    csv_lines = (run / "matrix.csv").read_text().splitlines()
    assert csv_lines[0] == "after,s0,s1,s2,general_perplexity" and len(csv_lines) == len(rows) + 1
    cm = summary["continual_metrics"]
    assert cm["acc"] == pytest.approx(sum(values[-1]) / 3)
    if strategy != "joint":
        # eval_loss is lower-better: BWT and forgetting are signed so that < 0 / > 0 mean worse (issue #20)
        assert cm["bwt"] == pytest.approx(-((values[3][0] - values[1][0]) + (values[3][1] - values[2][1])) / 2)
        assert cm["fwt"] == pytest.approx(-((values[1][1] - values[0][1]) + (values[2][2] - values[0][2])) / 2)
        assert cm["forgetting"] == pytest.approx(
            {"s0": values[3][0] - min(values[1][0], values[2][0]), "s1": values[3][1] - values[2][1]}
        )
        assert [s["stage"] for s in summary["stage_results"]] == ["s0", "s1", "s2"]
        for k in (1, 2, 3):  # each stage's output is saved, and its log restarts at step 1
            stage_dir = run / "stages" / f"{k}-s{k - 1}"
            assert (stage_dir / "output" / "model.safetensors").exists()
            assert not (stage_dir / "checkpoints").exists()  # dropped once the output is saved
            steps = [json.loads(x)["step"] for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
            assert steps[0] == 1
        assert summary["wise_ft"]["alphas"] == [0.0, 1.0]
        # α = 1 is the model after the last stage: its new-task score is that stage's diagonal cell
        assert summary["wise_ft"]["new"][1] == pytest.approx(values[3][2], rel=1e-5)
        # α = 0 is the model before it: the previous row
        assert summary["wise_ft"]["new"][0] == pytest.approx(values[2][2], rel=1e-5)
    if strategy == "replay":
        replayed = {s["stage"]: s.get("replayed_from", {}) for s in summary["stage_results"]}
        assert replayed["s0"] == {} and set(replayed["s1"]) == {"s0"} and set(replayed["s2"]) == {"s0", "s1"}
    if strategy == "ewc":
        assert (run / "stages" / "1-s0" / "fisher.safetensors").exists()
        assert not (run / "stages" / "3-s2" / "fisher.safetensors").exists()  # no later stage needs it


def test_schedule_restarts_in_every_stage(tmp_path, tiny_model_dir, isolated_cache):
    config = make_config(
        tmp_path,
        tiny_model_dir,
        "naive",
        training={"max_steps": 4, "batch_size": 2, "learning_rate": 5e-3, "warmup_steps": 2, "seed": 3},
    )
    run = run_continual(config).run_dir
    for k in (1, 2, 3):
        lrs = [
            json.loads(x)["lr"] for x in (run / "stages" / f"{k}-s{k - 1}" / "metrics.jsonl").read_text().splitlines()
        ]
        # logged after each step, the rate of the next: warm-up 2.5e-3 → 5e-3, then cosine to 0 — in every stage
        assert lrs == pytest.approx([5e-3, 5e-3, 2.5e-3, 0.0], abs=1e-12)


def test_frozen_stage_adapter_does_not_change_in_later_stages(tmp_path, tiny_model_dir, isolated_cache):
    config = make_config(tmp_path, tiny_model_dir, "adapter", adapter=True, continual={"adapter": {"merge": ["cat"]}})
    result = run_continual(config)
    final = {n: p.detach() for n, p in result.model.named_parameters()}
    for k in range(3):
        saved = load_file(str(result.run_dir / "stages" / f"{k + 1}-s{k}" / "output" / "adapter_model.safetensors"))
        mine = {n: p for n, p in final.items() if f".s{k}." in n}
        assert len(mine) == len(saved) > 0
        for name, tensor in saved.items():
            live = name.replace(".weight", f".s{k}.weight")
            assert torch.equal(mine[live], tensor), name  # bit for bit: never touched after its stage
        assert any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)  # it did train
    summary = result.summary
    assert set(summary["extra_rows"]) == {"merged (cat)"}
    # cat is exactly the sum of the adapters: the merged adapter scores what all three active together do
    assert summary["extra_rows"]["merged (cat)"] == pytest.approx(summary["matrix"]["values"][3], rel=1e-4)


def test_routing_answers_each_task_with_its_own_adapter(tmp_path, tiny_model_dir, isolated_cache):
    config = make_config(
        tmp_path, tiny_model_dir, "adapter", adapter=True, continual={"adapter": {"inference": "route"}}
    )
    values = run_continual(config).summary["matrix"]["values"]
    for j in range(3):  # after its stage, task j's score never moves: the same adapter answers it
        for i in range(j + 1, 4):
            assert values[i][j] == pytest.approx(values[j + 1][j], abs=1e-7)


def _interrupt_at(monkeypatch, stage_index: int, micro_batch: int):
    """SIGINT during the given training micro-batch of the given stage (0-based stage, 1-based batch)."""
    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    interrupt_in_stage(monkeypatch, CausalLMLoss, stage_index, micro_batch)


def test_resume_within_and_between_stages_equals_an_uninterrupted_run(
    tmp_path, tiny_model_dir, isolated_cache, monkeypatch
):
    ref = run_continual(make_config(tmp_path, tiny_model_dir, "ewc", name="ref"))

    # 1. SIGINT in stage 2's third step: a checkpoint at step 3 of that stage, stage 1 finished.
    config = make_config(tmp_path, tiny_model_dir, "ewc", name="cut")
    with monkeypatch.context() as patch:
        _interrupt_at(patch, stage_index=1, micro_batch=3)
        with pytest.raises(TrainingInterrupted) as info:
            run_continual(config)
    assert info.value.checkpoint.name == "step-000003" and info.value.checkpoint.parent.parent.name == "2-s1"
    state = json.loads((tmp_path / "runs" / "cut" / "continual_state.json").read_text())
    assert state["completed"] == ["s0"]

    # 2. A crash between stages: stage 2 finishes, then the process dies before stage 3 starts.
    def crash(self, k):
        raise RuntimeError("simulated crash before stage 3")

    with monkeypatch.context() as patch:
        original_stage = session_module.ContinualRun.stage
        patch.setattr(
            session_module.ContinualRun, "stage", lambda self, k: crash(self, k) if k == 2 else original_stage(self, k)
        )
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_continual(config, resume=True)
    state = json.loads((tmp_path / "runs" / "cut" / "continual_state.json").read_text())
    assert state["completed"] == ["s0", "s1"]

    # 3. Resume the rest: same weights, same matrix as the uninterrupted run.
    resumed = run_continual(config, resume=True)
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    ref_values, cut_values = ref.summary["matrix"]["values"], resumed.summary["matrix"]["values"]
    for a_row, b_row in zip(ref_values, cut_values):
        assert a_row == pytest.approx(b_row, abs=1e-5)


def test_resume_needs_a_continual_run_and_a_new_run_never_overwrites(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.runner import RunFolderExists

    config = make_config(tmp_path, tiny_model_dir, "naive", name="once")
    with pytest.raises(RunFolderExists, match="no continual run"):
        run_continual(config, resume=True)
    (tmp_path / "runs" / "once").mkdir(parents=True)
    (tmp_path / "runs" / "once" / "keep.txt").write_text("earlier work")
    with pytest.raises(RunFolderExists, match="never overwritten"):
        run_continual(config)


def test_config_mistakes_are_named(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import ChecksFailed
    from tuneforge.config import ConfigError

    base = {"method": "sft", "model": {"name": str(tiny_model_dir)}, "data": {"format": "chat"}}
    with pytest.raises(ConfigError, match="unique"):
        load_config(
            data={**base, "stages": [{"name": "a", "data": {"train": "x"}}, {"name": "a", "data": {"train": "y"}}]}
        )
    with pytest.raises(ConfigError, match=r"stages\[0\] \(a\)\.data: max_length"):
        load_config(data={**base, "stages": [{"name": "a", "data": {"train": "x", "max_length": 1}}]})
    with pytest.raises(ConfigError, match="continual: needs stages"):
        load_config(data={**base, "data": {"format": "chat", "train": "x"}, "continual": {"strategy": "replay"}})
    with pytest.raises(ConfigError, match="folder-safe"):
        load_config(data={**base, "stages": [{"name": "a/b", "data": {"train": "x"}}]})
    with pytest.raises(ChecksFailed, match="needs adapter: {type: lora"):
        run_continual(make_config(tmp_path, tiny_model_dir, "adapter", name="no-lora"))
    assert not (tmp_path / "runs" / "no-lora").exists()
    missing = make_config(tmp_path, tiny_model_dir, "naive", name="metric", continual={"metric": "rouge"})
    with pytest.raises(KeyError, match="continual.metric 'rouge'") as info:
        run_continual(missing)
    assert str(info.value).startswith("continual.metric 'rouge'")  # one plain line for the CLI, no quotes


def test_cli_validates_every_stage_and_refuses_several_processes(tmp_path, tiny_model_dir, isolated_cache, capsys):
    import yaml

    from tuneforge.cli import main

    config = make_config(tmp_path, tiny_model_dir, "replay", name="cli")
    raw = config.model_dump(mode="json", exclude_none=True)
    path = tmp_path / "continual.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s0:" in out and "s1:" in out and "s2:" in out and "valid" in out
    write_jsonl(tmp_path / "data" / "s1_train.jsonl", [{"messages": "not a list"}])  # a bad row in stage 2
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "stage s1" in err and "s1_train.jsonl:1" in err
    assert main(["train", str(path), "--num-processes", "2"]) != 0
    assert "one process" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "cli").exists()


def test_ewc_on_one_adapter_through_all_stages_resumes_between_stages(
    tmp_path, tiny_model_dir, isolated_cache, monkeypatch
):
    ref = run_continual(make_config(tmp_path, tiny_model_dir, "ewc", name="ref", adapter=True))
    fisher = load_file(str(ref.run_dir / "stages" / "1-s0" / "fisher.safetensors"))
    assert fisher and all("lora_" in name for name in fisher)  # the penalty acts on the adapter's weights
    assert (ref.run_dir / "stages" / "3-s2" / "output" / "adapter_config.json").exists()

    config = make_config(tmp_path, tiny_model_dir, "ewc", name="cut", adapter=True)
    original_stage = session_module.ContinualRun.stage

    def stage(self, k):
        if k == 1:
            raise RuntimeError("simulated crash before stage 2")
        return original_stage(self, k)

    with monkeypatch.context() as patch:
        patch.setattr(session_module.ContinualRun, "stage", stage)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_continual(config)
    resumed = run_continual(config, resume=True)
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_stage_restarted_without_a_checkpoint_logs_each_step_once(
    tmp_path, tiny_model_dir, isolated_cache, monkeypatch
):
    from tuneforge.methods.causal_lm import loss as step_module

    config = make_config(tmp_path, tiny_model_dir, "naive", name="crash")
    original = step_module.CausalLMLoss.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += self.training
        if self.training and calls["n"] == 2:  # step 2 of stage 1: step 1 is logged, no checkpoint yet
            raise RuntimeError("simulated crash in training")
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(step_module.CausalLMLoss, "forward", forward)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_continual(config)
    log = tmp_path / "runs" / "crash" / "stages" / "1-s0" / "metrics.jsonl"
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1]
    run_continual(config, resume=True)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]

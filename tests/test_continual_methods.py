"""Continual learning beyond sft: classify and cpt run through the same stage skeleton, resume
included; methods whose interface does not allow stages are refused by name."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import interrupt_in_stage, write_jsonl

from tuneforge.config import load_config
from tuneforge.continual.runner import run_continual
from tuneforge.training.loop import TrainingInterrupted

# Two domains with the same two labels: each stage has its own cue words (domain-incremental).
CUES = [{"good": "great", "bad": "awful"}, {"good": "lovely", "bad": "dreadful"}]


def _labelled(n: int, stage: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["bad", "good"][i % 2]  # balanced: a constant guess scores 0.5
        rows.append({"text": f"the thing was {CUES[stage][label]} {rng.randint(0, 99)}", "label": label})
    return rows


def classify_config(tmp_path, model_dir, *, name: str, labels=("bad", "good"), strategy="replay"):
    stages = []
    for k in range(2):
        train = write_jsonl(tmp_path / "data" / f"c{k}_train.jsonl", _labelled(24, k, 10 + k))
        held = write_jsonl(tmp_path / "data" / f"c{k}_eval.jsonl", _labelled(8, k, 20 + k))
        stages.append({"name": f"c{k}", "data": {"train": str(train), "eval": str(held)}})
    data = {"format": "classification", "max_length": 32}
    if labels is not None:
        data["labels"] = list(labels)
    return load_config(
        data={
            "method": "classify",
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(model_dir)},
            "data": data,
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 2e-2, "save_every": 2, "seed": 5},
            "eval": {"zero_shot_baseline": False, "batch_size": 8},
            "stages": stages,
            "continual": {"strategy": strategy, "replay": {"fraction": 0.25}},
        }
    )


def cpt_config(tmp_path, model_dir, *, name: str):
    stages = []
    for k, topic in enumerate(["river", "mountain"]):
        lines = [
            {"text": f"the {topic} {i} is {'wide' if k == 0 else 'high'} and {'cold' if i % 2 else 'calm'}"}
            for i in range(24)
        ]
        train = write_jsonl(tmp_path / "data" / f"t{k}_train.jsonl", lines[:18])
        held = write_jsonl(tmp_path / "data" / f"t{k}_eval.jsonl", lines[18:])
        stages.append({"name": topic, "data": {"train": str(train), "eval": str(held)}})
    return load_config(
        data={
            "method": "cpt",
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(model_dir)},
            "data": {"format": "text", "max_length": 32, "packing": False},
            "training": {"max_steps": 4, "batch_size": 2, "learning_rate": 5e-3, "save_every": 2, "seed": 2},
            "eval": {"scorers": [], "max_new_tokens": 2, "batch_size": 4},
            "stages": stages,
            "continual": {"strategy": "ewc", "metric": "eval_loss"},
        }
    )


def _assert_same_run(ref, resumed):
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    for a_row, b_row in zip(ref.summary["matrix"]["values"], resumed.summary["matrix"]["values"], strict=True):
        assert a_row == pytest.approx(b_row, abs=1e-5)


def test_classify_stages_train_one_classifier_and_resume_inside_a_stage(
    tmp_path, tiny_model_dir, isolated_cache, monkeypatch
):
    from tuneforge.methods.classify.losses import ClassifierLoss

    ref = run_continual(classify_config(tmp_path, tiny_model_dir, name="ref"))
    summary = json.loads((ref.run_dir / "summary.json").read_text())
    assert summary["method"] == "classify" and summary["metric"] == "accuracy"
    assert summary["matrix"]["rows"] == ["base", "c0", "c1"] and summary["matrix"]["columns"] == ["c0", "c1"]
    values = summary["matrix"]["values"]
    assert all(0.0 <= v <= 1.0 for row in values for v in row)
    assert values[1][0] > values[0][0]  # stage 1 learnt its own domain
    assert summary["stage_results"][1]["replayed_rows"] > 0  # stage 2 replayed stage 1's rows
    assert (ref.run_dir / "stages" / "2-c1" / "output" / "adapter_config.json").exists()

    config = classify_config(tmp_path, tiny_model_dir, name="cut")
    with monkeypatch.context() as patch:
        interrupt_in_stage(patch, ClassifierLoss, stage_index=1, micro_batch=3)
        with pytest.raises(TrainingInterrupted) as info:
            run_continual(config)
    assert info.value.checkpoint.name == "step-000003" and info.value.checkpoint.parent.parent.name == "2-c1"
    _assert_same_run(ref, run_continual(config, resume=True))


def test_cpt_stages_resume_between_and_inside_stages(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    from tuneforge.continual import session as session_module
    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    ref = run_continual(cpt_config(tmp_path, tiny_model_dir, name="ref"))
    assert ref.summary["method"] == "cpt" and ref.summary["matrix"]["rows"] == ["base", "river", "mountain"]
    assert ref.summary["matrix"]["values"][1][0] < ref.summary["matrix"]["values"][0][0]  # eval_loss fell

    config = cpt_config(tmp_path, tiny_model_dir, name="cut")
    original_stage = session_module.ContinualRun.stage

    def crash(self, k):  # between stages: stage 1 done and recorded, the process dies before stage 2
        if k == 1:
            raise RuntimeError("simulated crash before stage 2")
        return original_stage(self, k)

    with monkeypatch.context() as patch:
        patch.setattr(session_module.ContinualRun, "stage", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_continual(config)
    with monkeypatch.context() as patch:  # then inside stage 2
        interrupt_in_stage(patch, CausalLMLoss, stage_index=1, micro_batch=2)
        with pytest.raises(TrainingInterrupted):
            run_continual(config, resume=True)
    _assert_same_run(ref, run_continual(config, resume=True))


def test_classify_stages_need_one_label_set(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import ChecksFailed

    with pytest.raises(ChecksFailed, match=r"with method classify every stage trains the same head.*data: \{labels"):
        run_continual(classify_config(tmp_path, tiny_model_dir, name="nolabels", labels=None))
    assert not (tmp_path / "runs" / "nolabels").exists()


def test_methods_without_continual_support_are_refused_by_name(tmp_path, tiny_model_dir, capsys):
    from tuneforge.cli import main

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"say {i}"} for i in range(4)])
    (tmp_path / "rewards.py").write_text(
        "def short(prompts, responses, **_):\n    return [-len(r) for r in responses]\n"
    )
    config = tmp_path / "ppo.yaml"
    config.write_text(
        f"method: ppo\nmodel: {{name: {tiny_model_dir}}}\ndata: {{train: {prompts}}}\n"
        f"reward: {{sources: [{{function: '{tmp_path / 'rewards.py'}:short'}}]}}\n"
        f"stages: [{{name: a, data: {{train: {prompts}}}}}, {{name: b, data: {{train: {prompts}}}}}]\n"
    )
    capsys.readouterr()
    assert main(["validate", str(config)]) in (1, 2)
    err = " ".join(capsys.readouterr().err.split())
    assert "stages: method ppo cannot be trained in continual stages" in err
    assert "methods that can: cpt, sft, classify" in err and "Traceback" not in err

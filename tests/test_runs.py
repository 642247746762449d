"""Whole runs through the real train path on a tiny saved model: run folder, resume, signals, outputs."""

import json
import os
import signal

import pytest
import torch
from conftest import chat_rows, write_jsonl

from tuneforge.config import load_config
from tuneforge.runner import RunFolderExists, train_from_config
from tuneforge.training.loop import TrainingInterrupted


def make_config(tmp_path, model_dir, *, adapter=True, name="run", extra=None):
    train = write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(24, seed=1))
    evals = write_jsonl(tmp_path / "data" / "eval.jsonl", chat_rows(4, seed=2))
    raw = {
        "method": "sft",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {
            "max_steps": 6,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5e-3,
            "save_every": 2,
            "keep_checkpoints": 5,
            "seed": 3,
        },
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 8, "batch_size": 4, "samples_in_report": 2},
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}
    for key, value in (extra or {}).items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(data=raw)


def test_lora_run_writes_folder_and_adapter_loads_in_plain_peft(tmp_path, tiny_model_dir, isolated_cache):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = make_config(tmp_path, tiny_model_dir)
    result = train_from_config(config)
    run = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "report.html", "before.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"before", "after", "train"}
    for key in (
        "tokens_per_second",
        "tokens",
        "trainable_parameters",
        "total_parameters",
        "peak_memory_mb",
        "wall_seconds",
    ):
        assert key in summary["train"]
    assert "exact_match" in summary["before"] and "eval_loss" in summary["after"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]

    # Plain transformers + peft, no tuneforge: same logits as the trained model in memory.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    ids = torch.tensor([[5, 17, 60, 90, 33, 2]])
    trained = result.model.eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)

    # Frozen (base) parameters did not move; only LoRA tensors were trainable.
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    frozen = dict(fresh.named_parameters())
    trainable = 0
    for name, param in trained.named_parameters():
        if param.requires_grad:
            assert "lora_" in name
            trainable += 1
        else:
            base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(param.detach(), frozen[base_name].detach()), name
    assert trainable > 0


def test_every_trainable_parameter_changes(tmp_path, tiny_model_dir, isolated_cache):
    """Against the adapter's initial values (B = 0, A random): every LoRA tensor moved."""
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = make_config(tmp_path, tiny_model_dir)
    result = train_from_config(config)
    set_seed(config.training.seed)
    init = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    init_params = dict(init.named_parameters())
    for name, param in result.model.named_parameters():
        if param.requires_grad:
            assert not torch.allclose(param.detach(), init_params[name].detach()), f"{name} did not change"


def test_full_finetune_output_loads_in_transformers(tmp_path, tiny_model_dir, isolated_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config(tmp_path, tiny_model_dir, adapter=False, extra={"training": {"learning_rate": 1e-4}})
    result = train_from_config(config)
    assert result.output_dir.name == "model"
    loaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    AutoTokenizer.from_pretrained(result.output_dir)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 17, 60, 90]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(loaded(input_ids=ids).logits, fresh(input_ids=ids).logits)


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny_model_dir, isolated_cache):
    config = make_config(tmp_path, tiny_model_dir)
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(RunFolderExists, match="--resume"):
        train_from_config(config)
    assert (run / "precious.txt").read_text() == "keep me"


def test_sigint_leaves_checkpoint_and_resume_matches_uninterrupted(tmp_path, tiny_model_dir, isolated_cache):
    # Uninterrupted reference run.
    ref = train_from_config(make_config(tmp_path, tiny_model_dir, name="ref"))

    # Interrupted run: SIGINT arrives during step 3's forward pass.
    config = make_config(tmp_path, tiny_model_dir, name="cut")
    calls = {"n": 0}
    from tuneforge.methods.causal_lm import loss as step_module

    original = step_module.CausalLMLoss.forward

    def forward_with_signal(self, *args, **kwargs):
        calls["n"] += self.training  # held-out loss runs in eval mode and does not count
        if self.training and calls["n"] == 5:  # 2 micro-batches per step: the first micro-batch of step 3
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    step_module.CausalLMLoss.forward = forward_with_signal
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train_from_config(config)
    finally:
        step_module.CausalLMLoss.forward = original
    assert info.value.signal_name == "SIGINT"
    assert info.value.checkpoint.name == "step-000003"
    assert not (tmp_path / "runs" / "cut" / "adapter").exists()

    resumed = train_from_config(config, resume=True)
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    ref_metrics = [json.loads(x) for x in (ref.run_dir / "metrics.jsonl").read_text().splitlines()]
    cut_metrics = [json.loads(x) for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    ref_losses = {m["step"]: m["loss"] for m in ref_metrics if "loss" in m}
    cut_losses = {m["step"]: m["loss"] for m in cut_metrics if "loss" in m}
    assert ref_losses.keys() == cut_losses.keys()
    for k in ref_losses:
        assert ref_losses[k] == pytest.approx(cut_losses[k], abs=1e-5)


def test_rejected_config_leaves_no_run_folder(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import ChecksFailed

    config = make_config(tmp_path, tiny_model_dir, extra={"eval": {"scorers": ["exact_matchh"]}})
    with pytest.raises(ChecksFailed, match="exact_match"):
        train_from_config(config)
    assert not (tmp_path / "runs" / "run").exists()


def test_resume_refuses_other_adapter_shape_and_missing_checkpoint(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.training.checkpoint import CheckpointMismatch

    config = make_config(tmp_path, tiny_model_dir, name="shape")
    train_from_config(config)
    bigger = make_config(tmp_path, tiny_model_dir, name="shape")
    bigger = bigger.model_copy(update={"adapter": bigger.adapter.model_copy(update={"r": 8})})
    with pytest.raises(CheckpointMismatch, match="other shape"):
        train_from_config(bigger, resume=True)
    assert (tmp_path / "runs" / "shape" / "config.yaml").read_text().count("r: 4") == 1  # original config kept

    empty = tmp_path / "runs" / "fresh"
    empty.mkdir(parents=True)
    with pytest.raises(RunFolderExists, match="no checkpoint"):
        train_from_config(make_config(tmp_path, tiny_model_dir, name="fresh"), resume=True)


def test_pending_checkpoint_is_ignored_until_complete(tmp_path):
    import torch

    from tuneforge.training.checkpoint import latest_checkpoint, mark_complete, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    first = save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched, state={}, keep=1)
    second = save_checkpoint(tmp_path, 2, model=model, optimizer=None, scheduler=sched, state={}, keep=1, pending=True)
    assert latest_checkpoint(tmp_path) == first and first.exists()  # not pruned while step 2 is pending
    mark_complete(second, tmp_path, keep=1)
    assert latest_checkpoint(tmp_path) == second and not first.exists()


def test_eval_before_false_skips_the_base_model_evaluation(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    from tuneforge.methods.causal_lm import CausalLM

    calls = []
    original = CausalLM.evaluate

    def counting(self, model, ctx):
        calls.append(ctx.label)
        return original(self, model, ctx)

    monkeypatch.setattr(CausalLM, "evaluate", counting)
    result = train_from_config(
        make_config(
            tmp_path,
            tiny_model_dir,
            extra={"training": {"max_steps": 1, "save_every": None}, "eval": {"before": False}},
        )
    )
    assert calls == ["after"]
    assert result.summary["before"] == {} and result.summary["after"]

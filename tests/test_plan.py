"""The resource planner (planning/): its memory terms against what torch allocates on a tiny model,
the `plan` command, validate's warning, and the plan recorded in a run's summary.json."""

import json

import pytest
import torch
from conftest import chat_rows, write_jsonl

from tuneforge.config import load_config
from tuneforge.planning import memory as M
from tuneforge.planning.shapes import arch_of, count_params, quantized_bytes


def _config(tmp_path, model_dir, *, adapter=True, extra=None):
    train = write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(24, seed=1))
    evals = write_jsonl(tmp_path / "data" / "eval.jsonl", chat_rows(4, seed=2))
    raw = {
        "method": "sft",
        "name": "plan",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "mixed_precision": "no"},
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 4, "batch_size": 4, "num_samples": 2, "before": False},
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}
    for key, value in (extra or {}).items():
        raw[key] = {**raw.get(key, {}), **value}
    return load_config(data=raw)


def _lora(model, r=4):
    from tuneforge.adapters import attach_adapter
    from tuneforge.adapters.config import LoraConfig

    cfg = LoraConfig(type="lora", r=r, alpha=2 * r, target_modules="all-linear")
    return attach_adapter(model, cfg, task_type="CAUSAL_LM", total_steps=10).model


def _tiny(hidden=64, layers=2):
    from tiny import tiny_model

    model = tiny_model(259, layers=layers, hidden=hidden)
    model.train()
    return model


def _one_adamw_step(model) -> torch.optim.Optimizer:
    ids = torch.randint(0, 259, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("adapter", [True, False])
def test_parameter_gradient_and_adamw_bytes_equal_what_torch_allocates(adapter):
    model = _tiny()
    if adapter:
        model = _lora(model)
    params = count_params(model, storage_dtype=torch.float32, quantize=None, layers=2)
    optimizer = _one_adamw_step(model)
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    frozen = {id(p): p for p in model.parameters() if not p.requires_grad}.values()
    parts = {p.name: p.bytes for p in M.state_parts(params)}
    assert params.frozen_bytes == sum(p.nbytes for p in frozen)
    assert parts["trainable parameters"] == sum(p.nbytes for p in trainable)
    assert parts["gradients"] == sum(p.grad.nbytes for p in trainable)
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    assert parts["optimizer state"] == state
    assert params.head_trainable is (not adapter)


def _saved_activation_bytes(model, ids) -> int:
    """Bytes autograd saves for backward in the decoder trunk, each storage once, weights excluded."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            seen[s.data_ptr()] = s.nbytes()
        return t

    trunk = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trunk(input_ids=ids).last_hidden_state.sum()
    return sum(seen.values())


@pytest.mark.parametrize("adapter", [True, False])
def test_activation_formula_within_10_percent_of_saved_tensors(adapter):
    """The per-layer count (memory.py docstring) against autograd's saved tensors, B × T = 4 × 96."""
    model = _tiny(hidden=64, layers=3)
    if adapter:
        model = _lora(model, r=8)
    params = count_params(model, storage_dtype=torch.float32, quantize=None, layers=3)
    arch = arch_of(model.config)
    ids = torch.randint(0, 259, (4, 96))
    measured = _saved_activation_bytes(model, ids)
    planned = M.activation_bytes(arch, params, tokens=4 * 96, compute_bytes=4, checkpointing=False)
    assert abs(planned - measured) / measured < 0.10, (planned, measured)


@pytest.mark.parametrize("adapter", [True, False])
def test_checkpointed_activations_are_the_layer_inputs(adapter):
    model = _tiny(hidden=64, layers=3)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter:
        model = _lora(model, r=8)
    params = count_params(model, storage_dtype=torch.float32, quantize=None, layers=3)
    arch = arch_of(model.config)
    measured = _saved_activation_bytes(model, torch.randint(0, 259, (4, 96)))
    kept = M.checkpoint_inputs_bytes(arch, params, tokens=4 * 96)  # what the checkpoints keep during forward
    assert abs(kept - measured) / measured < 0.05, (kept, measured)
    # The plan adds one layer recomputed in backward on top: more than the inputs, far less than no checkpointing.
    with_ckpt = M.activation_bytes(arch, params, tokens=4 * 96, compute_bytes=4, checkpointing=True)
    without = M.activation_bytes(arch, params, tokens=4 * 96, compute_bytes=4, checkpointing=False)
    assert measured < with_ckpt < without / 2


def test_quantized_bytes_follow_bitsandbytes_layouts():
    assert quantized_bytes((64, 64), "8bit") == 64 * 64 + 4 * 64  # int8 + one fp32 scale per row
    # 4096 weights: 2048 bytes packed, 64 blocks of 64: 64 int8 absmax + one fp32 per 256 blocks
    assert quantized_bytes((64, 64), "4bit", double_quant=True) == 2048 + 64 + 4
    assert quantized_bytes((64, 64), "4bit", double_quant=False) == 2048 + 4 * 64


def test_plan_counts_rows_and_matches_the_dry_run(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.planning import build_plan

    plan = build_plan(_config(tmp_path, tiny_model_dir), device="cpu", precision="fp32")
    model = _lora(_tiny_from(tiny_model_dir))
    trainable = sum(p.nbytes for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
    parts = {p.name: p.bytes for p in plan.parts}
    assert parts["trainable parameters"] == trainable
    assert plan.step.source.startswith("counted")
    assert plan.step.steps == 2 and plan.step_seconds > 0 and plan.run_seconds == pytest.approx(2 * plan.step_seconds)


def _tiny_from(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def _write_yaml(tmp_path, config) -> str:
    from tuneforge.config import dump_config

    path = tmp_path / "plan.yaml"
    path.write_text(dump_config(config))
    return str(path)


def test_cli_plan_prints_the_table(tmp_path, tiny_model_dir, isolated_cache, capsys):
    from tuneforge.cli import main

    path = _write_yaml(tmp_path, _config(tmp_path, tiny_model_dir))
    assert main(["plan", path, "training.batch_size=4", "--processes", "2"]) == 0
    out = capsys.readouterr().out
    for word in (
        "weights (frozen)",
        "trainable parameters",
        "gradients",
        "optimizer state",
        "activations",
        "logits / loss",
        "peak",
        "per step",
        "fit:",
        "× 2 processes",
    ):
        assert word in out, word


def test_validate_warns_when_the_plan_does_not_fit(tmp_path, tiny_model_dir, isolated_cache, capsys, monkeypatch):
    from tuneforge.cli import main
    from tuneforge.planning import plan as plan_module

    path = _write_yaml(tmp_path, _config(tmp_path, tiny_model_dir))
    assert main(["validate", path]) == 0
    assert "plan:" not in capsys.readouterr().out
    monkeypatch.setattr(plan_module, "free_memory", lambda device: 1 << 20)  # 1 MiB free
    assert main(["validate", path]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "plan: this run needs about" in out and "1.0 MiB is free" in out


def test_run_summary_records_plan_beside_measurements(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.runner import train_from_config

    result = train_from_config(_config(tmp_path, tiny_model_dir))
    plan = json.loads((result.run_dir / "summary.json").read_text())["plan"]
    assert plan["planned"]["peak_memory_mb"] > 0 and plan["planned"]["step_seconds"] > 0
    assert plan["planned"]["memory_mb"]["activations"] > 0
    assert plan["measured"]["peak_memory_mb"] > 0 and plan["measured"]["step_seconds"] > 0
    assert plan["measured"]["steps"] == 2
    assert set(plan["error"]) == {"peak_memory", "step_seconds"}
    assert "Resource plan" in (result.run_dir / "report.html").read_text()


def test_a_failing_planner_never_fails_the_run(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    import tuneforge.planning as planning
    from tuneforge.runner import train_from_config

    def broken(*args, **kwargs):
        raise RuntimeError("planner bug")

    monkeypatch.setattr(planning, "build_plan", broken)
    result = train_from_config(_config(tmp_path, tiny_model_dir))
    plan = result.summary["plan"]
    assert plan["planned"] is None and "planner bug" in plan["problem"]

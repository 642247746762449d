"""training.mixed_precision: how `auto` decides on CPU, bf16 autocast training on a tiny model, validate's line."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import chat_rows, write_jsonl
from tiny import tiny_model

from tuneforge.training import precision
from tuneforge.training.engine import make_accelerator


@pytest.fixture(autouse=True)
def fresh_detection(monkeypatch):
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    precision.clear_cache()
    yield
    precision.clear_cache()


def _flags(monkeypatch, supported: bool):
    why = "CPU has avx512_bf16" if supported else "CPU has no AVX512-BF16/AMX-BF16"
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: (supported, why))


def _speedup(monkeypatch, value):
    def measure(*args, **kwargs):
        if value is None:
            raise AssertionError("bf16 must not even be timed on a CPU without bf16 support")
        return value

    monkeypatch.setattr(precision, "measure_cpu_bf16_speedup", measure)


def test_auto_is_fp32_when_the_cpu_lacks_bf16(monkeypatch):
    _flags(monkeypatch, False)
    _speedup(monkeypatch, None)
    choice = precision.resolve_precision("auto", cpu=True)
    assert choice.choice == "no" and "no AVX512-BF16" in choice.reason
    accelerator = make_accelerator(mixed_precision="auto", cpu=True)
    assert accelerator.mixed_precision == "no" and accelerator.precision == choice


def test_auto_is_bf16_only_when_measured_clearly_faster(monkeypatch):
    _flags(monkeypatch, True)
    _speedup(monkeypatch, 2.4)
    fast = precision.resolve_precision("auto", cpu=True)
    assert fast.choice == "bf16" and "2.4× fp32" in fast.reason
    precision.clear_cache()
    _speedup(monkeypatch, 1.1)  # flags say bf16, but it is not clearly faster here
    slow = precision.resolve_precision("auto", cpu=True)
    assert slow.choice == "no" and "1.1×" in slow.reason and "1.3×" in slow.reason
    monkeypatch.setenv(precision.ENV_OVERRIDE, "1")
    assert precision.resolve_precision("auto", cpu=True).choice == "bf16"
    monkeypatch.setenv(precision.ENV_OVERRIDE, "0")
    assert precision.resolve_precision("auto", cpu=True).choice == "no"


def test_the_real_detection_is_cached_and_consistent_with_the_flags():
    # (its cost, ~0.1 s, is measured in training/precision.py's docstring, not asserted: no timing in tests)
    first = precision.resolve_precision("auto", cpu=True)
    assert precision.resolve_precision("auto", cpu=True) is first  # cached: measured once per process
    if not precision.cpu_bf16_flags()[0]:
        assert first.choice == "no"


def test_explicit_choices_pass_through():
    assert precision.resolve_precision("no", cpu=True).choice == "no"
    assert precision.resolve_precision("bf16", cpu=True).choice == "bf16"


def _batch(seed=0, rows=4, length=48):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, :8] = -100  # a prompt part without loss, as in SFT
    return {"input_ids": ids, "labels": labels, "position_ids": torch.arange(length).expand(rows, length)}


def _train(mixed_precision: str, steps: int = 8):
    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    accelerator = make_accelerator(mixed_precision=mixed_precision, cpu=True)
    model = tiny_model(seed=0, hidden=64)
    loss_model = CausalLMLoss(model)
    optimizer = torch.optim.AdamW(loss_model.parameters(), lr=3e-3)
    loss_model, optimizer = accelerator.prepare(loss_model, optimizer)
    seen = {}
    first_linear = model.model.layers[0].self_attn.q_proj

    def record(module, inputs, output):
        seen.setdefault("linear_out", output.dtype)

    hook = first_linear.register_forward_hook(record)
    losses = []
    for step in range(steps):
        loss_sum, count = loss_model(**_batch(seed=step % 2))
        loss = loss_sum / count
        accelerator.backward(loss)
        seen.setdefault("grad", next(loss_model.parameters()).grad.dtype)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    hook.remove()
    return losses, loss, model, optimizer, seen


def test_bf16_autocast_losses_track_fp32_and_master_state_stays_fp32():
    fp32_losses, _, _, _, fp32_seen = _train("no")
    bf16_losses, last_loss, model, optimizer, seen = _train("bf16")
    assert fp32_seen["linear_out"] == torch.float32
    # Autocast is really on: a Linear inside the forward returns bf16 ...
    assert seen["linear_out"] == torch.bfloat16
    # ... while the loss is fp32, and weights, gradients and AdamW's moments stay fp32.
    assert last_loss.dtype == torch.float32
    assert seen["grad"] == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    states = [s for s in optimizer.state.values() if s]
    assert states and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in states)
    # Tolerance 0.5 % of the loss per step: bf16 keeps 8 significant bits (a relative rounding of up to
    # 2^-9 ≈ 0.2 % per matmul input, errors that mostly average out over the 64-wide dot products), the
    # loss is summed in fp32, and 8 AdamW steps at lr 3e-3 let the two runs drift apart a little. Seen
    # here: ≤ 0.014 % (loss 5.57 → 4.83). 0.5 % leaves room for other CPUs' bf16 kernels and still
    # catches a broken path: a wrong gradient or a loss computed in bf16 (~0.4 % per value) goes past it.
    assert bf16_losses == pytest.approx(fp32_losses, rel=5e-3)
    assert fp32_losses[-1] < fp32_losses[0] - 0.3 and bf16_losses[-1] < bf16_losses[0] - 0.3  # both learn


def test_fused_linear_cross_entropy_under_bf16_autocast():
    """The chunked projection + loss runs its matmuls in bf16 under autocast, with an fp32 loss and
    gradients equal to the unfused autocast path (bf16 logits → float → cross-entropy)."""
    from tuneforge.training import linear_ce

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 64, generator=g, requires_grad=True)
    weight = (torch.randn(1000, 64, generator=g) * 0.2).requires_grad_()
    targets = torch.randint(0, 1000, (300,), generator=g)

    def run(fn, autocast):
        hidden.grad = weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn()
        loss.backward()
        return loss.detach(), hidden.grad.clone(), weight.grad.clone()

    unfused = lambda: F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")  # noqa: E731
    fused = lambda: linear_ce.linear_cross_entropy(hidden, weight, targets)  # noqa: E731
    old_chunk = linear_ce.CHUNK_ELEMENTS
    linear_ce.CHUNK_ELEMENTS = 2**14  # several chunks
    try:
        reference32 = run(unfused, False)
        reference16 = run(unfused, True)
        got = run(fused, True)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            eval_loss = linear_ce.linear_cross_entropy(hidden, weight, targets)
    finally:
        linear_ce.CHUNK_ELEMENTS = old_chunk
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.float32

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    # Same bf16 rounding as the unfused autocast path (the weight gradient is summed over chunks in fp32,
    # so it differs in summation order only) ...
    assert rel(got[0], reference16[0]) < 1e-6 and rel(got[1], reference16[1]) < 1e-4
    assert rel(got[2], reference16[2]) < 1e-2
    assert eval_loss == pytest.approx(got[0].item(), rel=1e-6)
    # ... which really is bf16 (differs from fp32), yet within bf16 rounding of the fp32 result.
    assert 0 < rel(got[1], reference32[1]) < 1e-2 and rel(got[2], reference32[2]) < 1e-2
    assert got[0].item() == pytest.approx(reference32[0].item(), rel=1e-3)


def _write_config(tmp_path, model_dir, **training):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(12, seed=1))
    evals = write_jsonl(tmp_path / "eval.jsonl", chat_rows(3, seed=2))
    config = {
        "method": "sft",
        "name": "prec",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {"max_steps": 2, "batch_size": 4, **training},
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 4, "batch_size": 4, "before": False},
    }
    path = tmp_path / "prec.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_validate_says_which_precision_and_why(tmp_path, tiny_model_dir, isolated_cache, capsys, monkeypatch):
    from tuneforge.cli import main

    _flags(monkeypatch, False)
    _speedup(monkeypatch, None)
    assert main(["validate", str(_write_config(tmp_path, tiny_model_dir))]) == 0
    out = capsys.readouterr().out
    assert "✓ precision fp32 (CPU has no AVX512-BF16/AMX-BF16" in out
    # Explicit bf16 is allowed on CPU now, with a warning where the CPU would emulate it.
    assert main(["validate", str(_write_config(tmp_path, tiny_model_dir, mixed_precision="bf16"))]) == 0
    out = capsys.readouterr().out
    assert "✓ precision bf16 autocast (training.mixed_precision: bf16" in out
    assert "emulated and very slow" in out
    # fp16 autocast has no CPU path: still an error.
    assert main(["validate", str(_write_config(tmp_path, tiny_model_dir, mixed_precision="fp16"))]) == 1
    assert "'fp16' needs a CUDA GPU" in capsys.readouterr().err


def test_launch_check_allows_bf16_on_cpu_but_not_fp16():
    from pathlib import Path

    from tuneforge.config import load_config
    from tuneforge.distributed import LaunchSetup, check_launch

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    bf16 = LaunchSetup(
        path="cpu.yaml",
        distributed_type="MULTI_CPU",
        num_processes=2,
        num_machines=1,
        mixed_precision="bf16",
        use_cpu=True,
    )
    assert check_launch(bf16, config, cuda_available=False) == []
    fp16 = LaunchSetup(
        path="cpu.yaml",
        distributed_type="MULTI_CPU",
        num_processes=2,
        num_machines=1,
        mixed_precision="fp16",
        use_cpu=True,
    )
    (problem,) = check_launch(fp16, config, cuda_available=False)
    assert "fp16 needs CUDA" in problem


def test_bf16_run_records_precision_and_saves_an_fp32_adapter(tmp_path, tiny_model_dir, isolated_cache):
    from safetensors.torch import load_file

    from tuneforge.config import load_config
    from tuneforge.runner import train_from_config

    config = load_config(_write_config(tmp_path, tiny_model_dir, mixed_precision="bf16"))
    result = train_from_config(config)
    assert result.summary["precision"]["mixed_precision"] == "bf16"
    assert result.summary["precision"]["label"] == "bf16 autocast"
    saved = json.loads((result.run_dir / "summary.json").read_text())
    assert saved["precision"] == result.summary["precision"]
    weights = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    # The next run in the same process may resolve to another precision (accelerate keeps one state).
    assert make_accelerator(mixed_precision="no", cpu=True).mixed_precision == "no"


def test_yaml_no_means_the_option_no(tmp_path):
    """`mixed_precision: no` in YAML (and `training.mixed_precision=no` on the command line) parse as false."""
    import yaml

    from tuneforge.config.schema import TrainingConfig

    raw = yaml.safe_load("mixed_precision: no")
    assert raw["mixed_precision"] is False
    assert TrainingConfig(**raw).mixed_precision == "no"

"""Engine invariants on a tiny model: accumulation, loss-position projection, schedules."""

import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tiny import tiny_model

from tuneforge.data.types import IGNORE_INDEX, PackedRow
from tuneforge.methods.causal_lm import collate_rows
from tuneforge.methods.causal_lm.loss import CausalLMLoss
from tuneforge.training.loop import LoopSettings, train_loop
from tuneforge.training.optim import build_optimizer, build_scheduler, lr_lambda
from tuneforge.training.step import NonFiniteLossError


def make_rows(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 6 + (i * 5) % 17
        ids = torch.randint(3, 250, (length,), generator=g).tolist()
        prompt = 2 + i % 4
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        rows.append(PackedRow(input_ids=ids, labels=labels, position_ids=list(range(length))))
    return rows


def run_steps(rows, *, batch_size, accum, steps=1, lr=0.5, tmp_path, seed=0):
    model = tiny_model(seed=seed)
    loss_model = CausalLMLoss(model)
    accelerator = Accelerator(cpu=True)
    # Plain SGD: the update is linear in the gradient, so equal gradients give equal weights
    # (Adam's first step is ~lr·sign(g) and magnifies float noise where g ≈ 0).
    opt = torch.optim.SGD(loss_model.parameters(), lr=lr)
    sched = build_scheduler(opt, kind="constant", warmup_steps=0, total_steps=steps)
    settings = LoopSettings(
        batch_size=batch_size,
        gradient_accumulation_steps=accum,
        total_steps=steps,
        seed=1,
        max_grad_norm=None,
        save_every=None,
        keep_checkpoints=1,
        log_every=1,
        eval_every=None,
    )
    result = train_loop(
        loss_model=loss_model,
        optimizer=opt,
        scheduler=sched,
        accelerator=accelerator,
        rows=rows,
        collate=lambda rs: collate_rows(rs, 2),
        settings=settings,
        run_dir=tmp_path,
        start_state={},
    )
    return model, result


def test_loss_matches_full_logits_cross_entropy():
    """Projecting only loss positions gives the same loss as HF's full-logits path."""
    rows = make_rows(4)
    model = tiny_model()
    batch = collate_rows(rows, pad_id=2).inputs
    loss_sum, n = CausalLMLoss(model)(batch["input_ids"], batch["labels"], batch["position_ids"])
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    ref = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    assert int(n) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(loss_sum, ref, atol=1e-4)


def test_accumulation_invariance(tmp_path):
    """Batch 8 × 1 step and batch 1 × 8 accumulation give the same update (token-weighted)."""
    rows = make_rows(8)
    a, ra = run_steps(rows, batch_size=8, accum=1, tmp_path=tmp_path / "a")
    b, rb = run_steps(rows, batch_size=1, accum=8, tmp_path=tmp_path / "b")
    assert ra.final_loss == pytest.approx(rb.final_loss, abs=1e-5)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name
    # Two steps too (the second uses rows 8..15 of the global order in both setups).
    rows16 = make_rows(16)
    a2, _ = run_steps(rows16, batch_size=4, accum=2, steps=2, tmp_path=tmp_path / "a2")
    b2, _ = run_steps(rows16, batch_size=2, accum=4, steps=2, tmp_path=tmp_path / "b2")
    for (name, pa), (_, pb) in zip(a2.named_parameters(), b2.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name
    # And the update is not trivially zero: the model moved.
    fresh = tiny_model()
    assert not torch.allclose(fresh.model.embed_tokens.weight, a.model.embed_tokens.weight)


def test_per_microbatch_mean_would_differ(tmp_path):
    """Guard: averaging per micro-batch (the classic bug) does give another loss here."""
    rows = make_rows(8)
    model = tiny_model()
    lm = CausalLMLoss(model)
    per_mb = []
    total_sum, total_n = 0.0, 0
    for r in rows:
        s, n = lm(**collate_rows([r], 2).inputs)
        per_mb.append(float(s) / int(n))
        total_sum += float(s)
        total_n += int(n)
    assert abs(sum(per_mb) / len(per_mb) - total_sum / total_n) > 1e-3


def test_nonfinite_loss_stops_with_step(tmp_path):
    rows = make_rows(8)
    model = tiny_model()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        if calls["n"] >= 3:
            return output * float("nan")
        return output

    model.model.norm.register_forward_hook(poison)  # the last hidden states turn NaN at step 3
    loss_model = CausalLMLoss(model)
    accelerator = Accelerator(cpu=True)
    opt = build_optimizer(loss_model, learning_rate=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    sched = build_scheduler(opt, kind="constant", warmup_steps=0, total_steps=5)
    settings = LoopSettings(
        batch_size=8,
        gradient_accumulation_steps=1,
        total_steps=5,
        seed=1,
        max_grad_norm=1.0,
        save_every=1,
        keep_checkpoints=5,
        log_every=1,
        eval_every=None,
    )
    with pytest.raises(NonFiniteLossError) as info:
        train_loop(
            loss_model=loss_model,
            optimizer=opt,
            scheduler=sched,
            accelerator=accelerator,
            rows=rows,
            collate=lambda rs: collate_rows(rs, 2),
            settings=settings,
            run_dir=tmp_path,
            start_state={},
        )
    assert info.value.step == 3
    assert "step 3" in str(info.value)
    # The last good checkpoint (step 2) is kept and holds finite weights; no checkpoint of the bad step.
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000001", "step-000002"]
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_schedules():
    cos = lr_lambda("cosine", warmup_steps=2, total_steps=10)
    assert cos(0) == pytest.approx(0.5) and cos(1) == pytest.approx(1.0)
    assert cos(2) == pytest.approx(1.0)
    assert cos(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    lin = lr_lambda("linear", warmup_steps=0, total_steps=10)
    assert lin(5) == pytest.approx(0.5)
    assert lr_lambda("constant", warmup_steps=0, total_steps=10)(9) == 1.0

"""Continual learning's parts, each against a value worked out by hand or computed directly."""

from dataclasses import dataclass

import pytest
import torch

from tuneforge.continual import penalties
from tuneforge.continual.replay import ReservoirBuffer, mix_replay, replay_count
from tuneforge.continual.wise_ft import interpolated, lora_a_names, sweep


@dataclass
class Row:
    input_ids: list
    stage: str = ""
    index: int = 0


def rows(stage: str, n: int, length: int = 4) -> list[Row]:
    return [Row(input_ids=[1] * length, stage=stage, index=i) for i in range(n)]


def filled(stage: str, items: list, capacity: int = 1000, seed: int = 0) -> ReservoirBuffer:
    buffer = ReservoirBuffer(capacity, seed)
    buffer.extend(items)
    return buffer


# ---------------------------------------------------------------- replay


def test_replay_by_examples_gives_the_fraction_exactly_over_an_epoch():
    assert replay_count(90, 0.1) == 10  # r/(1−r)·N = 0.1/0.9·90
    assert replay_count(75, 0.25) == 25
    buffers = {"a": filled("a", rows("a", 40)), "b": filled("b", rows("b", 40))}
    mix = mix_replay(rows("c", 90), buffers, fraction=0.1, by="examples", seed=1)
    assert len(mix.rows) == 100 and mix.replayed == 10
    assert mix.fraction == pytest.approx(0.1, abs=0)
    assert sum(r.stage != "c" for r in mix.rows) == 10
    assert mix.per_stage == {"a": 5, "b": 5}  # earlier stages share evenly
    replayed = [r for r in mix.rows if r.stage != "c"]
    assert len({(r.stage, r.index) for r in replayed}) == 10  # no repeats while a buffer lasts


def test_replay_by_tokens_reaches_the_token_share_within_one_row():
    new = [Row(input_ids=[1] * n) for n in (5, 9, 13, 7) * 10]
    old = [Row(input_ids=[1] * n, stage="a") for n in (3, 11, 6)] * 10
    mix = mix_replay(new, {"a": filled("a", old)}, fraction=0.2, by="tokens", seed=0)
    budget = 0.2 / 0.8 * mix.new_tokens
    assert budget <= mix.replayed_tokens < budget + 11  # stops at the row that reaches the budget
    assert mix.token_fraction == pytest.approx(0.2, abs=0.02)


def test_replay_draws_only_from_the_buffers_it_is_given_and_none_on_the_first_stage():
    first = mix_replay(rows("a", 10), {}, fraction=0.5, by="examples", seed=0)
    assert first.replayed == 0 and len(first.rows) == 10
    mix = mix_replay(rows("c", 30), {"a": filled("a", rows("a", 3))}, fraction=0.5, by="examples", seed=0)
    assert {r.stage for r in mix.rows} == {"a", "c"}
    assert mix.replayed == 30  # a 3-row buffer is cycled, not padded with other stages' rows


def test_reservoir_buffer_is_bounded_and_uniform():
    buffer = filled("a", list(range(1000)), capacity=10, seed=0)
    assert len(buffer.items) == 10 and buffer.seen == 1000
    counts = [0] * 100
    trials = 4000
    for seed in range(trials):
        for item in filled("a", list(range(100)), capacity=10, seed=seed).items:
            counts[item] += 1
    # Each of the 100 items is kept with probability 10/100; sd of the frequency ≈ 0.0047.
    freqs = [c / trials for c in counts]
    assert max(abs(f - 0.1) for f in freqs) < 0.025
    early, late = sum(freqs[:50]), sum(freqs[50:])
    assert early == pytest.approx(late, rel=0.05)  # no bias towards the start or the end of the stream


def test_reservoir_is_reproducible_and_refuses_zero_capacity():
    a = filled("a", list(range(500)), capacity=7, seed=3).items
    b = filled("a", list(range(500)), capacity=7, seed=3).items
    assert a == b
    with pytest.raises(ValueError):
        ReservoirBuffer(0, seed=0)


# ---------------------------------------------------------------- L2 / EWC


def test_l2_and_ewc_are_zero_at_the_anchor_and_match_hand_values():
    theta = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5]])}
    anchor = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5]])}
    fisher = {"w": torch.tensor([2.0, 0.0, 1.0]), "b": torch.tensor([[4.0]])}
    assert float(penalties.l2_penalty(theta, anchor, 3.0)) == 0
    assert float(penalties.ewc_penalty(theta, anchor, fisher, 3.0)) == 0
    moved = {"w": torch.tensor([2.0, 0.0, 3.5]), "b": torch.tensor([[0.0]])}
    # L2: λ/2 · (1 + 4 + 0.25 + 0.25) = 1.5 · 5.5
    assert float(penalties.l2_penalty(moved, anchor, 3.0)) == pytest.approx(8.25)
    # EWC: λ/2 · (2·1 + 0·4 + 1·0.25 + 4·0.25) = 1.5 · 3.25
    assert float(penalties.ewc_penalty(moved, anchor, fisher, 3.0)) == pytest.approx(4.875)


def test_normalized_fisher_has_mean_one():
    fisher = {"a": torch.tensor([1e-6, 3e-6]), "b": torch.tensor([[2e-6, 2e-6]])}
    norm = penalties.normalized(fisher)
    assert float(sum(f.sum() for f in norm.values())) / 4 == pytest.approx(1.0)
    assert float(norm["a"][1] / norm["a"][0]) == pytest.approx(3.0)


def _tiny_lm_loss(seed: int = 0):
    from tiny import tiny_model

    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    torch.manual_seed(seed)
    model = tiny_model(300)
    return model, CausalLMLoss(model, packed_attention="mask")


def _lm_row(seed: int, length: int = 9):
    from tuneforge.data.types import PackedRow

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (length,), generator=g).tolist()
    labels = [-100, -100] + ids[2:]
    return PackedRow(input_ids=ids, labels=labels, position_ids=list(range(length)))


def test_fisher_equals_the_mean_squared_per_row_gradient_computed_directly():
    from tuneforge.methods.causal_lm import collate_rows

    model, loss = _tiny_lm_loss()
    data = [_lm_row(s, 7 + s) for s in range(3)]
    collate = lambda batch: collate_rows(batch, 2)  # noqa: E731
    fisher = penalties.diagonal_fisher(loss, data, collate, params=penalties.trainable_parameters(model))

    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for row in data:
        ids = torch.tensor([row.input_ids])
        labels = torch.tensor([row.labels])
        logits = model(input_ids=ids).logits[0, :-1]
        target = labels[0, 1:]
        keep = target != -100
        nll = torch.nn.functional.cross_entropy(logits[keep], target[keep])  # mean over the row's loss tokens
        grads = torch.autograd.grad(nll, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                expected[n] += g**2
    for n in params:
        assert torch.allclose(fisher[n], expected[n] / 3, rtol=1e-4, atol=1e-12), n
    assert all(p.grad is None for p in params.values())  # leaves no gradients behind


def test_penalised_loss_adds_the_penalty_once_per_step_whatever_the_accumulation():
    class Sum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(2, 1, bias=False)

        def forward(self, x):
            return self.model(x).sum(), x.shape[0]

    inner = Sum()
    anchor = {n: p.detach().clone() + 0.5 for n, p in inner.model.named_parameters()}
    params = dict(inner.model.named_parameters())
    loss = penalties.PenalisedLoss(inner, lambda: penalties.l2_penalty(params, anchor, 2.0))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    whole_sum, whole_count = loss(x=x)
    parts = [loss(x=x[:1]), loss(x=x[1:])]
    accumulated = sum(s for s, _ in parts) / sum(c for _, c in parts)
    expected = inner.model(x).sum() / 4 + 2.0 / 2 * 2 * 0.25  # mean loss + λ/2 · Σ 0.5²
    assert float((whole_sum / whole_count).detach()) == pytest.approx(float(expected.detach()))
    assert float(accumulated.detach()) == pytest.approx(float(expected.detach()))
    assert loss.model is inner.model
    loss.eval()
    assert float(loss(x=x)[0].detach()) == pytest.approx(
        float(inner.model(x).sum().detach())
    )  # held-out loss: no penalty


# ---------------------------------------------------------------- O-LoRA


def _two_adapter_model():
    from peft import LoraConfig, get_peft_model
    from tiny import tiny_model

    torch.manual_seed(0)
    model = get_peft_model(
        tiny_model(300), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]), adapter_name="old"
    )
    model.add_adapter("new", LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    return model


def test_olora_penalty_is_zero_for_orthogonal_subspaces_and_hand_valued_otherwise():
    model = _two_adapter_model()
    pairs = penalties.lora_pairs(model, "new", ["old"])
    assert len(pairs) == 2  # one q_proj per layer of the tiny model
    with torch.no_grad():
        for a_old, a_new in pairs:
            width = a_old.shape[1]
            a_old.copy_(torch.eye(width)[:2] * 3.0)  # rows e0, e1
            a_new.copy_(torch.eye(width)[2:4] * 5.0)  # rows e2, e3
    assert float(penalties.olora_penalty(model, "new", ["old"], orthogonality=0.5)) == 0
    with torch.no_grad():
        for _, a_new in pairs:
            a_new.copy_(torch.eye(a_new.shape[1])[1:3] * -5.0)  # shares e1 with the old adapter
    # per layer: A_old A_newᵀ = [[0, 0], [-15, 0]] → Σ|·| = 15; two layers; λ1 = 0.5
    assert float(penalties.olora_penalty(model, "new", ["old"], orthogonality=0.5)) == pytest.approx(15.0)
    new_params = [p.requires_grad_(True) for n, p in model.named_parameters() if ".new." in n]  # it trains
    l2 = float(sum((p**2).sum() for p in new_params))
    got = float(penalties.olora_penalty(model, "new", ["old"], orthogonality=0.0, l2=0.1))
    assert got == pytest.approx(0.1 * l2)


def test_olora_penalty_pushes_only_the_new_adapter():
    model = _two_adapter_model()
    for p in model.parameters():
        p.requires_grad_(True)
    penalties.olora_penalty(model, "new", ["old"], orthogonality=0.5).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_A" in n}
    assert all(g is None or not g.any() for n, g in grads.items() if ".old." in n)
    assert any(g is not None and g.any() for n, g in grads.items() if ".new." in n)


# ---------------------------------------------------------------- WiSE-FT


def test_interpolation_hits_both_ends_and_restores_the_weights_exactly():
    w = torch.nn.Parameter(torch.tensor([1.0, 4.0]))
    params = {"w": w}
    start = {"w": torch.tensor([3.0, 0.0])}
    with interpolated(params, start, 0.0):
        assert torch.equal(w.detach(), start["w"])
    with interpolated(params, start, 0.25):
        assert torch.allclose(w.detach(), torch.tensor([2.5, 1.0]))
    assert torch.equal(w.detach(), torch.tensor([1.0, 4.0]))
    seen = sweep(params, start, [0.0, 0.5, 1.0], lambda: (float(w[0]), float(w[1])))
    assert seen == {"alphas": [0.0, 0.5, 1.0], "new": [3.0, 2.0, 1.0], "old": [0.0, 2.0, 4.0]}


def test_a_fresh_lora_adapter_is_scaled_by_alpha():
    start = {"x.lora_A.s2.weight": torch.randn(2, 4), "x.lora_B.s2.weight": torch.zeros(4, 2)}
    a = torch.nn.Parameter(torch.randn(2, 4))
    b = torch.nn.Parameter(torch.randn(4, 2))
    params = {"x.lora_A.s2.weight": a, "x.lora_B.s2.weight": b}
    keep = lora_a_names(params, start)
    assert keep == {"x.lora_A.s2.weight"}
    delta = (b @ a).detach()
    with interpolated(params, start, 0.3, keep):
        assert torch.allclose((b @ a).detach(), 0.3 * delta, atol=1e-6)  # ΔW(α) = α·ΔW

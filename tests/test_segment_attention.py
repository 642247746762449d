"""Per-segment attention for packed rows (models/segment_attention.py): same outputs and gradients as the
dense block-diagonal mask, the boundaries it and flash-attention receive, and when auto picks it."""

import random

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model

from tuneforge.data import IGNORE_INDEX, Example, collate, pack
from tuneforge.data.collate import segment_boundaries
from tuneforge.methods.causal_lm.loss import CausalLMLoss
from tuneforge.models import segment_attention as sa


def examples(lengths, seed=0):
    rng = random.Random(seed)
    out = []
    for n, length in enumerate(lengths):
        ids = [rng.randrange(3, 259) for _ in range(length)]
        out.append(Example(ids, [IGNORE_INDEX] + ids[1:], f"x:{n}"))
    return out


def test_boundaries_mark_every_example_row_start_and_padding_tail():
    rows = pack(examples([5, 3, 4]), max_length=9, packing=True)  # best fit: [5, 4] and [3]
    batch = collate(rows, pad_id=2)
    assert batch["input_ids"].shape == (2, 9)
    # row 0: examples of 5 and 4 (positions 0..4, 0..3); row 1: 3 real + a 6-token padding tail
    assert batch["cu_seq_lens"].tolist() == [0, 5, 9, 12, 18]
    assert batch["cu_seq_lens"].dtype == torch.int32
    # a row filled exactly has no padding segment
    full = collate(pack(examples([4, 4]), max_length=8, packing=True), pad_id=2)
    assert full["cu_seq_lens"].tolist() == [0, 4, 8]


def test_boundaries_refuse_rows_that_do_not_start_at_zero():
    with pytest.raises(ValueError, match="start at position 0"):
        segment_boundaries(torch.tensor([[1, 2, 0, 1]]))


def test_bucket_lengths_pad_little():
    assert [sa.bucket_length(n) for n in (1, 16, 17, 100, 128, 129, 144, 145, 256, 257, 511, 512, 513)] == [
        16,
        16,
        32,
        112,
        128,
        144,
        144,
        160,
        256,
        288,
        512,
        512,
        576,
    ]
    for n in range(1, 3000):
        assert n <= sa.bucket_length(n) <= n + max(15, n // 8) and sa.bucket_length(n) % 16 == 0


def random_qkv(batch, t, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, t, dim, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(batch, kv_heads, t, dim, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(batch, kv_heads, t, dim, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v


def dense_reference(q, k, v, position_ids):
    """Masked SDPA with the block-diagonal causal mask transformers builds from restarting positions."""
    seg = (position_ids == 0).cumsum(-1)  # (B, T) segment number within the row
    t = position_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    mask = (seg[:, :, None] == seg[:, None, :]) & causal  # (B, T, T)
    rep = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask[:, None]
    )
    return out.transpose(1, 2)  # (B, T, H, D)


class _Module(torch.nn.Module):
    pass


@pytest.mark.parametrize("layout", ["one segment", "many tiny", "mixed with padding"])
def test_attention_function_equals_masked_sdpa_with_gradients(layout):
    positions = {
        "one segment": [list(range(20)), list(range(20))],
        "many tiny": [[0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2, 3, 0, 0, 1, 2, 0, 1, 0]] * 2,
        "mixed with padding": [list(range(13)) + list(range(7)), list(range(3)) + list(range(9)) + list(range(8))],
    }[layout]
    position_ids = torch.tensor(positions)
    q, k, v = random_qkv(2, 20)
    cu = segment_boundaries(position_ids)
    out, _ = sa.segment_attention(_Module().eval(), q, k, v, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    ref = dense_reference(q, k, v, position_ids)
    assert out.shape == ref.shape == (2, 20, 4, 8)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def packed_batch(lengths, max_length):
    rows = pack(examples(lengths, seed=1), max_length=max_length, packing=True)
    return collate(rows, pad_id=2)


@pytest.mark.parametrize(
    "lengths,max_length",
    [
        ([7, 5, 9, 4, 6, 3, 2, 1, 11], 16),  # many segments + padding
        ([30, 30], 32),  # one segment per row, padding tails
        ([2] * 12, 8),
    ],
)  # many tiny segments, full rows
def test_model_loss_and_gradients_equal_the_mask_path(lengths, max_length):
    model = tiny_model().double()
    batch = packed_batch(lengths, max_length)
    results = {}
    for mode in ("segments", "mask"):
        model.zero_grad()
        loss_module = CausalLMLoss(model, packed_attention=mode)
        loss_sum, count = loss_module(**batch)
        loss_sum.backward()
        assert loss_module._mode == mode
        results[mode] = (loss_sum.detach(), count, {n: p.grad.clone() for n, p in model.named_parameters()})
    seg, mask = results["segments"], results["mask"]
    torch.testing.assert_close(seg[0], mask[0], rtol=1e-10, atol=1e-10)
    assert seg[1] == mask[1]
    for name, grad in seg[2].items():
        torch.testing.assert_close(grad, mask[2][name], rtol=1e-9, atol=1e-10, msg=name)


def test_packed_segments_equal_unpacked_examples():
    """Isolation in absolute terms: each example's loss alone (one row each) sums to the packed loss."""
    model = tiny_model().double()
    items = examples([7, 5, 9, 4, 6, 3], seed=2)
    packed = collate(pack(items, max_length=16, packing=True), pad_id=2)
    alone = collate(pack(items, max_length=16, packing=False), pad_id=2)
    with torch.no_grad():
        got, n = CausalLMLoss(model, packed_attention="segments")(**packed)
        want, m = CausalLMLoss(model, packed_attention="mask")(**alone)
    assert n == m
    # the chunked loss (training/linear_ce.py) sums in float32, in another order for other row shapes
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_boundaries_are_derived_when_the_batch_has_none():
    model = tiny_model().double()
    batch = packed_batch([7, 5, 9, 4], 16)
    with torch.no_grad():
        given = CausalLMLoss(model, packed_attention="segments")(**batch)[0]
        derived = CausalLMLoss(model, packed_attention="segments")(
            batch["input_ids"], batch["labels"], batch["position_ids"]
        )[0]
    assert torch.equal(given, derived)


def test_flash_attention_receives_the_same_boundaries_as_varlen_arguments(monkeypatch):
    """With flash_attention_2, the boundaries reach the attention function as flash's varlen arguments."""
    from transformers import AttentionInterface

    seen = []

    def fake_flash(module, query, key, value, attention_mask, **kwargs):
        seen.append(
            {k: kwargs.get(k) for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")}
            | {"mask": attention_mask}
        )
        return sa.segment_attention(module, query, key, value, **kwargs)  # the same computation, for the loss

    monkeypatch.setitem(AttentionInterface._global_mapping, "flash_attention_2", fake_flash)
    model = tiny_model()
    batch = packed_batch([7, 5, 9, 4, 6, 3], 16)
    model.config._attn_implementation = "flash_attention_2"
    loss_module = CausalLMLoss(model)
    loss_module(**batch)
    assert loss_module._mode == "flash"
    assert len(seen) == model.config.num_hidden_layers
    lengths = batch["cu_seq_lens"].diff()
    for call in seen:
        assert call["cu_seq_lens_q"] is batch["cu_seq_lens"] and call["cu_seq_lens_k"] is batch["cu_seq_lens"]
        assert call["max_length_q"] == call["max_length_k"] == int(lengths.max())
        assert call["mask"] is None
    # and the boundaries cover the flattened (B·T) batch that transformers' varlen path attends over
    assert int(batch["cu_seq_lens"][-1]) == batch["input_ids"].numel()


def test_auto_picks_segments_with_sdpa_on_cpu_and_on_cuda_with_a_varlen_kernel(monkeypatch):
    model = tiny_model()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    model.config._attn_implementation = "sdpa"
    assert sa.packed_attention_mode("auto", model.config, cpu) == "segments"
    monkeypatch.setattr(sa, "_has_varlen", lambda: True)
    assert sa.packed_attention_mode("auto", model.config, cuda) == "segments"
    monkeypatch.setattr(sa, "_has_varlen", lambda: False)
    assert sa.packed_attention_mode("auto", model.config, cuda) == "mask"
    assert sa.packed_attention_mode("mask", model.config, cpu) == "mask"
    model.config._attn_implementation = "eager"
    assert sa.packed_attention_mode("auto", model.config, cpu) == "mask"
    assert sa.packed_attention_mode("segments", model.config, cpu) == "segments"
    model.config._attn_implementation = "flash_attention_2"
    assert sa.packed_attention_mode("mask", model.config, cuda) == "flash"  # flash's mask path would leak


def test_models_it_cannot_stand_in_for_fall_back_or_refuse():
    from transformers import Gemma2Config, MistralConfig

    gemma = Gemma2Config(num_hidden_layers=2)
    gemma._attn_implementation = "sdpa"
    assert "soft-caps" in sa.unsupported_reason(gemma)
    assert sa.packed_attention_mode("auto", gemma, torch.device("cpu")) == "mask"
    with pytest.raises(ValueError, match="soft-caps"):
        sa.packed_attention_mode("segments", gemma, torch.device("cpu"))
    mistral = MistralConfig(sliding_window=4096)
    assert "sliding" in sa.unsupported_reason(mistral)
    assert sa.unsupported_reason(MistralConfig(sliding_window=None)) is None


def test_a_model_that_ignores_the_switch_is_refused():
    class Ignores(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

        def forward(self, **_):
            return None

    model = tiny_model()
    with (
        pytest.raises(RuntimeError, match="did not use the per-segment attention"),
        sa.segment_attention_for(model.config),
    ):
        Ignores(model.config)()
    assert model.config._attn_implementation != sa.NAME  # restored


def test_validate_refuses_segments_for_a_model_it_cannot_serve(tmp_path):
    from types import SimpleNamespace

    from transformers import Gemma2Config

    from tuneforge.checks import CheckReport, _check_packed_attention

    def report_for(setting, implementation=None, packing=True):
        config = SimpleNamespace(
            model=SimpleNamespace(packed_attention=setting, attn_implementation=implementation),
            data=SimpleNamespace(packing=packing),
        )
        report = CheckReport()
        _check_packed_attention(config, Gemma2Config(num_hidden_layers=2), report)
        return report

    assert any("soft-caps" in e and "model.packed_attention" in e for e in report_for("segments").errors)
    assert not report_for("auto").errors and not report_for("segments", packing=False).errors
    assert any("flash_attention_2" in w for w in report_for("mask", "flash_attention_2").warnings)


def test_a_segment_longer_than_the_sliding_window_is_refused():
    position_ids = torch.tensor([list(range(12)) + list(range(8))])
    q, k, v = random_qkv(1, 20)
    cu = segment_boundaries(position_ids)
    out, _ = sa.segment_attention(_Module().eval(), q, k, v, cu_seq_lens_q=cu, sliding_window=12)  # fits
    torch.testing.assert_close(out, dense_reference(q, k, v, position_ids), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="sliding window"):
        sa.segment_attention(_Module().eval(), q, k, v, cu_seq_lens_q=cu, sliding_window=11)

"""Chunked projection + cross-entropy equals the plain path: loss and both gradients."""

import pytest
import torch
import torch.nn.functional as F

from tuneforge.training import linear_ce
from tuneforge.training.linear_ce import linear_cross_entropy, supports_fused


@pytest.mark.parametrize("weight_grad", [False, True])
def test_matches_plain_cross_entropy_across_chunks(monkeypatch, weight_grad):
    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows per chunk: several chunks + a ragged one
    torch.manual_seed(0)
    hidden = torch.randn(30, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=weight_grad)
    targets = torch.randint(0, 50, (30,))
    loss = linear_cross_entropy(hidden, weight, targets)
    (loss * 0.5).backward()  # a non-unit upstream gradient
    h_ref = hidden.detach().clone().requires_grad_(True)
    w_ref = weight.detach().clone().requires_grad_(weight_grad)
    ref = F.cross_entropy(h_ref @ w_ref.t(), targets, reduction="sum")
    (ref * 0.5).backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, h_ref.grad, atol=1e-5)
    if weight_grad:
        assert torch.allclose(weight.grad, w_ref.grad, atol=1e-5)
    else:
        assert weight.grad is None


def test_no_grad_path_gives_the_loss_only():
    hidden, weight = torch.randn(5, 8), torch.randn(11, 8)
    targets = torch.randint(0, 11, (5,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(hidden @ weight.t(), targets, reduction="sum").item(), rel=1e-5)


def test_only_plain_bias_free_heads_are_fused():
    assert supports_fused(torch.nn.Linear(4, 6, bias=False))
    assert not supports_fused(torch.nn.Linear(4, 6, bias=True))

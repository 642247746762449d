"""Held-out loss: token weighting, the causal-LM loss against a hand computation,
and isolation of packed examples."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_model

from tuneforge.data.types import IGNORE_INDEX
from tuneforge.eval.perplexity import causal_lm_loss_fn, heldout_loss


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls; threads only contend on a busy 2-core machine
    yield
    torch.set_num_threads(before)


def test_token_weighted_mean_not_mean_of_batches():
    # batch 1: 2 tokens summing to 6.0; batch 2: 4 tokens summing to 3.0
    batches = [(torch.tensor(6.0), 2), (torch.tensor(3.0), torch.tensor(4))]
    result = heldout_loss(lambda b: b, batches)
    assert result["loss"] == pytest.approx(9.0 / 6)  # mean of batch means would be 1.875
    assert result["perplexity"] == pytest.approx(math.exp(1.5))
    assert result["tokens"] == 6


def test_no_loss_tokens_is_an_error():
    with pytest.raises(ValueError, match="no loss tokens"):
        heldout_loss(lambda b: b, [(torch.tensor(0.0), 0)])


def test_perplexity_overflow_is_inf():
    assert heldout_loss(lambda b: b, [(torch.tensor(1000.0), 1)])["perplexity"] == math.inf


def test_causal_lm_loss_matches_hand_computation():
    model = tiny_model()
    ids = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    labels = [[IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9], [IGNORE_INDEX, 11, 12, IGNORE_INDEX, IGNORE_INDEX]]
    batch = {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.arange(5).repeat(2, 1),
    }
    # By hand: label at position i is predicted from the logits at position i-1.
    total, count = 0.0, 0
    with torch.no_grad():
        for row_ids, row_labels in zip(ids, labels):
            logits = model(input_ids=torch.tensor([row_ids])).logits[0].double()  # (T, V)
            for i in range(1, len(row_ids)):
                if row_labels[i] != IGNORE_INDEX:
                    log_probs = logits[i - 1] - torch.logsumexp(logits[i - 1], dim=0)
                    total -= log_probs[row_labels[i]].item()
                    count += 1
    assert count == 5
    result = heldout_loss(causal_lm_loss_fn(model), [batch])
    assert result["tokens"] == 5
    assert result["loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_packed_examples_are_isolated():
    """A packed row's loss equals the sum of its examples' losses on their own:
    position_ids restart at 0 and no token attends to, or is predicted from,
    the previous example."""
    model = tiny_model()
    loss_fn = causal_lm_loss_fn(model)
    a, b = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[10, 11, 12]])
    with torch.no_grad():
        loss_a, n_a = loss_fn({"input_ids": a, "labels": a, "position_ids": torch.arange(5)[None]})
        loss_b, n_b = loss_fn({"input_ids": b, "labels": b, "position_ids": torch.arange(3)[None]})
        packed = torch.cat([a, b], dim=1)
        positions = torch.cat([torch.arange(5), torch.arange(3)])[None]
        loss_p, n_p = loss_fn({"input_ids": packed, "labels": packed, "position_ids": positions})
    assert n_p == n_a + n_b == 6  # b's first token is not a target
    assert loss_p.item() == pytest.approx(loss_a.item() + loss_b.item(), rel=1e-5)


def test_loss_fn_restores_training_mode():
    model = tiny_model()
    model.train()
    ids = torch.tensor([[5, 6, 7]])
    causal_lm_loss_fn(model)({"input_ids": ids, "labels": ids})
    assert model.training

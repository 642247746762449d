"""Packing and collation: isolation (packed loss == unpacked loss), best-fit, padding."""

import random

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model

from tuneforge.data import IGNORE_INDEX, Example, collate, pack
from tuneforge.data.packing import best_fit_rows


def make_examples(lengths, seed=0, prompt=2):
    """Examples of given lengths with random ids; the first ``prompt`` tokens carry no loss."""
    rng = random.Random(seed)
    out = []
    for n, length in enumerate(lengths):
        ids = [rng.randrange(3, 259) for _ in range(length)]
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        out.append(Example(ids, labels, f"x:{n + 1}"))
    return out


def shifted_loss_sum(logits, labels):
    # logits (B, T, V) predict labels shifted by one: position i predicts labels[i + 1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def greedy_first_fit(lengths, max_length):
    """The naive alternative: place in arrival order into the first row with room."""
    rows: list[int] = []
    for n in lengths:
        for r, used in enumerate(rows):
            if used + n <= max_length:
                rows[r] += n
                break
        else:
            rows.append(n)
    return len(rows)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_sum_of_unpacked_losses(model, attn):
    model.config._attn_implementation = attn
    examples = make_examples([7, 5, 9, 4, 6, 3])
    rows = pack(examples, max_length=16, packing=True)
    assert sum(r.num_examples for r in rows) == 6 and any(r.num_examples > 1 for r in rows)
    batch = collate(rows, pad_id=2)
    with torch.no_grad():
        unpacked = sum(
            shifted_loss_sum(model(input_ids=torch.tensor([e.input_ids])).logits, torch.tensor([e.labels]))
            for e in examples
        )
        out = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False
        )
        packed = shifted_loss_sum(out.logits, batch["labels"])
        # Without restarting positions the examples see each other: the test can fail.
        leaky = model(
            input_ids=batch["input_ids"],
            attention_mask=None,
            use_cache=False,
            position_ids=torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"]),
        )
        leaky = shifted_loss_sum(leaky.logits, batch["labels"])
    model.config._attn_implementation = "sdpa"
    assert torch.allclose(packed, unpacked, atol=1e-4), (packed, unpacked)
    assert (leaky - unpacked).abs() > 1e-3


def test_loss_never_crosses_an_example_boundary(model):
    """With loss on every token (CPT-like), the only cross-boundary target would be each
    example's first token predicted from the previous example's last one."""
    examples = make_examples([5, 7, 4], seed=2, prompt=0)
    (row,) = pack(examples, max_length=16)
    batch = collate([row], pad_id=2)
    with torch.no_grad():
        unpacked = sum(
            shifted_loss_sum(model(input_ids=torch.tensor([e.input_ids])).logits, torch.tensor([e.labels]))
            for e in examples
        )
        logits = model(**batch | {"labels": None}, attention_mask=None, use_cache=False).logits
    assert torch.allclose(shifted_loss_sum(logits, batch["labels"]), unpacked, atol=1e-4)
    # Restoring the first labels adds targets across boundaries, and the sums part ways.
    crossing = batch["labels"].clone()
    starts = (batch["position_ids"] == 0).nonzero(as_tuple=True)
    crossing[starts] = batch["input_ids"][starts]
    assert (shifted_loss_sum(logits, crossing) - unpacked).abs() > 1.0


def test_isolation_needs_use_cache_false(model):
    """Trap in transformers 5.24: with the config default use_cache=True a cache is built,
    and find_packed_sequence_indices is skipped, so packed examples attend to each other."""
    examples = make_examples([6, 6], seed=3)
    batch = collate(pack(examples, 12), pad_id=2)
    with torch.no_grad():
        unpacked = sum(
            shifted_loss_sum(model(input_ids=torch.tensor([e.input_ids])).logits, torch.tensor([e.labels]))
            for e in examples
        )
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None)
    # A tiny random model leaks little, but far more than the 1e-4 isolation tolerance.
    assert (shifted_loss_sum(cached.logits, batch["labels"]) - unpacked).abs() > 1e-3


def test_first_token_of_each_packed_example_is_not_a_target():
    examples = [
        Example([10, 11, 12], [10, 11, 12]),
        Example([20, 21], [20, 21]),
        Example([30, 31, 32, 33], [30, 31, 32, 33]),
    ]
    (row,) = pack(examples, max_length=9)
    starts = [p for p, pos in enumerate(row.position_ids) if pos == 0]
    assert len(starts) == 3
    assert all(row.labels[p] == IGNORE_INDEX for p in starts)
    # every other label is kept
    kept = [label for p, label in enumerate(row.labels) if p not in starts]
    assert sorted(kept) == sorted([11, 12, 21, 31, 32, 33])


def test_best_fit_uses_fewer_rows_than_greedy_and_respects_max_length():
    lengths = [4, 4, 6, 6]
    assert greedy_first_fit(lengths, 10) == 3  # 4+4 | 6 | 6
    rows = pack(make_examples(lengths), max_length=10)
    assert len(rows) == 2  # 6+4 | 6+4
    assert all(len(r.input_ids) <= 10 for r in rows)
    rng = random.Random(1)
    many = [rng.randint(1, 40) for _ in range(200)]
    groups = best_fit_rows(many, 64)
    assert sorted(i for g in groups for i in g) == list(range(200))  # each example exactly once
    assert all(sum(many[i] for i in g) <= 64 for g in groups)
    assert len(groups) <= greedy_first_fit(many, 64)
    assert best_fit_rows(many, 64) == groups  # deterministic


def test_no_packing_is_one_example_per_row_and_long_examples_are_truncated():
    examples = make_examples([5, 3, 12])
    with pytest.warns(UserWarning, match="1 example"):
        rows = pack(examples, max_length=8, packing=False)
    assert [len(r.input_ids) for r in rows] == [5, 3, 8]
    assert [r.num_examples for r in rows] == [1, 1, 1]
    assert rows[2].input_ids == examples[2].input_ids[:8]


def test_collate_pads_right_with_ignored_labels_and_a_fresh_position_segment():
    rows = pack([Example([5, 6, 7, 8], [5, 6, 7, 8]), Example([9, 10], [9, 10])], max_length=4, packing=False)
    batch = collate(rows, pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 2, 2]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, 8], [IGNORE_INDEX, 10, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    assert all(
        batch[k].dtype == torch.long and batch[k].shape == (2, 4) for k in ("input_ids", "labels", "position_ids")
    )
    assert batch["cu_seq_lens"].tolist() == [0, 4, 6, 8]  # row 0; row 1's example; row 1's padding tail


def test_padding_does_not_change_the_loss(model):
    examples = make_examples([9, 4, 3], seed=5)
    with torch.no_grad():
        unpacked = sum(
            shifted_loss_sum(model(input_ids=torch.tensor([e.input_ids])).logits, torch.tensor([e.labels]))
            for e in examples
        )
        batch = collate(pack(examples, max_length=9), pad_id=2)  # rows: [9] and [4+3] padded to 9
        assert batch["input_ids"].shape == (2, 9)
        out = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False
        )
    assert torch.allclose(shifted_loss_sum(out.logits, batch["labels"]), unpacked, atol=1e-4)

"""What one optimizer step feeds the model, from the training rows (or estimated without them).

Every method's training item is reduced to the sequences that go through the
forward with gradients, each as (length, loss positions): a packed row, a
pair as one shared-prompt row (DPO) or two rows (reward), a contrastive row's
texts (each role padded on its own), a ranking's K responses. Random batches
are drawn as the loop draws them (shuffled rows, ``batch_size`` per
micro-batch) to get the mean and the largest padded batch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

IGNORE = -100
_SAMPLED_BATCHES = 256


@dataclass(frozen=True)
class StepShape:
    steps: int
    micro_batches: int  # per optimizer step and process (gradient accumulation)
    max_slots: int  # padded positions of the largest micro-batch: what the activations scale with
    max_loss_positions: int  # output-projection positions in that micro-batch
    mean_slots: float  # padded positions per micro-batch, on average
    mean_loss_positions: float  # output-projection positions per micro-batch, on average
    mean_tokens: float  # real (non-padding) tokens per micro-batch, on average
    mean_seq_len: float  # mean padded row length, for attention FLOPs
    rows: int
    source: str  # how the numbers were obtained

    @property
    def tokens_per_step(self) -> float:
        return self.mean_tokens * self.micro_batches

    @property
    def slots_per_step(self) -> float:
        return self.mean_slots * self.micro_batches


def item_sequences(item, *, shared_prompt: bool = True) -> list[tuple[int, int, int]]:
    """(role, length, loss positions) of each sequence of one training item."""
    if hasattr(item, "pair"):  # dpo's PairRow: the pair, and whether it is batched as one shared-prompt row
        return item_sequences(item.pair, shared_prompt=getattr(item, "shared_prompt", shared_prompt))
    if hasattr(item, "kl"):  # dpo's UnpairedRow (KTO): the response and its mismatched KL sequence
        return [(0, len(e.input_ids), _loss(e)) for e in (item.item.response, item.kl)]
    if hasattr(item, "ids"):  # contrastive: anchor, positive, negatives; each role embedded on its own
        return [(j, len(ids), 0) for j, ids in enumerate(item.ids)]
    if hasattr(item, "chosen"):
        c, r = item.chosen, item.rejected
        if shared_prompt:  # one row: prompt + chosen + rejected (dpo pair_forward auto)
            return [(0, len(c.input_ids) + len(r.input_ids) - len(item.prompt_ids), _loss(c) + _loss(r))]
        return [(0, len(c.input_ids), _loss(c)), (0, len(r.input_ids), _loss(r))]
    if hasattr(item, "responses"):
        return [(0, len(e.input_ids), _loss(e)) for e in item.responses]
    if hasattr(item, "response"):
        return [(0, len(item.response.input_ids), _loss(item.response))]
    labels = getattr(item, "labels", None)
    if isinstance(labels, list):
        return [(0, len(item.input_ids), _loss(item))]
    return [(0, len(item.input_ids), 0)]


def _loss(example) -> int:
    # Labels are shifted by one inside the loss: the first position never carries one.
    return max(0, sum(1 for x in example.labels[1:] if x != IGNORE))


def shape_from_rows(
    rows: list,
    *,
    batch_size: int,
    accumulation: int,
    processes: int,
    steps: int,
    shared_prompt: bool = True,
    lm_loss: bool = True,
    seed: int = 0,
) -> StepShape:
    """StepShape from the training items themselves (random micro-batches as the loop draws them)."""
    items = [item_sequences(r, shared_prompt=shared_prompt) for r in rows]
    rng = random.Random(seed)
    order = list(range(len(items)))
    batches = []
    while len(batches) < _SAMPLED_BATCHES and items:
        rng.shuffle(order)
        batches.extend(order[i : i + batch_size] for i in range(0, len(order), batch_size))
        if len(order) <= batch_size:
            break
    stats = [_batch_stats([s for i in batch for s in items[i]]) for batch in batches[:_SAMPLED_BATCHES]]
    stats = stats or [(0, 0, 0, 0.0)]
    largest = max(stats, key=lambda s: s[0])
    n = len(stats)
    return StepShape(
        steps=steps,
        micro_batches=accumulation,
        max_slots=largest[0],
        max_loss_positions=largest[2] if lm_loss else 0,
        mean_slots=sum(s[0] for s in stats) / n,
        mean_loss_positions=sum(s[2] for s in stats) / n if lm_loss else 0.0,
        mean_tokens=sum(s[1] for s in stats) / n,
        mean_seq_len=sum(s[3] for s in stats) / n,
        rows=len(rows),
        source=f"counted: {len(rows):,} training rows, {n} random batches of {batch_size}",
    )


def _batch_stats(seqs: list[tuple[int, int, int]]) -> tuple[int, int, int, float]:
    """(padded slots, real tokens, loss positions, mean padded length) of one micro-batch."""
    roles: dict[int, list[int]] = {}
    for role, length, _ in seqs:
        roles.setdefault(role, []).append(length)
    slots = sum(len(v) * max(v) for v in roles.values())
    lengths = [max(v) for v in roles.values()]
    return (slots, sum(s[1] for s in seqs), sum(s[2] for s in seqs), sum(lengths) / max(len(lengths), 1))


def estimated_shape(
    *,
    rows: int,
    tokens: int | None,
    max_length: int,
    batch_size: int,
    accumulation: int,
    steps: int,
    sequences_per_item: int = 1,
    loss_fraction: float = 1.0,
    why: str = "",
) -> StepShape:
    """Without the rows: every row at max_length for memory (an upper bound); the mean from
    ``tokens / rows`` when a count is known, else max_length too."""
    per_item = sequences_per_item * max_length
    mean = (tokens / max(rows, 1)) if tokens else per_item
    source = (
        f"estimated from {rows:,} rows and {tokens:,} tokens"
        if tokens
        else f"estimated: rows × max_length ({rows:,} × {max_length})"
    )
    return StepShape(
        steps=steps,
        micro_batches=accumulation,
        max_slots=batch_size * per_item,
        max_loss_positions=math.ceil(batch_size * per_item * loss_fraction),
        mean_slots=batch_size * per_item,
        mean_loss_positions=batch_size * per_item * loss_fraction,
        mean_tokens=batch_size * min(mean, per_item),
        mean_seq_len=max_length,
        rows=rows,
        source=source + (f"; {why}" if why else ""),
    )

"""Replay (rehearsal): rows of earlier stages mixed into each later stage's training rows.

Each finished stage leaves a bounded buffer of its training rows, filled by reservoir sampling
(Vitter 1985, algorithm R) so every row of the stage had the same chance to be kept whatever the
stage's size. A later stage trains on its own N rows plus replayed ones from the buffers of the
stages *before* it (never a later one): with a share r of the epoch, r/(1−r)·N rows (METHODS.md),
or as many rows as make up that share of the tokens. The replayed rows are drawn evenly from the
earlier stages (TRACE's setup), without repeats while a buffer lasts, and shuffled in with the new
rows by the training loop, so every batch carries about the share r.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class ReservoirBuffer:
    """At most ``capacity`` items of a stream, each kept with the same probability (algorithm R)."""

    def __init__(self, capacity: int, seed: int):
        if capacity < 1:
            raise ValueError("a replay buffer needs room for at least one row")
        self.capacity = capacity
        self.items: list = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)  # keep the new item with probability capacity / seen
        if slot < self.capacity:
            self.items[slot] = item

    def extend(self, items) -> None:
        for item in items:
            self.add(item)


def replay_count(new_rows: int, fraction: float) -> int:
    """Replayed rows that make ``fraction`` of an epoch of ``new_rows`` new rows: round(r/(1−r)·N)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
    return round(fraction / (1 - fraction) * new_rows)


@dataclass
class ReplayMix:
    rows: list  # the stage's own rows first, then the replayed ones (the loop shuffles them)
    replayed: int  # how many of ``rows`` are replayed
    replayed_tokens: int
    new_tokens: int
    per_stage: dict[str, int]  # replayed rows drawn from each earlier stage

    @property
    def fraction(self) -> float:
        return self.replayed / max(len(self.rows), 1)

    @property
    def token_fraction(self) -> float:
        return self.replayed_tokens / max(self.replayed_tokens + self.new_tokens, 1)


def _tokens(row) -> int:
    return len(row.input_ids)


def mix_replay(
    new_rows: list, buffers: dict[str, ReservoirBuffer], *, fraction: float, by: str, seed: int
) -> ReplayMix:
    """The stage's training rows with replay from ``buffers`` (earlier stages only, in stage order)."""
    new_tokens = sum(_tokens(r) for r in new_rows)
    pools = {name: list(buffer.items) for name, buffer in buffers.items() if buffer.items}
    if not pools:  # the first stage: nothing to replay yet
        return ReplayMix(list(new_rows), 0, 0, new_tokens, {})
    rng = random.Random(seed)
    for pool in pools.values():
        rng.shuffle(pool)
    names = list(pools)
    cursor = dict.fromkeys(names, 0)
    picked: list = []
    per_stage = dict.fromkeys(names, 0)

    def draw(turn: int):
        name = names[turn % len(names)]  # round-robin: each earlier stage gives the same share
        pool = pools[name]
        row = pool[cursor[name] % len(pool)]  # cycles only once a buffer is used up
        cursor[name] += 1
        per_stage[name] += 1
        picked.append(row)
        return row

    if by == "examples":
        for turn in range(replay_count(len(new_rows), fraction)):
            draw(turn)
    elif by == "tokens":
        budget = fraction / (1 - fraction) * new_tokens
        got, turn = 0, 0
        while got < budget:  # stop at the row that reaches the budget (within one row of the share)
            got += _tokens(draw(turn))
            turn += 1
    else:
        raise ValueError(f"replay.by must be examples or tokens, not {by!r}")
    return ReplayMix(list(new_rows) + picked, len(picked), sum(_tokens(r) for r in picked), new_tokens, per_stage)

"""Several training sources mixed by weight, sampled anew every epoch (``data.train: [{path, weight}, …]``).

Each source is an ordinary data config of its own (its ``format`` and ``columns`` over the shared ones),
loaded, rendered, cached and packed as a single-source run would be; a text source in an SFT run is how
a *general* share is replayed (every token of it carries the loss, as in continued pretraining — the
usual answer to forgetting, cf. LLaMA-Factory #2611 and the replay of ``continual/``).

An epoch holds as many rows as all sources together. Source *s* fills ``examples`` of them when set,
else a share ``weight_s / Σ weight`` of what the fixed ones leave; a source drawn more often than it has
rows repeats (every row once before any twice), one drawn less often contributes a different random part
each epoch. The draw depends only on (``training.seed``, epoch), so a run resumed mid-epoch sees the same
rows (``training.engine.RowOrder`` calls :func:`mixture_arrange` with the epoch's seeded permutation).
Weights are shares of *rows* (packed rows when ``data.packing``), not of tokens; the facts say both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def is_mixture(cfg) -> bool:
    """Whether ``data.train`` lists sources with their own settings (not only paths)."""
    return isinstance(cfg.train, list) and any(not isinstance(item, str) for item in cfg.train)


def source_configs(cfg) -> list[tuple[str, Any, Any]]:
    """(name, TrainSource, the source's own data config) for every entry of ``data.train``."""
    from ..config.schema import TrainSource

    out, names = [], set()
    for k, item in enumerate(cfg.train):
        source = TrainSource(path=item) if isinstance(item, str) else item
        first = source.path if isinstance(source.path, str) else source.path[0]
        name = source.name or Path(first).stem or f"source{k}"
        if name in names:
            name = f"{name}-{k}"
        names.add(name)
        own = cfg.model_copy(
            update={
                "train": source.path,
                "eval": source.eval,
                "format": source.format or cfg.format,
                "columns": cfg.columns if source.columns is None else source.columns,
                # a source without its own held-out file holds out the shared fraction of itself
                "eval_fraction": cfg.eval_fraction if source.eval is None else 0.0,
            }
        )
        out.append((name, source, own))
    return out


def epoch_counts(sizes: list[int], weights: list[float | None], examples: list[int | None]) -> list[int]:
    """Rows each source fills in an epoch of ``sum(sizes)`` rows (fixed ``examples`` first, then by weight)."""
    total = sum(sizes)
    fixed = sum(n for n in examples if n is not None)
    shares = [(w if w is not None else 1.0) if n is None else 0.0 for w, n in zip(weights, examples)]
    left = max(total - fixed, 0)
    raw = [left * s / sum(shares) if sum(shares) else 0.0 for s in shares]
    counts = [n if n is not None else int(r) for n, r in zip(examples, raw)]
    # Largest remainders get the rows that rounding down left over, so the epoch is exactly ``total`` long
    # when only weights are given.
    spare = total - sum(counts) if fixed == 0 else 0
    for k in sorted(range(len(raw)), key=lambda k: raw[k] - int(raw[k]), reverse=True)[: max(spare, 0)]:
        counts[k] += 1
    return counts


def mixture_arrange(source_of_row: list[int], counts: list[int]):
    """``RowOrder``'s arrange hook: the epoch's seeded permutation → that epoch's mixed rows, shuffled.

    Returns a list as long as the permutation (RowOrder's epoch length), filled with the sources' draws."""
    by_source: dict[int, list[int]] = {}

    def arrange(order: list[int], group: int, first: int) -> list[int]:
        by_source.clear()
        for index in order:  # each source's rows in this epoch's random order
            by_source.setdefault(source_of_row[index], []).append(index)
        chosen: list[int] = []
        for s, count in enumerate(counts):
            rows = by_source.get(s, [])
            reps, rest = divmod(count, len(rows)) if rows else (0, 0)
            chosen += rows * reps + rows[:rest]
        rng = random.Random(order[0] * 1_000_003 + len(order))  # deterministic given the permutation
        rng.shuffle(chosen)
        return (chosen * (len(order) // max(len(chosen), 1) + 1))[: len(order)] if chosen else order

    return arrange


@dataclass
class Mixture:
    """The loaded mixture: rows of every source (in source order), and what the run needs to use them."""

    train: list
    eval: list
    samples: list
    groups: dict[str, list] = field(default_factory=dict)  # source name → its held-out rows
    facts: dict = field(default_factory=dict)
    arrange: Callable[[list[int], int, int], list[int]] | None = None


def load_mixture(cfg, tokenizer) -> Mixture:
    """Every source loaded (cached, packed) on its own; one training list, the per-epoch draw as ``arrange``."""
    from . import load_splits, pack

    train, held, samples, groups, source_of_row = [], [], [], {}, []
    names, weights, examples, sizes, tokens = [], [], [], [], []
    for k, (name, source, own) in enumerate(source_configs(cfg)):
        splits = load_splits(own, tokenizer)
        rows = pack(splits.train, own.max_length, own.packing)
        held_rows = pack(splits.eval, own.max_length, own.packing)
        train += rows
        source_of_row += [k] * len(rows)
        held += held_rows
        samples += splits.eval_samples
        if held_rows:
            groups[name] = held_rows
        names.append(name)
        weights.append(source.weight)
        examples.append(source.examples)
        sizes.append(len(rows))
        tokens.append(sum(len(r.input_ids) for r in rows))
    counts = epoch_counts(sizes, weights, examples)
    epoch_tokens = [c * t / max(n, 1) for c, t, n in zip(counts, tokens, sizes)]
    facts = {
        "rows": len(train),
        "tokens": sum(tokens),
        "sources": {
            name: {
                "rows": n,
                "rows_per_epoch": c,
                "share_of_rows": round(c / max(sum(counts), 1), 4),
                "share_of_tokens": round(t / max(sum(epoch_tokens), 1e-9), 4),
                "repeats": round(c / max(n, 1), 3),
            }
            for name, n, c, t in zip(names, sizes, counts, epoch_tokens)
        },
    }
    return Mixture(train, held, samples, groups, facts, mixture_arrange(source_of_row, counts))


def describe(facts: dict) -> str:
    """One line for `validate`: each source's share of an epoch."""
    parts = [
        f"{name} {f['share_of_rows']:.0%} of rows ({f['rows_per_epoch']} per epoch from {f['rows']}, "
        f"{f['share_of_tokens']:.0%} of tokens)"
        for name, f in facts["sources"].items()
    ]
    return "mixture: " + "; ".join(parts)


def validate_mixture(cfg, tokenizer):
    """`validate` over every source: problems and warnings named by source, counts summed."""
    from . import validate_data
    from .types import DataReport

    total = DataReport()
    for k, (name, _source, own) in enumerate(source_configs(cfg)):
        report = validate_data(own, tokenizer)
        where = f"data.train[{k}] ({name})"
        total.problems += [f"{where}: {p}" for p in report.problems]
        total.warnings += [f"{where}: {w}" for w in report.warnings]
        total.rows += report.rows
        total.examples += report.examples
        total.tokens += report.tokens
        total.loss_tokens += report.loss_tokens
        total.truncated += report.truncated
    return total

"""What the methods that score a held-out set with one forward per row share (classify, reward).

Their evaluation runs on the main process only (held-out sets are small; no collective needed),
in batches of rows of similar length so that little of each batch is padding.
"""

from __future__ import annotations

from collections.abc import Iterator


def evaluates_here(ctx, model) -> bool:
    """Whether this process scores: an ``eval`` section, held-out rows, the main process, a model."""
    return ctx.config.eval is not None and bool(ctx.data.eval) and ctx.accelerator.is_main_process and model is not None


def length_sorted_batches(rows: list, batch_size: int) -> Iterator[list[int]]:
    """Indices of ``rows`` in batches of similar length (every row once), shortest first."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]

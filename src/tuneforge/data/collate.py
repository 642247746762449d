"""Turn packed rows into a right-padded batch of tensors.

Feed the batch to the model as ``model(input_ids=..., position_ids=...,
attention_mask=None, use_cache=False)`` and compute the shifted loss from
``labels``: the block-diagonal mask is derived from ``position_ids`` (see
``data/packing.py``). Padding gets its own position ids starting at 0, so it
forms a separate segment that real tokens never attend to; its labels are
IGNORE_INDEX so it carries no loss. Masks come from positions, never from
token ids (pad == eos for SmolLM2). ``cu_seq_lens`` carries the same
boundaries for attention that needs no mask (models/segment_attention.py).

torch is imported inside the functions: ``data/__init__`` re-exports ``collate``,
and the rest of the data package (sources, formats, templates) serves
``tuneforge validate --schema-only``, which must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneforge.data.types import IGNORE_INDEX, PackedRow

if TYPE_CHECKING:
    import torch


def collate(rows: list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``labels``, ``position_ids``: each a (B, T) long tensor, T = longest row; and
    ``cu_seq_lens``: the segment boundaries over the flattened B·T (every example, each padding tail its own
    segment), int32, as per-segment and flash-attention's variable-length attention take them."""
    import torch

    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(row.labels, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(row.position_ids, dtype=torch.long)
        position_ids[b, n:] = torch.arange(width - n)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "cu_seq_lens": segment_boundaries(position_ids),
    }


def segment_boundaries(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) positions restarting at 0 per example → int32 cumulative lengths over the flattened batch.

    Every position 0 opens a segment (each row starts at 0, and so does the collator's padding tail); the
    total B·T closes the last: rows ``[0 1 2 0 1 | 0 1 2 3 0]`` give ``[0, 3, 5, 9, 10]``. Rows must start at
    position 0 (the packing collator guarantees it); anything else is refused.
    """
    import torch

    flat = position_ids.reshape(-1)
    if flat.numel() and int(position_ids[:, 0].abs().sum()) != 0:
        raise ValueError("segment_boundaries: every row must start at position 0")
    starts = torch.nonzero(flat == 0).flatten()
    return torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)

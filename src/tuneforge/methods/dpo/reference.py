"""The frozen reference π_ref, one of three ways (``config.reference_kind``):

- ``adapter_disabled``: the trained network itself with its adapters switched
  off (``adapters.adapters_disabled``): the base model, no second copy of the
  weights, one extra no-grad forward per batch;
- ``frozen_copy``: a deep copy of the model taken before the first step,
  frozen, outside the loss module's parameters (so neither the optimizer nor
  checkpoints see it); one more set of weights in memory;
- ``precomputed``: the model before its first step scores every training and
  held-out row once, and the summed log-probs are stored with the rows
  (``row.ref``) and travel in the batches: nothing extra in memory and no
  reference forward during training. A resumed run computes them again from
  the freshly loaded model, before the checkpoint's weights are restored, so
  they are the same numbers.

``frozen_copy`` and ``precomputed`` are "the policy at initialisation", which
for an identity-initialised adapter (LoRA's B = 0) or full fine-tuning is the
base model, and for PiSSA / OLoRA (which rewrite the base weights) is still
the original model, where switching the adapter off would not be.
"""

from __future__ import annotations

import copy
from functools import partial

import torch

from .data import PairRow, Row, collate_rows, split_sequences
from .logps import base_logps, frozen_logps


def build_reference(kind: str | None, model: torch.nn.Module, rows: list[Row], *, pad_id: int, batch_size: int):
    """The callable the loss module calls for reference log-probs, or None (precomputed / reference-free).

    ``precomputed`` stores the reference log-probs in ``rows`` (each row's ``ref`` is set).
    """
    if kind == "adapter_disabled":
        return partial(base_logps, model)
    if kind == "frozen_copy":
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        return partial(frozen_logps, frozen)
    if kind == "precomputed":
        store_reference_logps(rows, model, pad_id=pad_id, batch_size=batch_size)
    return None


@torch.no_grad()
def store_reference_logps(rows: list[Row], model: torch.nn.Module, *, pad_id: int, batch_size: int) -> None:
    """Set ``row.ref`` = the model's summed log-probs of the row's two sequences (eval mode, no gradients)."""
    from ...training.engine import console

    device = next(model.parameters()).device
    console.print(f"Computing the reference's log-probs for {len(rows)} rows once, before training…")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))  # little padding per batch
    for start in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        sequences, kl = split_sequences(collate_rows(chunk, pad_id).inputs, device)
        first, _ = frozen_logps(model, sequences)
        if isinstance(chunk[0], PairRow):  # (2B,): chosen sequences, then rejected ones
            first, second = first[: len(chunk)], first[len(chunk) :]
        else:
            second, _ = frozen_logps(model, kl)
        for row, a, b in zip(chunk, first.tolist(), second.tolist()):
            row.ref = (a, b)

"""Held-out loss and perplexity, token-weighted.

``heldout_loss`` never touches a model: it takes a ``loss_fn(batch) ->
(summed_loss, num_loss_tokens)``, so the training engine can pass the very
forward it trains with (same masking, same precision, same device placement)
and eval loss is comparable to training loss. ``causal_lm_loss_fn`` is that
function for a plain Hugging Face causal LM, used by ``tuneforge eval``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from tuneforge.data.types import IGNORE_INDEX

LossFn = Callable[[dict], tuple[torch.Tensor, "int | torch.Tensor"]]


def heldout_loss(loss_fn: LossFn, batches: Iterable[dict]) -> dict[str, float]:
    """``{"loss", "perplexity", "tokens"}`` over all batches.

    The mean is over loss tokens, not batches: a batch with 10 answer tokens
    counts a tenth as much as one with 100 (averaging per-batch means would
    overweight short batches). Perplexity is exp(mean loss), inf on overflow.
    In a multi-process run, ``loss_fn`` should return sums already reduced over
    processes, or the caller reduces the result.
    """
    total = torch.zeros((), dtype=torch.float64)
    tokens = 0
    with torch.no_grad():
        for batch in batches:
            summed, count = loss_fn(batch)
            # Accumulate on the loss's own device; one sync at the end, not per batch.
            total = total.to(summed.device) + summed.detach().to(torch.float64)
            tokens += int(count)
    if tokens == 0:
        raise ValueError("held-out batches have no loss tokens (every label is ignored); nothing to evaluate")
    loss = total.item() / tokens
    try:
        perplexity = math.exp(loss)
    except OverflowError:
        perplexity = math.inf
    return {"loss": loss, "perplexity": perplexity, "tokens": tokens}


def causal_lm_loss_fn(model) -> LossFn:
    """``loss_fn`` for a plain HF causal LM on batches of input_ids / labels /
    position_ids (labels unshifted, IGNORE_INDEX where no loss).

    attention_mask stays None so that, in packed rows, position_ids restarting
    at 0 isolate the examples: transformers derives a packed-sequence mask from
    them, but only when the forward has no KV cache, hence use_cache=False (with
    the default cache, later examples silently attend to earlier ones). A token at position 0 of its example is never a target: its
    "context" would be the previous example in the row.
    The model is put in eval mode for each call and its mode restored after.
    """

    def loss_fn(batch: dict) -> tuple[torch.Tensor, int]:
        device = next(model.parameters()).device
        input_ids = batch["input_ids"].to(device)  # (B, T)
        labels = batch["labels"].to(device)  # (B, T)
        position_ids = batch.get("position_ids")
        if position_ids is not None:
            position_ids = position_ids.to(device)
        was_training = model.training
        model.eval()
        try:
            logits = model(
                input_ids=input_ids, position_ids=position_ids, attention_mask=None, use_cache=False
            ).logits  # (B, T, V)
        finally:
            model.train(was_training)
        targets = labels[:, 1:].clone()  # (B, T-1): the token each position predicts
        if position_ids is not None:
            targets[position_ids[:, 1:] == 0] = IGNORE_INDEX
        summed = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return summed, int((targets != IGNORE_INDEX).sum())

    return loss_fn

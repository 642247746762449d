"""Batched decoding for the server: many requests, each with its own settings, one forward per step.

``model.generate`` takes one set of sampling settings and one stream for the
whole batch; a server needs per-request temperature, top-p, seed, stop strings
and token limits, per-request streaming, and (with peft's mixed-adapter
batches) a per-row adapter. So the loop is ours, and small:

* prefill: prompts LEFT-padded (every row's next token in the last column),
  positions counted from each row's first real token, as ``generate`` does;
* every step: one forward of the new tokens against the KV cache, one token
  per row (greedy at temperature 0, else top-p sampling from the row's own
  seeded generator), text handed out through the row's :class:`TextTracker`;
* finished or cancelled rows leave the batch at once (their cache rows are
  dropped), so one long answer does not make the short ones pay.

Greedy output at temperature 0 equals ``tuneforge generate`` (same stop tokens,
same decoding of the kept tokens): tested.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .text import TextTracker


@dataclass(frozen=True)
class Sampling:
    """One request's decoding settings (OpenAI's names)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Row:
    """One request inside a batch: its prompt, settings, text so far and where its events go."""

    prompt_ids: list[int]
    sampling: Sampling
    tracker: TextTracker
    on_text: Callable[[str], None]
    on_done: Callable[[Row], None] = lambda row: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    adapter: str = "__base__"  # peft's name for the row's adapter in a mixed batch
    generator: torch.Generator | None = None

    def __post_init__(self):
        if self.sampling.temperature > 0:
            seed = self.sampling.seed if self.sampling.seed is not None else secrets.randbits(63)
            self.generator = torch.Generator().manual_seed(seed)


def pick_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row's logits: argmax at temperature 0, else top-p (nucleus) sampling."""
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest set whose mass reaches top_p: a token stays if the mass before it is below top_p
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = torch.where(before < sampling.top_p, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def decode_batch(
    model,
    rows: list[Row],
    *,
    pad_id: int,
    mixed_adapters: bool,
    use_cache: bool = True,
    device: torch.device | None = None,
    admit: Callable[[int], list[Row]] | None = None,
) -> None:
    """Decode every row to its end, streaming text through each row's ``on_text``.

    ``mixed_adapters``: pass each row's adapter to peft (``adapter_names=``), so rows for
    different LoRA adapters (and ``__base__``) share every forward.
    ``use_cache=False``: every step is a full forward (peft's soft prompts need it).
    ``admit(live)``: called after every step with the number of rows still running; the rows it
    returns join the running batch (continuous batching): they are prefilled on their own, then
    their KV cache and mask are left-padded to the running batch's length and stacked under it.
    """
    device = device or next(model.parameters()).device
    state = _start(rows, pad_id, device)
    with torch.inference_mode():
        while state is not None:
            state = _advance(state, _forward(model, state, mixed_adapters, use_cache), device)
            if admit is None or not use_cache or (state is not None and not _joinable(state.cache)):
                continue
            newcomers = admit(len(state.rows) if state is not None else 0)
            fresh = _start(newcomers, pad_id, device)
            if fresh is not None:
                fresh = _advance(fresh, _forward(model, fresh, mixed_adapters, use_cache), device)
            state = _join(state, fresh, pad_id)


@dataclass
class _State:
    """A running batch: its rows, every token so far (left-padded), the mask, what the cache lacks."""

    rows: list[Row]
    ids: torch.Tensor  # (B, L): prompt + sampled tokens, left-padded
    mask: torch.Tensor  # (B, L): 1 on real tokens
    step_input: torch.Tensor  # (B, s): the last s tokens, not yet in the cache
    cache: object = None  # transformers DynamicCache, once the first forward ran with use_cache


def _start(rows: list[Row], pad_id: int, device) -> _State | None:
    """Rows → a left-padded batch (every row's next token in the last column); cancelled rows end here."""
    live = [row for row in rows if not row.cancelled.is_set()]
    for row in rows:
        if row.cancelled.is_set():
            row.on_done(row)
    if not live:
        return None
    longest = max(len(row.prompt_ids) for row in live)
    ids = torch.full((len(live), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(live), longest), dtype=torch.long)
    for i, row in enumerate(live):
        ids[i, longest - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, dtype=torch.long)
        mask[i, longest - len(row.prompt_ids) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return _State(live, ids, mask, ids)


def _forward(model, state: _State, mixed_adapters: bool, use_cache: bool) -> torch.Tensor:
    """One forward; (B, V) float32 logits of every row's next token, on the CPU."""
    extra = {"adapter_names": [row.adapter for row in state.rows]} if mixed_adapters else {}
    if use_cache:
        from transformers import DynamicCache

        state.cache = state.cache if state.cache is not None else DynamicCache()
        # Positions count each row's real tokens only, as generate does for left-padded rows.
        positions = (state.mask.cumsum(-1) - 1).clamp(min=0)[:, -state.step_input.shape[1] :]
        out = model(
            input_ids=state.step_input,
            attention_mask=state.mask,
            position_ids=positions,
            past_key_values=state.cache,
            use_cache=True,
            **extra,
        )
    else:
        out = model(input_ids=state.ids, attention_mask=state.mask, use_cache=False, **extra)
    return out.logits[:, -1, :].float().cpu()  # sampling runs on the CPU, with each row's own generator


def _advance(state: _State, logits: torch.Tensor, device) -> _State | None:
    """Pick each row's token, hand out its text, drop the rows that ended; None when none is left."""
    chosen: list[int] = []
    keep: list[int] = []
    for i, row in enumerate(state.rows):
        token = pick_token(logits[i], row.sampling, row.generator)
        chosen.append(token)
        piece = row.tracker.push(token)
        if not row.tracker.finished and row.tracker.sampled >= row.sampling.max_tokens:
            piece += row.tracker.finish_length()
        if piece:
            row.on_text(piece)
        if not row.tracker.finished and not row.cancelled.is_set():
            keep.append(i)
        else:
            row.on_done(row)
    if not keep:
        return None
    new = torch.tensor(chosen, dtype=torch.long, device=device).unsqueeze(1)  # (B, 1)
    ids, mask = state.ids, state.mask
    if len(keep) < len(state.rows):
        index = torch.tensor(keep, dtype=torch.long, device=device)
        if state.cache is not None:
            state.cache.batch_select_indices(index)  # a finished row's KV rows go at once
        ids, mask, new = ids[index], mask[index], new[index]
    return _State(
        [state.rows[i] for i in keep],
        torch.cat([ids, new], dim=1),
        torch.cat([mask, torch.ones_like(new)], dim=1),
        new,
        state.cache,
    )


def _joinable(cache) -> bool:
    """Only plain per-layer key/value caches can be padded and stacked (not sliding windows, not hybrids)."""
    from transformers.cache_utils import DynamicLayer

    return cache is not None and all(type(layer) is DynamicLayer for layer in cache.layers)


def _join(running: _State | None, fresh: _State | None, pad_id: int) -> _State | None:
    """Two batches as one: the shorter is left-padded (keys, values, mask, ids), then stacked below."""
    if running is None or fresh is None:
        return running or fresh
    width = max(running.mask.shape[1], fresh.mask.shape[1])
    for old, new in zip(running.cache.layers, fresh.cache.layers):
        # The cache holds every position but the pending token: width - 1 of them after padding.
        old.keys = torch.cat([_pad_left(old.keys, width - 1, 0.0), _pad_left(new.keys, width - 1, 0.0)])
        old.values = torch.cat([_pad_left(old.values, width - 1, 0.0), _pad_left(new.values, width - 1, 0.0)])
    return _State(
        running.rows + fresh.rows,
        torch.cat([_pad_left(running.ids, width, pad_id), _pad_left(fresh.ids, width, pad_id)]),
        torch.cat([_pad_left(running.mask, width, 0), _pad_left(fresh.mask, width, 0)]),
        torch.cat([running.step_input, fresh.step_input]),
        running.cache,
    )


def _pad_left(x: torch.Tensor, length: int, value) -> torch.Tensor:
    """``x`` with ``value`` columns added in front of its time axis (the last for ids / mask, -2 for K / V)."""
    axis = -1 if x.dim() == 2 else -2
    missing = length - x.shape[axis]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[axis] = missing
    return torch.cat([torch.full(shape, value, dtype=x.dtype, device=x.device), x], dim=axis)

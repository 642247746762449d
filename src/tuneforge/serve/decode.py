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


def decode_batch(model, rows: list[Row], *, pad_id: int, mixed_adapters: bool, use_cache: bool = True,
                 device: torch.device | None = None) -> None:
    """Decode every row to its end, streaming text through each row's ``on_text``.

    ``mixed_adapters``: pass each row's adapter to peft (``adapter_names=``), so rows for
    different LoRA adapters (and ``__base__``) share every forward.
    ``use_cache=False``: every step is a full forward (peft's soft prompts need it).
    """
    device = device or next(model.parameters()).device
    live = [row for row in rows if not row.cancelled.is_set()]
    for row in rows:
        if row.cancelled.is_set():
            row.on_done(row)
    if not live:
        return
    longest = max(len(row.prompt_ids) for row in live)
    ids = torch.full((len(live), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(live), longest), dtype=torch.long)
    for i, row in enumerate(live):
        ids[i, longest - len(row.prompt_ids):] = torch.tensor(row.prompt_ids, dtype=torch.long)
        mask[i, longest - len(row.prompt_ids):] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = None
    step_input = ids
    with torch.inference_mode():
        while live:
            extra = {"adapter_names": [row.adapter for row in live]} if mixed_adapters else {}
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if use_cache:
                from transformers import DynamicCache

                cache = cache if cache is not None else DynamicCache()
                out = model(input_ids=step_input, attention_mask=mask, position_ids=positions[:, -step_input.shape[1]:],
                            past_key_values=cache, use_cache=True, **extra)
            else:
                out = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra)
            logits = out.logits[:, -1, :].float().cpu()  # sampling runs on the CPU, with each row's own generator
            chosen: list[int] = []
            keep: list[int] = []
            for i, row in enumerate(live):
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
            new = torch.tensor(chosen, dtype=torch.long, device=device).unsqueeze(1)
            if len(keep) < len(live):
                index = torch.tensor(keep, dtype=torch.long, device=device)
                if cache is not None and keep:
                    cache.batch_select_indices(index)
                live = [live[i] for i in keep]
                ids, mask, new = ids[index], mask[index], new[index]
            ids = torch.cat([ids, new], dim=1)
            mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            step_input = new


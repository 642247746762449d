"""Attention for the shared-prompt pair layout without a T×T mask.

A shared-prompt row is ``prompt (P) + chosen (C) + rejected (R)`` plus padding
(``preference.data.collate_pairs_shared``): the prompt and the chosen response
attend causally among themselves, the rejected response attends to the prompt
and causally to itself, never to the chosen one. Given as a dense boolean mask,
the CPU SDPA kernel computes every one of the T² scores and masks afterwards,
and transformers repeats K and V for grouped-query attention. Here each row
makes two calls instead:

- ``prompt + chosen``: plain causal attention over the first P + C positions
  (the kernel skips the blocks above the diagonal);
- ``rejected``: its R queries against the prompt's and its own keys, a small
  R × (P + R) mask (all of the prompt, causal within itself);

both with ``enable_gqa`` (no repeated K / V). Padding positions get zeros: no
scored position ever reads them. Scores computed: about (P + C)² / 2 + R·(P + R / 2)
instead of T², roughly a third at preference-pair lengths.

Registered with transformers' ``AttentionInterface`` under :data:`NAME`; the
decoder is switched to it only for the call (:func:`pair_attention_for`), and
the rows' (P, C, R) reach it as the ``pair_spans`` keyword, which transformers
passes through to the attention function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...models.attention_switch import AttentionSwitch

NAME = "tuneforge_shared_prompt"


def pair_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask=None,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    pair_spans=None,
    **_,
) -> tuple:
    """query (B, H, T, D), key / value (B, Hkv, T, D), ``pair_spans`` [(P, C, R)] per row → ((B, T, H, D), None)."""
    if pair_spans is None:
        raise ValueError(
            f"attention '{NAME}' needs pair_spans (the shared-prompt rows' prompt / chosen / rejected lengths)"
        )
    dropout = dropout if module.training else 0.0
    t = query.shape[2]
    rows = []
    for b, (p, c, r) in enumerate(pair_spans):
        q, k, v = query[b : b + 1], key[b : b + 1], value[b : b + 1]  # (1, H, T, D), (1, Hkv, T, D)
        parts = [
            F.scaled_dot_product_attention(
                q[:, :, : p + c],
                k[:, :, : p + c],
                v[:, :, : p + c],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=True,
            )
        ]
        if r:
            end = p + c + r
            keys = torch.cat([k[:, :, :p], k[:, :, p + c : end]], dim=2)  # (1, Hkv, P + R, D)
            values = torch.cat([v[:, :, :p], v[:, :, p + c : end]], dim=2)
            allowed = torch.ones(r, p + r, dtype=torch.bool, device=query.device)
            allowed[:, p:] = torch.ones(r, r, dtype=torch.bool, device=query.device).tril()  # causal in itself
            parts.append(
                F.scaled_dot_product_attention(
                    q[:, :, p + c : end],
                    keys,
                    values,
                    attn_mask=allowed,
                    dropout_p=dropout,
                    scale=scaling,
                    enable_gqa=True,
                )
            )
        if t > p + c + r:
            parts.append(q.new_zeros(1, q.shape[1], t - p - c - r, q.shape[3]))  # padding: never read
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2), None  # (B, T, H, D), as transformers' attention functions return


_SWITCH = AttentionSwitch(NAME, pair_attention, "the shared-prompt attention; set pair_forward: separate")


def pair_attention_for(config):
    """Within the block, the decoder whose layers share ``config`` attends with :func:`pair_attention`.

    Raises RuntimeError when a forward inside the block never reached :func:`pair_attention` (a model whose
    attention layers read another config or dispatch on their own), rather than let it attend causally
    (models/attention_switch.py).
    """
    return _SWITCH.active(config)

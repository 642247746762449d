"""Causal attention per segment for packed rows, without a T×T mask ("varlen" attention on any device).

A packed row holds several examples whose ``position_ids`` restart at 0 (``data/packing.py``); each must
attend causally to itself and never to its neighbours. transformers expresses that as a dense block-diagonal
mask, and the CPU SDPA kernel then computes all T² scores of a row and masks afterwards (with a mask present,
transformers also repeats K and V for grouped-query attention). Here the batch is cut at its segment
boundaries instead:

- **Boundaries** are cumulative sequence lengths over the flattened (B·T) batch — every example start, every
  row start, and each row's padding tail as a segment of its own (``data.collate.segment_boundaries``). They are the
  same ``cu_seq_lens_q`` / ``cu_seq_lens_k`` arguments flash-attention's variable-length kernel takes
  (Dao 2023, FlashAttention-2, ``flash_attn_varlen_func``), so with ``flash_attention_2`` they go to
  transformers' flash path unchanged and isolation holds for any batch size.
- **Buckets.** Segments are grouped by length, rounded up to a multiple of 16 (of an eighth of the length's
  power of two above 128: :func:`bucket_length`), so one long example does not pad every short one; each bucket is
  one SDPA call over (segments, heads, length, dim) with ``is_causal`` (the kernel skips the blocks above the
  diagonal) and ``enable_gqa`` (no repeated K / V). A padded key sits after every real query of its segment,
  so causality alone keeps it unread.
- **On CUDA** in bf16 / fp16 the whole batch is one call of torch's flash-attention varlen kernel
  (``torch.nn.attention.varlen.varlen_attn``) with the same boundaries, when that torch has it.
- **Cost.** The CPU kernel's time grows with T² per row, causal or not; here with Σ Lᵢ² (padded lengths):
  for 512-token rows of ~160-token examples about a third.

Registered with transformers' ``AttentionInterface`` under :data:`NAME`; the decoder is switched to it only
for a training / held-out forward (:func:`segment_attention_for`), so generation keeps its own attention.
Because :data:`NAME` has no mask function, transformers builds no mask at all for the call.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math

import torch
import torch.nn.functional as F

from .attention_switch import AttentionSwitch

NAME = "tuneforge_segments"
_plan_cache: tuple | None = None  # (boundaries tensor, plan): every layer of one forward gets the same tensor


def bucket_length(length: int) -> int:
    """The padded length for a segment: a multiple of 16, or of 1/8 of its power of two above 128.

    Padding is at most 15 tokens or one eighth of the segment. The CPU kernel's cost grows with the padded
    length squared whether or not ``is_causal`` is set (measured: docs/BENCHMARKS.md), so coarser buckets
    (e.g. powers of two) would give back what splitting the row saved; finer ones mean more kernel calls.
    """
    step = max(16, 2 ** max(math.floor(math.log2(max(length, 1))) - 3, 0))
    return -(-length // step) * step


def _plan(boundaries: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Per bucket: (gather index (n, L), flat indices of its real positions); and the inverse order.

    Concatenating each bucket's real outputs in this order and indexing with the inverse order gives the
    outputs in the flattened batch's order.
    """
    cuts = boundaries.tolist()
    starts, lengths = cuts[:-1], [b - a for a, b in itertools.pairwise(cuts)]
    groups: dict[int, list[int]] = {}
    for s, length in enumerate(lengths):
        if length:
            groups.setdefault(bucket_length(length), []).append(s)
    device = boundaries.device
    buckets, sources = [], []
    for width in sorted(groups):
        segs = groups[width]
        start = torch.tensor([starts[s] for s in segs], device=device)[:, None]  # (n, 1)
        length = torch.tensor([lengths[s] for s in segs], device=device)[:, None]  # (n, 1)
        offset = torch.arange(width, device=device)[None, :]  # (1, L)
        real = offset < length  # (n, L)
        gather = start + torch.minimum(offset, length - 1)  # padded slots repeat the last real position
        kept = torch.nonzero(real.flatten()).flatten()  # positions in the (n·L) bucket that are real
        buckets.append((gather, kept))
        sources.append(gather.flatten()[kept])
    order = torch.cat(sources)  # flat batch position of each concatenated output
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    return buckets, inverse


def _cached_plan(boundaries: torch.Tensor):
    global _plan_cache
    if _plan_cache is None or _plan_cache[0] is not boundaries:
        _plan_cache = (boundaries, _plan(boundaries))
    return _plan_cache[1]


def segment_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask=None,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q=None,
    cu_seq_lens_k=None,
    max_length_q=None,
    sliding_window=None,
    softcap=None,
    s_aux=None,
    **_,
) -> tuple:
    """query (B, H, T, D), key / value (B, Hkv, T, D), ``cu_seq_lens_q`` (S + 1,) → ((B, T, H, D), None)."""
    if cu_seq_lens_q is None:
        raise ValueError(f"attention '{NAME}' needs cu_seq_lens_q (the packed batch's segment boundaries)")
    if (
        cu_seq_lens_k is not None
        and cu_seq_lens_k is not cu_seq_lens_q
        and not torch.equal(cu_seq_lens_k, cu_seq_lens_q)
    ):
        raise ValueError(f"attention '{NAME}': query and key segments must be the same (self-attention only)")
    if softcap is not None or s_aux is not None:
        raise ValueError(
            f"attention '{NAME}' does not implement logit soft-capping or attention sinks; "
            "set model.packed_attention: mask"
        )
    batch, heads, t, dim = query.shape
    dropout = dropout if module.training else 0.0
    # (B, H, T, D) → (B·T, H, D): one row per position of the flattened batch
    q, k, v = (x.transpose(1, 2).reshape(batch * t, x.shape[1], dim) for x in (query, key, value))
    kernel = _varlen_kernel(query) if dropout == 0.0 else None
    if kernel is not None:  # CUDA, half precision: one flash-attention varlen call over the whole batch
        # the caller's max_length_q (computed once per forward): reading it off the device here would
        # synchronise in every layer
        longest = int(max_length_q) if max_length_q is not None else int(cu_seq_lens_q.diff().max())
        _check_window(sliding_window, longest)
        return kernel(q, k, v, cu_seq_lens_q, longest, scaling).view(batch, t, heads, dim), None
    if sliding_window is not None:
        _check_window(sliding_window, int(cu_seq_lens_q.diff().max()))
    buckets, inverse = _cached_plan(cu_seq_lens_q)
    outputs = []
    for gather, kept in buckets:
        n, width = gather.shape
        flat = gather.flatten()
        # index_select, not x[flat]: its backward is an index_add_, advanced indexing's an index_put_ (slower)
        qb, kb, vb = (
            x.index_select(0, flat).view(n, width, x.shape[1], dim).transpose(1, 2) for x in (q, k, v)
        )  # (n, H, L, D)
        out = F.scaled_dot_product_attention(
            qb, kb, vb, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=True
        )  # (n, H, L, D)
        outputs.append(out.transpose(1, 2).reshape(n * width, heads, dim).index_select(0, kept))
    merged = torch.cat(outputs).index_select(0, inverse)  # (B·T, H, D) in batch order
    return merged.view(batch, t, heads, dim), None  # (B, T, H, D), as transformers' attention functions return


def _check_window(sliding_window, longest: int) -> None:
    if sliding_window is not None and longest > sliding_window:
        raise ValueError(
            f"attention '{NAME}': a segment is longer than the model's sliding window "
            f"({sliding_window}); set model.packed_attention: mask"
        )


@functools.lru_cache(maxsize=1)
def _varlen_signature():
    """(varlen_attn, its causal keyword, whether it takes enable_gqa / scale), or None: read once per process."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params


def _varlen_kernel(query: torch.Tensor):
    """torch's flash-attention varlen kernel (``torch.nn.attention.varlen``) for CUDA half-precision inputs.

    Returns ``f(q, k, v, cu, longest, scale) -> (N, H, D)`` or None (CPU, fp32, or a torch without it). The
    keyword names moved between torch releases (``is_causal`` → ``window_size``), so they are read from the
    signature.
    """
    if not query.is_cuda:
        return None
    half = query.dtype in (torch.bfloat16, torch.float16)
    autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    if not half and autocast is None:
        return None
    found = _varlen_signature()
    if found is None:
        return None
    varlen_attn, causal, gqa, takes_scale = found

    def run(q, k, v, cu, longest, scale):
        if not gqa and k.shape[1] != q.shape[1]:
            k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
        extra = {"enable_gqa": True} if gqa else {}
        if takes_scale:
            extra["scale"] = scale
        if autocast is not None:  # under autocast RoPE can hand fp32 queries over; SDPA would cast them too
            q, k, v = (x.to(autocast) for x in (q, k, v))
        cu = cu.to(device=q.device, dtype=torch.int32)
        return varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, longest, longest, **causal, **extra)

    return run


_SWITCH = AttentionSwitch(NAME, segment_attention, "the per-segment attention; set model.packed_attention: mask")


def segment_attention_for(config):
    """Within the block, the decoder whose layers share ``config`` attends with :func:`segment_attention`.

    Raises RuntimeError when a forward inside the block never reached it (models/attention_switch.py),
    rather than let packed examples attend to each other.
    """
    return _SWITCH.active(config)


def unsupported_reason(model_config) -> str | None:
    """Why per-segment attention cannot stand in for this model's attention, or None when it can."""
    text = getattr(model_config, "get_text_config", lambda: model_config)()
    if getattr(text, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None) or []
    if window and (getattr(text, "use_sliding_window", True) or "sliding_attention" in layer_types):
        return "the model uses sliding-window attention"
    if any(kind not in ("full_attention", "sliding_attention") for kind in layer_types):
        return f"the model has {sorted(set(layer_types))} layers"
    return None


def packed_attention_mode(setting: str, model_config, device: torch.device) -> str:
    """How a packed batch keeps its examples apart: "segments", "flash" (varlen arguments) or "mask".

    ``setting`` is ``model.packed_attention``: auto | segments | mask. flash_attention_2 always gets the
    variable-length arguments (its mask path would let packed rows of a batch > 1 attend to each other).
    auto picks per-segment attention with SDPA on CPU, and on CUDA when torch has the flash-attention varlen
    kernel — both measured faster than the mask (docs/BENCHMARKS.md) — and the mask elsewhere.
    """
    implementation = getattr(model_config, "_attn_implementation", None) or "sdpa"
    if implementation.startswith("flash"):
        return "flash"
    if setting == "mask":
        return "mask"
    reason = unsupported_reason(model_config)
    if setting == "segments":
        if reason:
            raise ValueError(f"model.packed_attention: segments cannot be used: {reason}; set it to mask or auto")
        return "segments"
    if reason or implementation != "sdpa" or not (device.type == "cpu" or (device.type == "cuda" and _has_varlen())):
        return "mask"
    return "segments"


def _has_varlen() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch.nn.attention.varlen") is not None

"""Output projection + cross-entropy in chunks, without keeping the (N, V) logits.

The usual path materialises fp32 logits for every loss position (N × V: with
SmolLM2's 49k vocabulary, ~350 MB for 1,800 positions), then log-probs, then
their gradient of the same size. Profiled on CPU that was ~28 % of a LoRA SFT
step, much of it page faults from allocating those buffers. Here the forward
pass walks over chunks of positions and, for each chunk, computes the logits,
the loss and at once the gradient with respect to the chunk's hidden states
(softmax − one-hot, times the weight), reusing one buffer. Backward then only
scales the stored gradients. FLOPs are the same as the usual path; peak memory
and allocator traffic drop to one chunk.

The same idea appears as "fused linear cross-entropy" (Liger Kernel, Hsu et al.
2024) and "Cut Cross-Entropy" (Wijmans et al. 2025); this is a plain PyTorch
version without custom kernels.

Under bf16 autocast (CPU or CUDA) the two large matmuls — logits and the
gradient — run in bf16 like an autocast ``nn.Linear`` would, while the
logits are held in fp32 for the log-sum-exp and the loss, and the loss and
the weight gradient are summed in fp32: the same rounding as the unfused
autocast path (bf16 logits, then ``.float()`` and cross-entropy). Without
autocast, or under fp16 autocast (whose unscaled softmax gradients would
underflow in fp16), everything is fp32.
"""

from __future__ import annotations

import torch

# Elements of the per-chunk logits buffer (fp32): 2**25 → 128 MB.
CHUNK_ELEMENTS = 2**25


def _chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_ELEMENTS // vocab)


def _autocast_low_dtype(device_type: str) -> torch.dtype | None:
    """bf16 when bf16 autocast is on for this device (the matmul dtype here), else None (fp32)."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return torch.bfloat16
    return None


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, low=None):
        # hidden (N, H), weight (V, H), targets (N,) → summed loss (fp32 scalar); low: matmul dtype or None
        n, vocab = hidden.shape[0], weight.shape[0]
        rows = _chunk_rows(vocab)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        buffer = torch.empty((min(rows, n), vocab), dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Autocast off: the matmul dtype is chosen explicitly (low), and out= needs exact dtypes.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            _accumulate(hidden, weight, targets, rows, buffer, total, grad_hidden, grad_weight, low)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_output if grad_hidden is not None else None
        gw = (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None
        return gh, gw, None, None


def _accumulate(hidden, weight, targets, rows, buffer, total, grad_hidden, grad_weight, low=None) -> None:
    """Loss of every chunk into ``total``; gradients (if buffers given) into the grad buffers.

    ``low`` (bf16 or None): the dtype of the matmuls; logits, loss and sums stay fp32.
    """
    dtype = low or torch.float32
    w = weight if weight.dtype == dtype else weight.to(dtype)
    # bf16: the matmul writes here, then the logits are widened into the fp32 buffer.
    low_buffer = torch.empty(buffer.shape, dtype=low, device=buffer.device) if low is not None else None
    n = hidden.shape[0]
    need_hidden, need_weight = grad_hidden is not None, grad_weight is not None
    for start in range(0, n, rows):
        h = hidden[start : start + rows]
        t = targets[start : start + rows]
        logits = buffer[: h.shape[0]]
        h = h if h.dtype == dtype else h.to(dtype)
        if low_buffer is None:
            torch.matmul(h, w.t(), out=logits)
        else:
            low_logits = low_buffer[: h.shape[0]]
            torch.matmul(h, w.t(), out=low_logits)
            logits.copy_(low_logits)
        lse = torch.logsumexp(logits, dim=-1)  # (C,)
        total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
        if need_hidden or need_weight:
            # d(sum of losses)/d logits = softmax − one-hot, computed in place in the buffer.
            logits.sub_(lse[:, None]).exp_()
            logits[torch.arange(h.shape[0], device=h.device), t] -= 1.0
            d = logits if low_buffer is None else low_logits.copy_(logits)
            if need_hidden:
                grad_hidden[start : start + rows] = (d @ w).to(grad_hidden.dtype)
            if need_weight:
                if low_buffer is None:
                    grad_weight.addmm_(d.t(), h)
                else:
                    grad_weight += d.t() @ h  # bf16 product (fp32 accumulation inside), summed in fp32


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_i CE(hidden_i · weightᵀ, targets_i), as a scalar, differentiable w.r.t. hidden and weight.

    hidden: (N, H); weight: (V, H) (an output projection without bias); targets: (N,) in [0, V).
    """
    low = _autocast_low_dtype(hidden.device.type)
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        # Evaluation: the loss only (needs_input_grad would still ask for weight gradients).
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = _chunk_rows(weight.shape[0])
        buffer = torch.empty((min(rows, hidden.shape[0]), weight.shape[0]), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            _accumulate(hidden, weight, targets, rows, buffer, total, None, None, low)
        return total
    return _LinearCrossEntropy.apply(hidden, weight, targets, low)


def supports_fused(head: torch.nn.Module) -> bool:
    """Plain `nn.Linear` without bias whose weight is an ordinary local tensor.

    Sharded weights (FSDP DTensors, DeepSpeed ZeRO-3 partitions) or an adapter on
    the head take the module's own forward instead.
    """
    weight = getattr(head, "weight", None)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - very old torch
        DTensor = ()
    return (
        type(head) is torch.nn.Linear
        and head.bias is None
        and isinstance(weight, torch.nn.Parameter)
        and not isinstance(weight, DTensor)
        and not hasattr(weight, "ds_id")
    )

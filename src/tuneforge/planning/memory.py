"""The memory model: bytes by part for one training process.

Activations are what autograd saves for backward. For a Llama-style decoder
layer (pre-norm RMSNorm, SDPA attention with GQA, SwiGLU MLP) the saved
tensors per token are, counted one storage at a time with
``torch.autograd.graph.saved_tensors_hooks`` on SmolLM2-135M's architecture:

- the two norms' inputs (2·h) and reciprocal RMS (2 values),
- the two normed outputs, saved by the linears after them (2·h),
- SDPA's query, key, value, output and log-sum-exp (h + 2·kv + h + heads),
- the MLP's gate, SiLU(gate), up and down-projection input (4·i),
- per norm whose weight trains (full fine-tuning, ``layernorm``): its normed input (h),
- per LoRA module: the (N, r) output of A that B saves (Σ r over the layer's modules).

That is 6·h + 2·kv + 4·i + heads + 2 (+ h per trained norm, + Σ r) elements per
token and layer; the measurement gave 10,109 for LoRA r 16 on all linears
(formula: 10,107) and 11,188 for full fine-tuning (formula: 11,147).
With gradient checkpointing only each layer's input is kept (h per token and
layer, measured 595 for h = 576), plus one layer's full set while it is
recomputed in backward.

Encoders (BERT / MiniLM: biases, GELU, LayerNorm statistics, dropout masks)
use the same count times ``ENCODER_FACTOR``, measured on MiniLM-L6 (see the
constant). Under bf16 autocast the residual stream and the norms stay
fp32 (4 bytes) and the rest is bf16 (2 bytes).

The output projection runs only at loss positions, in chunks
(``training/linear_ce.py``): one fp32 buffer of ``min(N, 2**25 // V)`` × V,
the gradient of the selected hidden states (N × h, kept from forward to
backward), and for a trained head an fp32 (V × h) weight-gradient buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..training.linear_ce import CHUNK_ELEMENTS  # elements of the per-chunk fp32 logits buffer
from .shapes import Arch, Params

# Encoder layers (BERT-style: biases, GELU, LayerNorm, dropout masks) save a different set per token;
# measured on all-MiniLM-L6-v2 (h 384, i 1536), full fine-tuning, dropout 0.1, 32 × 64 tokens:
# saved-tensor bytes / the decoder formula's bytes = 441.3 / 470.0 MiB.
ENCODER_FACTOR = 0.94
# On CPU a step's peak resident memory exceeds the saved tensors by the forward's and backward's
# temporaries and by glibc's heap high-water mark (freed blocks are not returned at once). Measured on
# SmolLM2-135M + LoRA, 2 × 512 tokens, two steps (peak RSS growth over weights and runtime, ÷ the
# saved-tensor bytes): 2.2 in fp32, 1.9 under bf16 autocast. CUDA's max_memory_allocated counts live
# tensors only: there the temporaries are about one layer's worth.
CPU_WORKING_SET = 2.0
# The same ratio for an encoder (all-MiniLM-L6-v2, contrastive_faq, fp32, batches of 32 short texts:
# 886 MB over the 653 MB its mean batch saves): fewer, smaller temporaries than a 512-token decoder row.
CPU_WORKING_SET_ENCODER = 1.4


@dataclass(frozen=True)
class Part:
    """One term. ``phase``: "static" lives the whole step; "forward" peaks at the end of forward
    (activations and what goes with them); "backward" is allocated in backward as the activations are
    freed (gradients); "rollout" exists only while sampling (PPO). The peak is static + the largest phase."""

    name: str
    bytes: int
    note: str = ""
    phase: str = "static"


def layer_elements_per_token(arch: Arch, params: Params) -> tuple[int, int]:
    """(fp32-side, compute-side) elements one layer saves per token: the residual stream and norm
    statistics stay fp32 under autocast; the rest follows the compute dtype."""
    h, kv, i = arch.hidden, arch.kv_width, arch.intermediate
    fp32_side = 2 * h + 2  # norm inputs (residual stream) + reciprocal RMS
    compute_side = (
        2 * h
        + h
        + 2 * kv
        + arch.attn_width
        + arch.heads
        + 4 * i
        + h * params.norms_trainable_per_layer
        + params.adapter_rank_per_layer
    )
    if arch.kind == "encoder":
        return round(fp32_side * ENCODER_FACTOR), round(compute_side * ENCODER_FACTOR)
    return fp32_side, compute_side


def activation_bytes(arch: Arch, params: Params, *, tokens: int, compute_bytes: int, checkpointing: bool) -> int:
    """Saved activations of one forward over ``tokens`` padded positions (B × T)."""
    fp32_side, compute_side = layer_elements_per_token(arch, params)
    per_layer = tokens * (4 * fp32_side + compute_bytes * compute_side)
    if checkpointing:
        # Each layer keeps its input; one layer at a time is recomputed with everything saved.
        return checkpoint_inputs_bytes(arch, params, tokens=tokens) + per_layer
    return arch.layers * per_layer + _final_norm_bytes(arch, params, tokens)


def checkpoint_inputs_bytes(arch: Arch, params: Params, *, tokens: int) -> int:
    """What a checkpointed forward keeps: each layer's fp32 input, and the final norm's tensors."""
    return arch.layers * tokens * 4 * arch.hidden + _final_norm_bytes(arch, params, tokens)


def _final_norm_bytes(arch: Arch, params: Params, tokens: int) -> int:
    # Its input, and its normed output when the norm's weight trains (full fine-tuning).
    return tokens * 4 * arch.hidden * (1 + (params.norms_trainable_per_layer > 0))


def logits_bytes(arch: Arch, params: Params, *, loss_positions: int, compute_bytes: int, lm_head: bool) -> int:
    """The chunked output projection + loss at ``loss_positions`` (zero-ish for pooled heads)."""
    if not lm_head or not arch.vocab:
        return 0
    rows = max(16, CHUNK_ELEMENTS // arch.vocab)
    buffer = min(rows, loss_positions) * arch.vocab * 4
    hidden = loss_positions * arch.hidden * (compute_bytes + compute_bytes)  # selected states + their gradient
    weight_grad = arch.vocab * arch.hidden * 4 if params.head_trainable else 0
    return buffer + hidden + weight_grad


def working_set_bytes(activations: int, arch: Arch, *, device: str) -> int:
    """Temporaries and allocator slack beyond the saved activations (see CPU_WORKING_SET)."""
    if device == "cpu":
        factor = CPU_WORKING_SET_ENCODER if arch.kind == "encoder" else CPU_WORKING_SET
        return round((factor - 1) * activations)
    return round(2 * activations / max(arch.layers, 1))


def autocast_copies_bytes(params: Params, *, autocast: bool) -> int:
    """Under autocast every linear weight is cast to bf16 / fp16 in forward and the copy is saved for
    backward (frozen weights are not cached, so the copies live until their layer's backward)."""
    return 2 * params.linear_weights if autocast else 0


def state_parts(params: Params) -> list[Part]:
    """Trainable weights, their gradients, AdamW's two moments (+ its per-tensor step counter)."""
    return [
        Part("trainable parameters", params.trainable_bytes, f"{params.trainable:,} parameters"),
        Part(
            "gradients",
            params.trainable_bytes,
            "allocated in backward, in memory the activations free",
            phase="backward",
        ),
        Part(
            "optimizer state",
            2 * params.trainable_bytes + 4 * params.trainable_tensors,
            "AdamW: exp_avg + exp_avg_sq, + a step counter per tensor",
        ),
    ]


def kv_cache_bytes(arch: Arch, *, sequences: int, length: int, compute_bytes: int) -> int:
    """Keys and values of every layer for ``sequences`` × ``length`` positions (generation)."""
    return 2 * arch.layers * sequences * length * arch.kv_width * compute_bytes

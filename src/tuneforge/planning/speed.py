"""The time model: FLOPs per step ÷ (this machine's matmul peak × a measured utilisation).

FLOPs per token follow the SFT benchmark's convention (docs/BENCHMARKS.md,
"SFT throughput"): 6·N for full fine-tuning (forward 2N, activation gradients
2N, weight gradients 2N) and 4·N for a frozen base (no weight gradients), plus
6·n for the n trainable adapter parameters, plus attention scores:
4 · T/2 · (heads × head_dim) per layer and token forward (causal: on average
half the row is attended), three times that with backward. One departure: N
here leaves out embedding tables (a lookup, not a matmul: half of MiniLM's
parameters) and the output head, which runs only at loss positions
(training/linear_ce.py) and is counted there, 2·V·h forward and 2·V·h (4·V·h
when it trains) backward per position. For SmolLM2 SFT this gives the same
total as the benchmark's 4 · 134.5 M per token within 3 %, so its measured MFU
carries over. Forward-only passes (references, reward models) count 2·N.

The peak is a timed square matmul in the run's compute dtype (cached per
process); the utilisation factor is what this code path reached against that
peak under the same FLOP count, measured (``UTILISATION``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from .shapes import Arch, Params

# Measured fraction of the matmul peak, by (device, precision, path), under this module's FLOP count.
# Paths: "adapter" (frozen base + adapter, causal LM), "full" (full fine-tuning, causal LM), "encoder"
# (encoder, full or adapter), "generate" (token-by-token decoding). Each measured row is one shipped
# config run for 4 steps on the 2-core Zen 4 of docs/BENCHMARKS.md ("Resource planner: planned vs
# measured"): FLOPs per step ÷ (matmul peak × seconds per step); the other configs there check them.
UTILISATION: dict[tuple[str, str, str], tuple[float, str]] = {
    ("cpu", "fp32", "adapter"): (0.58, "SFT benchmark's 57.8% MFU (docs/BENCHMARKS.md); quickstart fp32 run: -19%"),
    ("cpu", "fp32", "full"): (0.56, "measured: sft_full fp32, 2 runs (docs/BENCHMARKS.md, resource planner)"),
    ("cpu", "fp32", "encoder"): (0.60, "measured: contrastive_faq fp32 (docs/BENCHMARKS.md, resource planner)"),
    ("cpu", "bf16", "adapter"): (0.42, "measured: quickstart bf16, 2 runs (docs/BENCHMARKS.md, resource planner)"),
    ("cpu", "bf16", "full"): (0.34, "measured: sft_full bf16, 2 runs (docs/BENCHMARKS.md, resource planner)"),
    ("cpu", "bf16", "encoder"): (0.37, "measured: contrastive_faq bf16, 1 run (docs/BENCHMARKS.md, resource planner)"),
    ("cpu", "fp32", "generate"): (0.05, "assumed (not measured): decoding is latency-bound"),
    ("cpu", "bf16", "generate"): (0.03, "assumed (not measured): decoding is latency-bound"),
}
_DEFAULT_UTILISATION = {"cuda": 0.40, "cpu": 0.40}
_GENERATE_DEFAULT = 0.02


def utilisation(device: str, precision: str, path: str) -> tuple[float, str]:
    """(factor, where it comes from) for a code path; unmeasured combinations say so."""
    found = UTILISATION.get((device, precision, path))
    if found:
        return found
    if path == "generate":
        return _GENERATE_DEFAULT, "assumed (not measured)"
    return _DEFAULT_UTILISATION.get(device, 0.4), "assumed (not measured on this device)"


def train_flops_per_token(arch: Arch, params: Params, *, seq_len: float) -> float:
    """FLOPs of one token through forward + backward, the output head excepted (module docstring)."""
    full = params.trainable >= 0.5 * params.total
    body = params.total - params.embeddings
    dense = 6 * body if full else 4 * body + 6 * params.trainable
    attention = 3 * 4 * arch.layers * arch.attn_width * seq_len / 2
    return dense + attention


def head_flops_per_position(arch: Arch, params: Params) -> float:
    """The output projection at one loss position: forward, input gradient, weight gradient if it trains."""
    return (6 if params.head_trainable else 4) * arch.vocab * arch.hidden


def forward_flops_per_token(arch: Arch, total_params: int, *, seq_len: float) -> float:
    return 2 * total_params + 4 * arch.layers * arch.attn_width * seq_len / 2


@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s
    how: str


def matmul_peak(device: str, precision: str) -> Peak:
    """Best square matmul FLOP/s in the compute dtype, with torch's current thread count (cached)."""
    return _peak(device, precision, torch.get_num_threads())


@functools.cache
def _peak(device: str, precision: str, threads: int) -> Peak:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    size = 1024 if device == "cpu" else 4096
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    deadline = time.perf_counter() + 0.3
    runs = 0
    while runs < 3 or (time.perf_counter() < deadline and runs < 50):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        runs += 1
    where = f"{threads} threads" if device == "cpu" else torch.cuda.get_device_name()
    return Peak(2 * size**3 / best, f"best {size}² {precision} matmul of {runs}, {where}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def clear_cache() -> None:
    _peak.cache_clear()

"""Which mixed precision ``training.mixed_precision: auto`` picks, and why.

On CUDA: bf16 autocast where the GPU supports it, else fp16. On CPU it
depends on the CPU: with AVX-512-BF16 or AMX-BF16 (x86) or the ``bf16``
feature (aarch64), oneDNN runs bf16 matmuls natively — a 2048² bf16 matmul
ran 2.5× faster than fp32 on an AMD Zen 4 (415.7 vs 168.7 GFLOP/s, 2
threads) — while on AVX2-only CPUs bf16 is emulated and unusably slow. So
the choice is detected, never assumed: the CPU flags must say bf16, and a
quick timed bf16-vs-fp32 matmul (≈ 0.1 s, once per process) must confirm
it is clearly faster (≥ ``MIN_SPEEDUP``). Otherwise fp32.

``TUNEFORGE_CPU_BF16=0`` (or ``1``) pins what ``auto`` picks on CPU without
measuring: for reproducible numbers across machines (a test suite, a
benchmark), or where the flags cannot be read.

bf16 here always means autocast: weights, gradients and optimizer state
stay fp32 (the model is loaded in fp32 on CPU), only the matmuls run in
bf16.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import torch

# bf16 must beat fp32 by this factor on the timed matmul before `auto` picks it:
# autocast adds casts around every matmul, so a marginal matmul gain is no gain.
MIN_SPEEDUP = 1.3
_BENCH_SIZE = 1024  # 2 GFLOP per fp32 matmul: ~10 ms at 200 GFLOP/s
_X86_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    choice: str  # accelerate's mixed_precision: "no", "bf16" or "fp16"
    reason: str

    @property
    def label(self) -> str:
        return {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.choice]

    def describe(self) -> str:
        return f"{self.label} ({self.reason})"


def cpu_bf16_flags() -> tuple[bool | None, str]:
    """(whether the CPU flags advertise native bf16, which flags / why unknown). None: flags unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return None, "CPU flags unreadable (no /proc/cpuinfo)"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    found = [f for f in _X86_FLAGS if f in flags]
    if not found and "bf16" in flags:  # aarch64 (Graviton 3+, Neoverse V1/N2, ...)
        found = ["bf16"]
    capability = _torch_capability()
    if found:
        return True, f"CPU has {'+'.join(found)}" + (f", torch kernels {capability}" if capability else "")
    return False, "CPU has no AVX512-BF16/AMX-BF16" + (f" (torch kernels {capability})" if capability else "")


def _torch_capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        return ""


def _best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_cpu_bf16_speedup(size: int = _BENCH_SIZE, reps: int = 3) -> float:
    """fp32 time / bf16 time of a ``size``² matmul on this CPU with the current thread count.

    A small bf16 matmul runs first: where bf16 is emulated it is far slower and the
    large one is skipped (returns the small one's ratio), so this never hangs.
    """
    gen = torch.Generator().manual_seed(0)
    small = torch.randn(256, 256, generator=gen)
    small16 = small.bfloat16()
    ratio_small = _best_time(lambda: small @ small, 2) / max(_best_time(lambda: small16 @ small16, 2), 1e-9)
    if ratio_small < 0.5:
        return ratio_small
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a16 @ b16, a @ b  # warm-up: oneDNN primitive creation, page faults
    t16 = _best_time(lambda: a16 @ b16, reps)
    t32 = _best_time(lambda: a @ b, reps)
    return t32 / max(t16, 1e-9)


@functools.cache
def _cpu_auto(threads: int) -> Precision:
    supported, why = cpu_bf16_flags()
    if not supported:
        return Precision("no", f"{why}; bf16 would be emulated and slow")
    speedup = measure_cpu_bf16_speedup()
    measured = f"bf16 matmul {speedup:.1f}× fp32 on {threads} thread{'s' if threads != 1 else ''}"
    if speedup >= MIN_SPEEDUP:
        return Precision("bf16", f"{why}; {measured}")
    return Precision("no", f"{why} but {measured}, under the {MIN_SPEEDUP}× needed")


ENV_OVERRIDE = "TUNEFORGE_CPU_BF16"


def cpu_auto_precision() -> Precision:
    """`auto` on CPU: bf16 autocast where it measured clearly faster, else fp32 (cached per thread count)."""
    pinned = os.environ.get(ENV_OVERRIDE, "").strip()
    if pinned in ("0", "1"):
        return Precision("bf16" if pinned == "1" else "no", f"{ENV_OVERRIDE}={pinned}")
    return _cpu_auto(torch.get_num_threads())


def resolve_precision(requested: str, *, cpu: bool) -> Precision:
    """The mixed precision a run with ``training.mixed_precision: requested`` uses, and why."""
    if requested != "auto":
        reason = "training.mixed_precision: " + requested
        if cpu and requested == "bf16":
            supported, why = cpu_bf16_flags()
            if not supported:
                reason += f"; {why}: expect it to be slow"
        return Precision(requested, reason)
    if not cpu:
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "CUDA GPU with bf16 support")
        return Precision("fp16", "CUDA GPU without bf16 support")
    return cpu_auto_precision()


def clear_cache() -> None:
    """Forget the measured choice (tests)."""
    _cpu_auto.cache_clear()

"""WiSE-FT-style interpolation after a stage (Wortsman et al. 2022, arXiv 2109.01903).

θ(α) = (1−α)·θ_start + α·θ_end over the stage's trained weights: α = 0 is the model before the
stage, α = 1 after it. For a fresh LoRA adapter θ_start has B = 0, and interpolating B alone (A kept
at its trained value) is exactly "scale the adapter by α": ΔW(α) = α·B·A·s. Scoring the new task
and the earlier ones at each α shows how much of the new task each unit of forgetting buys.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch


@contextmanager
def interpolated(
    params: dict[str, torch.nn.Parameter], start: dict[str, torch.Tensor], alpha: float, keep: set[str] = frozenset()
):
    """Set ``params`` to (1−α)·start + α·end (end = their current values) inside the block; names in
    ``keep`` stay at their end value. The end values come back afterwards, bit for bit."""
    end = {name: p.detach().clone() for name, p in params.items() if name in start}
    try:
        with torch.no_grad():
            for name, value in end.items():
                if name not in keep:
                    params[name].copy_(torch.lerp(start[name].to(value.dtype), value, alpha))
        yield
    finally:
        with torch.no_grad():
            for name, value in end.items():
                params[name].copy_(value)


def sweep(
    params: dict[str, torch.nn.Parameter],
    start: dict[str, torch.Tensor],
    alphas: list[float],
    score: Callable[[], tuple[float, float | None]],
    keep: set[str] = frozenset(),
) -> dict:
    """Score (new task, mean of earlier tasks) at each α; the weights end where they began."""
    new, old = [], []
    for alpha in alphas:
        with interpolated(params, start, alpha, keep):
            new_score, old_score = score()
        new.append(new_score)
        old.append(old_score)
    return {"alphas": list(alphas), "new": new, "old": old}


def lora_a_names(params: dict[str, torch.nn.Parameter], start: dict[str, torch.Tensor]) -> set[str]:
    """The LoRA A matrices of adapters that started from B = 0: scaling those adapters keeps A fixed."""
    fresh = set()
    for name in start:
        if ".lora_B." in name and not start[name].any():
            fresh.add(name.replace(".lora_B.", ".lora_A."))
    return {name for name in fresh if name in params}

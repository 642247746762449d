"""The two verbs every method shares: `forward_backward` and `optimizer_step`.

Gradient accumulation is count-weighted: the summed loss of each micro-batch
is divided by the count (loss tokens for language modelling, examples for
classification) of the *whole* accumulated batch (all micro-batches, all
processes), so batch 8 × 1 step and batch 1 × 8 accumulation give the same
update (cf. transformers PR #34191).

The next-token loss itself, which cpt, sft, DPO and PPO share, is in ``methods/causal_lm/loss.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, value: float, what: str = "loss"):
        self.step = step
        self.value = value
        super().__init__(
            f"{what} became {value} at step {step}; the run stopped and the last good checkpoint was kept. "
            "Lower training.learning_rate, set training.max_grad_norm, or check the data around this step."
        )


@dataclass
class StepStats:
    loss: float  # count-weighted mean over the accumulated batch (all processes)
    count: int  # what the loss is normalised by (loss tokens or examples), accumulated batch, all processes
    tokens: int  # real (non-padding) tokens in the accumulated batch (all processes)


def forward_backward(loss_model, micro_batches: list, accelerator) -> StepStats:
    """Run forward and backward over one accumulated batch; gradients are summed in place.

    ``micro_batches`` are ``interface.Batch`` objects: ``loss_model(**batch.inputs)``
    returns (summed loss, count) and ``batch.count`` is known before the forward, so
    every micro-batch can be scaled by the count of the whole accumulated batch.
    """
    device = accelerator.device
    local = torch.tensor(
        [sum(mb.count for mb in micro_batches), sum(mb.tokens for mb in micro_batches)],
        dtype=torch.float64,
        device=device,
    )
    totals = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    total_count = max(int(totals[0].item()), 1)
    # DDP averages gradients over processes; scaling by the process count turns that
    # average back into the sum that count-weighting needs.
    scale = accelerator.num_processes / total_count
    summed = torch.zeros((), dtype=torch.float64, device=device)
    # accelerate's backward divides the loss by its gradient_accumulation_steps (DeepSpeed's
    # engine does the same); undo that, since the count-weighted scale above is already exact.
    scale *= accelerator.gradient_accumulation_steps
    for mb in micro_batches:
        # `accumulate` skips the gradient all-reduce until the last micro-batch (DDP no_sync,
        # FSDP / DeepSpeed equivalents) when gradient_accumulation_steps == len(micro_batches).
        with accelerator.accumulate(loss_model):
            loss_sum, _ = loss_model(**{k: v.to(device) for k, v in mb.inputs.items()})
            accelerator.backward(loss_sum * scale)
        summed += loss_sum.detach().double()
    if accelerator.num_processes > 1:
        summed = accelerator.reduce(summed, reduction="sum")
    return StepStats(loss=float(summed.item()) / total_count, count=int(totals[0].item()), tokens=int(totals[1].item()))


def optimizer_step(
    model, optimizer, scheduler, accelerator, max_grad_norm: float | None, *, step: int, before_zero_grad=None
) -> float:
    """Clip, step, schedule, zero. Returns the gradient norm before clipping (nan if not clipped).

    A non-finite gradient norm stops the run *before* the weights are touched.
    """
    grad_norm = math.nan
    if max_grad_norm is not None:
        norm = accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        grad_norm = float(norm)
        # With fp16 loss scaling an overflow is routine: the scaler skips this step and
        # lowers its scale. Without a scaler a non-finite gradient is a real failure.
        if not math.isfinite(grad_norm) and accelerator.scaler is None:
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, grad_norm, what="gradient norm")
    optimizer.step()
    scheduler.step()
    if before_zero_grad is not None:
        before_zero_grad(step)
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(step, loss)

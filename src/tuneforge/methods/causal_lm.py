"""The training loop shared by continued pretraining (`cpt`) and SFT (`sft`).

Both minimise next-token cross-entropy; they differ only in which tokens carry
a loss (every token for raw text, completions / assistant turns for SFT), and
that is decided by the data pipeline's labels. The loop reads top to bottom:
take the next global batch, forward/backward (token-weighted), step, log,
maybe evaluate, maybe checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.types import PackedRow
from ..training.checkpoint import gather_trainable_state, is_sharded, mark_complete, save_checkpoint
from ..training.engine import MetricsLog, RowOrder, StopSignal, split_for_process
from ..training.step import check_finite, forward_backward, optimizer_step


class TrainingInterrupted(Exception):
    def __init__(self, signal_name: str, checkpoint: Path | None):
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        super().__init__(f"stopped by {signal_name}; checkpoint at {checkpoint}")


@dataclass
class LoopSettings:
    batch_size: int
    gradient_accumulation_steps: int
    total_steps: int
    seed: int
    max_grad_norm: float | None
    save_every: int | None
    keep_checkpoints: int
    log_every: int
    eval_every: int | None


@dataclass
class LoopResult:
    steps: int
    tokens: int
    loss_tokens: int
    wall_seconds: float
    final_loss: float | None
    history: list[dict] = field(default_factory=list)


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process when any process has the flag: all take the same branch next."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def collate_rows(rows: list[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    from ..data.collate import collate

    batch = collate(rows, pad_id)
    batch["real_tokens"] = torch.tensor(sum(len(r.input_ids) for r in rows))
    return batch


def train_loop(*, loss_model, optimizer, scheduler, accelerator, rows: list[PackedRow], pad_id: int,
               settings: LoopSettings, run_dir: Path, start_state: dict, adapter_model=None,
               eval_fn=None) -> LoopResult:
    """Train until ``settings.total_steps``; resume from ``start_state`` (step, rows_consumed)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    order = RowOrder(len(rows), settings.seed)
    global_batch = settings.batch_size * settings.gradient_accumulation_steps * world
    step = int(start_state.get("step", 0))
    consumed = int(start_state.get("rows_consumed", 0))
    tokens = loss_tokens = 0
    last_loss = None
    history: list[dict] = []
    main = accelerator.is_main_process

    sharded = is_sharded(accelerator)

    def checkpoint() -> Path | None:
        accelerator.wait_for_everyone()
        weights = gather_trainable_state(accelerator, loss_model)  # collective under FSDP / DeepSpeed
        path = None
        if main:
            path = save_checkpoint(
                run_dir, step, model=accelerator.unwrap_model(loss_model), weights=weights,
                optimizer=None if sharded else optimizer, scheduler=scheduler, keep=settings.keep_checkpoints,
                state={"rows_consumed": consumed, "epoch": consumed / len(rows)},
                adapter_model=None if sharded else adapter_model, pending=sharded,
            )
        accelerator.wait_for_everyone()
        if sharded:
            # Sharded optimizer state: each process writes its own shard (same process count to resume).
            # The checkpoint counts only once every shard is written (PENDING removed).
            folder = run_dir / "checkpoints" / f"step-{step:06d}"
            accelerator.save_state(str(folder / "accelerate_state"))
            accelerator.wait_for_everyone()
            if main:
                mark_complete(folder, run_dir, settings.keep_checkpoints)
            accelerator.wait_for_everyone()
        return path

    started = time.perf_counter()
    loss_model.train()
    log = MetricsLog(run_dir / "metrics.jsonl", total_steps=settings.total_steps, start_step=step,
                     accelerator=accelerator, enabled=main)
    with StopSignal() as stop, log:
        while step < settings.total_steps:
            indices = order.take(consumed, global_batch)
            micro = [collate_rows([rows[i] for i in mb], pad_id)
                     for mb in split_for_process(indices, rank, world, settings.batch_size)]
            stats = forward_backward(loss_model, micro, accelerator)
            check_finite(stats.loss, step + 1)
            grad_norm = optimizer_step(loss_model, optimizer, scheduler, accelerator, settings.max_grad_norm,
                                       step=step + 1)
            step += 1
            consumed += global_batch
            tokens += stats.tokens
            loss_tokens += stats.loss_tokens
            last_loss = stats.loss
            record = {"step": step, "loss": round(stats.loss, 6), "lr": scheduler.get_last_lr()[0],
                      "grad_norm": round(grad_norm, 6), "tokens": stats.tokens,
                      "epoch": round(consumed / len(rows), 4)}
            history.append(record)
            if step % settings.log_every == 0 or step == settings.total_steps:
                log.log(dict(record))
            if eval_fn is not None and settings.eval_every and step % settings.eval_every == 0:
                log.log({"step": step, **eval_fn()}, advance=False)
                loss_model.train()
            if _any_process(accelerator, stop.requested is not None):
                raise TrainingInterrupted(stop.requested or "a stop signal on another process", checkpoint())
            if settings.save_every and step % settings.save_every == 0 and step < settings.total_steps:
                checkpoint()
    return LoopResult(steps=step, tokens=tokens, loss_tokens=loss_tokens,
                      wall_seconds=time.perf_counter() - started, final_loss=last_loss, history=history)

"""The training loop every method shares, and held-out loss.

The loop reads top to bottom: take the next global batch, collate it with the
method's collate function, forward/backward (count-weighted), step, log, watch
for divergence, maybe evaluate, maybe checkpoint. It knows nothing about what
a row is or what the loss computes: ``collate(rows) -> interface.Batch``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointMismatch,
    gather_trainable_state,
    is_sharded,
    mark_complete,
    save_checkpoint,
    set_aside,
)
from .divergence import DivergenceError, DivergenceWatch
from .engine import MetricsLog, RowOrder, StopSignal, split_for_process
from .step import check_finite, forward_backward, optimizer_step


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
    count: int  # what the loss was normalised by, summed over the run (loss tokens, examples)
    wall_seconds: float
    final_loss: float | None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False  # training.early_stopping ended the run before total_steps


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process when any process has the flag: all take the same branch next."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


@dataclass
class StepDone:
    """What one training step reports to ``drive``: its log record and what it counted."""

    record: dict  # the metrics.jsonl line ("step" first); logged every log_every steps
    tokens: int
    count: int  # what the step's loss was normalised by
    loss: float
    rows: int  # rows (prompts, for PPO) the step consumed


def drive(
    *,
    take_step: Callable[[int, int], StepDone],
    cadence,
    loss_model,
    optimizer,
    scheduler,
    accelerator,
    run_dir: Path,
    start_state: dict,
    rows: int,
    adapter_model=None,
    eval_fn=None,
    extra_state: Callable[[], dict] | None = None,
    may_checkpoint: Callable[[], bool] | None = None,
    history: list[dict] | None = None,
    on_eval: Callable[[int, dict], bool] | None = None,
) -> LoopResult:
    """The bookkeeping every training loop shares, around ``take_step(step, rows_consumed)``.

    Counting, logging every ``cadence.log_every`` steps, held-out metrics every ``eval_every``,
    SIGINT / SIGTERM → checkpoint → ``TrainingInterrupted``, a checkpoint every ``save_every`` steps
    (when ``may_checkpoint()``) with ``extra_state()`` beside the loop's own. ``on_eval(step, metrics)``
    sees every held-out evaluation and returns True to end training there (early stopping). ``cadence``: anything with
    total_steps, save_every, keep_checkpoints, log_every and eval_every (``LoopSettings``)."""
    step = int(start_state.get("step", 0))
    consumed = int(start_state.get("rows_consumed", 0))
    tokens = count = 0
    last_loss = None
    stopped_early = False
    history = [] if history is None else history
    main = accelerator.is_main_process
    sharded = is_sharded(accelerator)

    def checkpoint() -> Path | None:
        accelerator.wait_for_everyone()
        weights = gather_trainable_state(accelerator, loss_model)  # collective under FSDP / DeepSpeed
        path = None
        if main:
            path = save_checkpoint(
                run_dir,
                step,
                model=accelerator.unwrap_model(loss_model),
                weights=weights,
                optimizer=None if sharded else optimizer,
                scheduler=scheduler,
                keep=cadence.keep_checkpoints,
                state={"rows_consumed": consumed, "epoch": consumed / rows, **(extra_state() if extra_state else {})},
                adapter_model=None if sharded else adapter_model,
                pending=sharded,
            )
        accelerator.wait_for_everyone()
        if sharded:
            # Sharded optimizer state: each process writes its own shard (same process count to resume).
            # The checkpoint counts only once every shard is written (PENDING removed).
            folder = run_dir / "checkpoints" / f"step-{step:06d}"
            accelerator.save_state(str(folder / "accelerate_state"))
            accelerator.wait_for_everyone()
            if main:
                mark_complete(folder, run_dir, cadence.keep_checkpoints)
            accelerator.wait_for_everyone()
        return path

    started = time.perf_counter()
    loss_model.train()
    log = MetricsLog(
        run_dir / "metrics.jsonl",
        total_steps=cadence.total_steps,
        start_step=step,
        accelerator=accelerator,
        enabled=main,
    )
    # A pause after every step, 0 unless TUNEFORGE_STEP_PAUSE_S is set: for tests that must act on a run
    # while it is still running, whatever the machine's speed (tests/test_ui_browser.py).
    pause = float(os.environ.get("TUNEFORGE_STEP_PAUSE_S") or 0)
    with StopSignal() as stop, log:
        while step < cadence.total_steps:
            done = take_step(step, consumed)
            if pause:
                time.sleep(pause)
            step += 1
            consumed += done.rows
            tokens += done.tokens
            count += done.count
            last_loss = done.loss
            history.append(done.record)
            if step % cadence.log_every == 0 or step == cadence.total_steps:
                log.log(dict(done.record))
            if eval_fn is not None and cadence.eval_every and step % cadence.eval_every == 0:
                metrics = eval_fn()
                log.log({"step": step, **metrics}, advance=False)
                loss_model.train()
                if on_eval is not None and on_eval(step, metrics):
                    stopped_early = True
                    break
            if _any_process(accelerator, stop.requested is not None):
                raise TrainingInterrupted(stop.requested or "a stop signal on another process", checkpoint())
            allowed = may_checkpoint() if may_checkpoint is not None else True
            if cadence.save_every and step % cadence.save_every == 0 and step < cadence.total_steps and allowed:
                checkpoint()
    return LoopResult(
        steps=step,
        tokens=tokens,
        count=count,
        wall_seconds=time.perf_counter() - started,
        final_loss=last_loss,
        history=history,
        stopped_early=stopped_early,
    )


def train_loop(
    *,
    loss_model,
    optimizer,
    scheduler,
    accelerator,
    rows: list,
    collate: Callable[[list], object],
    settings: LoopSettings,
    run_dir: Path,
    start_state: dict,
    adapter_model=None,
    eval_fn=None,
    watch: DivergenceWatch | None = None,
    arrange=None,
    after_step: Callable[[int], None] | None = None,
    on_eval: Callable[[int, dict], bool] | None = None,
) -> LoopResult:
    """Train until ``settings.total_steps``; resume from ``start_state`` (step, rows_consumed).

    ``arrange``: the method's reordering of each epoch (see ``engine.RowOrder``), or None.
    ``after_step(step)``: runs after each optimizer step while the gradients still exist
    (AdaLoRA's rank allocation reads them).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = settings.batch_size * settings.gradient_accumulation_steps * world
    order = RowOrder(len(rows), settings.seed, arrange=arrange, group=global_batch)
    saved_batch = start_state.get("global_batch")
    if arrange is not None and saved_batch is not None and saved_batch != global_batch:
        # The method's row order depends on the global batch: another one would repeat some rows
        # of this epoch and skip others.
        raise CheckpointMismatch(
            f"this run arranges its rows in global batches of {saved_batch} (batch_size × "
            f"gradient_accumulation_steps × processes); resume with the same global batch, not {global_batch}"
        )
    main = accelerator.is_main_process

    def take_step(step: int, consumed: int) -> StepDone:
        indices = order.take(consumed, global_batch)
        micro = [collate([rows[i] for i in mb]) for mb in split_for_process(indices, rank, world, settings.batch_size)]
        stats = forward_backward(loss_model, micro, accelerator)
        check_finite(stats.loss, step + 1)
        if watch is not None:
            try:
                watch.observe(step + 1, stats.loss)  # raises before the step that would go on destroying
            except DivergenceError as diverged:
                # Checkpoint s holds the weights that gave step s + 1's loss.
                if main:
                    set_aside(run_dir, diverged.first_bad_step - 1)
                raise
        grad_norm = optimizer_step(
            loss_model,
            optimizer,
            scheduler,
            accelerator,
            settings.max_grad_norm,
            step=step + 1,
            before_zero_grad=after_step,
        )
        record = {
            "step": step + 1,
            "loss": round(stats.loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": round(grad_norm, 6),
            "tokens": stats.tokens,
            "epoch": round((consumed + global_batch) / len(rows), 4),
            **step_metrics(loss_model),
        }
        return StepDone(record, stats.tokens, stats.count, stats.loss, global_batch)

    return drive(
        take_step=take_step,
        cadence=settings,
        loss_model=loss_model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        run_dir=run_dir,
        start_state=start_state,
        rows=len(rows),
        adapter_model=adapter_model,
        eval_fn=eval_fn,
        extra_state=lambda: {"global_batch": global_batch},
        on_eval=on_eval,
        # never checkpoint weights that may be the diverging ones
        may_checkpoint=lambda: not (watch is not None and watch.bad_in_a_row > 0 and watch.mode == "stop"),
    )


def step_metrics(loss_model) -> dict:
    """What the loss module measured during the step besides its loss (e.g. DPO's rewards and accuracies).

    A loss module may define ``step_metrics() -> {name: number}``, returning the mean over the
    micro-batches since its last call (this process's; logging only, not reduced).
    """
    module = getattr(loss_model, "module", loss_model)  # a DDP wrapper keeps the module inside
    report = getattr(module, "step_metrics", None)
    if report is None:
        return {}
    return {name: round(float(value), 6) for name, value in report().items()}


@torch.no_grad()
def heldout_mean_loss(loss_model, rows: list, collate: Callable[[list], object], batch_size: int, accelerator) -> float:
    """Count-weighted mean loss over ``rows``, split across processes and reduced.

    Runs the training loss module itself, so held-out and training loss mean the same thing.
    """
    # No gradients here, so a DDP wrapper is not needed, and skipping it avoids its per-forward
    # collectives (buffer broadcast) when processes hold different numbers of eval batches.
    if not is_sharded(accelerator):
        loss_model = accelerator.unwrap_model(loss_model)
    was_training = loss_model.training
    loss_model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    mine = rows[accelerator.process_index :: accelerator.num_processes]
    # Sorting by length keeps padding small: rows of similar length share a batch.
    mine = sorted(mine, key=lambda r: len(r.input_ids))
    batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    real = len(batches)
    if is_sharded(accelerator):
        # Sharded forwards gather parameters collectively: every process must run as many
        # batches. The extra forwards repeat a real batch and their result is dropped.
        most = int(accelerator.reduce(torch.tensor([real], device=accelerator.device), reduction="max").item())
        batches += [rows[:1]] * (most - real)
    device = accelerator.device
    for k, rows_of_batch in enumerate(batches):
        batch = collate(rows_of_batch)
        loss_sum, n = loss_model(**{key: v.to(device) for key, v in batch.inputs.items()})
        if k < real:
            total += torch.stack([loss_sum.double(), torch.as_tensor(n, device=device).double()])
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, reduction="sum")
    loss_model.train(was_training)
    return float(total[0] / total[1].clamp(min=1))

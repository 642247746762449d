"""Training one model once: optimizer, schedule, loop settings and divergence watch; resume; the loop.

A one-stage run calls these once; a continual run once per stage (a fresh optimizer and a schedule
that warms up and decays again in every stage: Gupta et al. 2023, Ibrahim et al. 2024).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..interface import MethodData
from ..training.engine import console
from .folder import truncate_metrics
from .setup import RunContext


@dataclass
class TrainingParts:
    """A prepared loss module and what steps it: the loop's inputs besides the rows."""

    loss_model: Any
    optimizer: Any
    scheduler: Any
    settings: Any  # training.loop.LoopSettings
    watch: Any  # training.divergence.DivergenceWatch
    steps: int
    trainable: int
    total: int
    state_bytes: dict


def prepare_training(
    run: RunContext,
    model: torch.nn.Module,
    data: MethodData,
    steps: int,
    *,
    config=None,
    seed: int | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    fresh: bool = False,
) -> TrainingParts:
    """The method's loss module around ``model`` (``wrap``: e.g. a continual penalty around it), AdamW,
    warmup + schedule over ``steps``, the loop's settings and the divergence watch, all prepared.

    ``config``: a stage's config (default the run's); ``fresh``: drop what an earlier stage prepared."""
    from ..distributed import broadcast_from_main
    from ..models.load import count_parameters, training_state_bytes
    from ..training.checkpoint import is_sharded
    from ..training.divergence import DivergenceWatch, divergence_hint
    from ..training.loop import LoopSettings
    from ..training.optim import build_optimizer, build_scheduler

    config = config or run.config
    tcfg, acc = config.training, run.accelerator
    trainable, total = count_parameters(model)
    state_bytes = training_state_bytes(model)
    chance = run.method.chance_loss(config, model, data)
    loss_module = run.method.loss_module(config, model, data)
    if wrap is not None:
        loss_module = wrap(loss_module)
    optimizer = build_optimizer(
        loss_module,
        learning_rate=tcfg.learning_rate,
        weight_decay=tcfg.weight_decay,
        betas=tuple(tcfg.adam_betas),
        eps=tcfg.adam_epsilon,
    )
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(tcfg.warmup_ratio * steps)
    scheduler = build_scheduler(optimizer, kind=tcfg.scheduler, warmup_steps=warmup, total_steps=steps)
    if fresh:
        acc.free_memory()  # the previous stage's prepared module and optimizer
    if is_sharded(acc):  # FSDP shards each process's own weights: start them all from the main one's
        broadcast_from_main(acc, loss_module)
    loss_model, optimizer = acc.prepare(loss_module, optimizer)
    settings = LoopSettings(
        batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        total_steps=steps,
        seed=tcfg.seed if seed is None else seed,
        max_grad_norm=tcfg.max_grad_norm,
        save_every=tcfg.save_every,
        keep_checkpoints=tcfg.keep_checkpoints,
        log_every=tcfg.log_every,
        eval_every=tcfg.eval_every,
    )
    watch = DivergenceWatch(
        chance_loss=chance,
        mode=tcfg.on_divergence,
        console=console if run.main else None,
        hint=divergence_hint(tcfg.learning_rate, tcfg.max_grad_norm, config.adapter is None),
    )
    return TrainingParts(loss_model, optimizer, scheduler, settings, watch, steps, trainable, total, state_bytes)


def restore_checkpoint(run: RunContext, parts: TrainingParts, folder: Path, label: str = "") -> dict:
    """Load ``folder``'s newest checkpoint into the prepared parts; its loop state ({} when none).

    Logged steps past the checkpoint are dropped (they are redone); with no checkpoint the log restarts."""
    from ..training.checkpoint import CheckpointMismatch, is_sharded, latest_checkpoint, load_checkpoint

    adapter = run.config.adapter
    if adapter is not None and adapter.type == "adalora" and latest_checkpoint(folder) is not None:
        raise CheckpointMismatch(
            "adapter.type adalora: its rank allocator's importance statistics and rank "
            "pattern are not in the checkpoints, so a resumed run would not continue the "
            "same schedule; start the run again (without --resume)"
        )
    acc, state = run.accelerator, {}
    ckpt = latest_checkpoint(folder)
    if ckpt is not None:
        sharded_state = is_sharded(acc) and (ckpt / "accelerate_state").exists()
        if sharded_state:
            acc.load_state(str(ckpt / "accelerate_state"))
        state = load_checkpoint(
            ckpt,
            model=acc.unwrap_model(parts.loss_model),
            optimizer=parts.optimizer,
            scheduler=parts.scheduler,
            restore_weights=not sharded_state,
        )
        console.print(f"Resuming{label} from {ckpt} (step {state['step']}/{parts.steps})")
    if run.main:
        truncate_metrics(folder / "metrics.jsonl", state.get("step", 0))
    return state


def best_weights(run: RunContext, data: MethodData, before: dict):
    """``training.early_stopping``'s tracker (``training.early_stop.BestWeights``), or None when not asked for.

    Refused before training: no held-out rows, a sharded run, or a metric the evaluation does not report."""
    from ..checks import ChecksFailed
    from ..training.checkpoint import is_sharded
    from ..training.early_stop import BestWeights

    settings = run.config.training.early_stopping
    if settings is None:
        return None
    if not data.eval:
        raise ChecksFailed(["training.early_stopping: needs held-out data (data.eval or data.eval_fraction)"])
    if is_sharded(run.accelerator):
        raise ChecksFailed(["training.early_stopping: not with FSDP / DeepSpeed yet; train without it"])
    best = BestWeights(settings, run.run_dir / "best", main=run.main)
    reported = set(before["metrics"])
    if reported:  # eval.before: false leaves nothing to check against: the first evaluation checks
        best.check_metric(reported | set(run.method.periodic_metrics(0.0)) | {f"eval_{m}" for m in reported})
    return best


def train(
    run: RunContext,
    parts: TrainingParts,
    data: MethodData,
    start_state: dict,
    *,
    folder: Path | None = None,
    rows: list | None = None,
    adapted=None,
    config=None,
    best=None,
    observer=None,
):
    """The method's training (``Method.run_training``; the shared loop by default) → ``LoopResult``.

    ``rows``: what to train on (default ``data.train``; a continual stage may mix in replayed rows).
    ``best``: early stopping's tracker; a metric beyond the held-out loss runs the method's evaluation.
    ``observer(step, metrics) -> bool``: another watcher of the evaluations (a sweep's trial stopping)."""
    from ..interface import EvalContext
    from ..training.checkpoint import gather_trainable_state
    from ..training.loop import heldout_mean_loss

    config = config or run.config
    collate = run.collate()
    acc = run.accelerator

    def periodic_eval():
        loss = heldout_mean_loss(parts.loss_model, data.eval, collate, config.training.batch_size, acc)
        metrics = run.method.periodic_metrics(loss)
        for name, rows in data.eval_groups.items():  # a mixture's sources, each on its own held-out rows
            part = heldout_mean_loss(parts.loss_model, rows, collate, config.training.batch_size, acc)
            metrics[f"eval_loss/{name}"] = round(part, 6)
        if best is not None and best.metric not in metrics:
            model = acc.unwrap_model(parts.loss_model).model
            ctx = EvalContext(config, run.tokenizer, data, acc, "during training")
            metrics = {**metrics, **run.method.evaluate(model, ctx)["metrics"]}
        return metrics

    def on_eval(step: int, metrics: dict) -> bool:
        stop = best is not None and best.observe(step, metrics, lambda: gather_trainable_state(acc, parts.loss_model))
        return bool(observer is not None and observer(step, metrics)) or stop

    return run.method.run_training(
        config=config,
        data=data,
        tokenizer=run.tokenizer,
        loss_model=parts.loss_model,
        optimizer=parts.optimizer,
        scheduler=parts.scheduler,
        accelerator=run.accelerator,
        rows=data.train if rows is None else rows,
        collate=collate,
        settings=parts.settings,
        run_dir=folder or run.run_dir,
        start_state=start_state,
        adapter_model=adapted.saver if adapted is not None else None,
        eval_fn=periodic_eval if data.eval else None,
        watch=parts.watch,
        arrange=data.arrange,
        after_step=adapted.after_optimizer_step if adapted is not None else None,
        on_eval=on_eval if best is not None or observer is not None else None,
    )


def announce(run: RunContext, data: MethodData, parts: TrainingParts) -> None:
    """The start-of-training line: rows, tokens, steps and the trainable share."""
    rows = data.train
    step = run.method.describe_step(run.config, run.accelerator.num_processes)
    console.print(
        f"[bold]{run.config.method}[/] on {len(rows)} rows ({sum(len(r.input_ids) for r in rows)} tokens), "
        f"{parts.steps} steps{step}; trainable {parts.trainable:,} / {parts.total:,} parameters "
        f"({100 * parts.trainable / max(parts.total, 1):.4f}%)"
    )

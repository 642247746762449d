"""The PPO loop: one step = sample a rollout → score it → update on it → log, maybe checkpoint.

Its step replaces the shared loop's batch step (``training/loop.py``); the bookkeeping around it is
the shared ``training.loop.drive``: count-weighted ``training.step`` verbs, atomic checkpoints,
``StopSignal`` (SIGINT / SIGTERM → checkpoint, then ``TrainingInterrupted``) and ``metrics.jsonl``.

Resume equals an uninterrupted run: a checkpoint holds the trainable weights
(policy or adapter, and the value head: both are parameters of the loss
module), optimizer and scheduler state, the torch and Python RNG states (the
sampling stream), and in ``state.json`` the prompts consumed and the KL
coefficient (which the adaptive controller moves). Minibatch order comes from a
generator seeded by (seed, step), so it needs no state. Evaluations run under
``torch.random.fork_rng``, so they never shift the sampling stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...training.checkpoint import is_sharded
from ...training.engine import RowOrder
from ...training.loop import LoopResult, StepDone, drive
from .math import adaptive_kl_coef
from .rollout import Reference, sample_rollout
from .update import UpdateSettings, experience, plan, ppo_update


@dataclass(frozen=True)
class PpoSettings:
    """Flat values from the config (configs never reach modules)."""

    total_steps: int
    rollout_batch_size: int
    seed: int
    update: UpdateSettings
    max_new_tokens: int = 64
    top_k: int = 0
    top_p: float = 1.0
    kl_coef: float = 0.05
    adaptive_target: float | None = None  # None: a fixed coefficient
    adaptive_horizon: int = 10000
    missing_eos_penalty: float | None = None
    save_every: int | None = None
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int | None = None


@dataclass
class Parts:
    """What a step uses besides the optimizer: the rewards, the reference, prompts and the tokenizer."""

    rewards: object  # rewards.Rewards
    reference: Reference
    prompts: list
    tokenizer: object
    evaluate: object = None  # () -> {metric: value}, run every eval_every steps
    history: list[dict] = field(default_factory=list)


def run_ppo(
    *,
    loss_model,
    optimizer,
    scheduler,
    accelerator,
    parts: Parts,
    settings: PpoSettings,
    run_dir: Path,
    start_state: dict,
    adapter_model=None,
    after_step=None,
    on_eval=None,
) -> LoopResult:
    """Train for ``settings.total_steps`` rollouts, resuming from ``start_state``."""
    if accelerator.num_processes > 1 or is_sharded(accelerator):
        from ...checks import ChecksFailed

        raise ChecksFailed(
            ["method ppo runs in one process for now; launch it without --num-processes or an accelerate config"]
        )
    module = accelerator.unwrap_model(loss_model)
    kl = {"coef": float(start_state.get("kl_coef", settings.kl_coef))}  # the adaptive controller moves it
    order = RowOrder(len(parts.prompts), settings.seed)

    def take_step(step: int, consumed: int) -> StepDone:
        t0 = time.perf_counter()
        prompts = [parts.prompts[i] for i in order.take(consumed, settings.rollout_batch_size)]
        rollout = sample_rollout(
            module.model,
            parts.tokenizer,
            prompts,
            group_size=settings.update.group_size,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.update.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
        )
        t1 = time.perf_counter()
        scores, by_source = _score(parts.rewards, rollout, settings.missing_eos_penalty, accelerator.device)
        t2 = time.perf_counter()
        epochs = plan(
            len(rollout.prompts), settings.update, torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        )
        tensors, stats = experience(
            module,
            parts.reference,
            rollout,
            scores,
            first_epoch=epochs[0],
            settings=settings.update,
            kl_coef=kl["coef"],
            accelerator=accelerator,
        )
        result = ppo_update(
            loss_model,
            optimizer,
            accelerator,
            rollout,
            tensors,
            epochs,
            settings.update,
            step=step + 1,
            after_step=after_step,
        )
        scheduler.step()  # once per rollout: the schedule counts steps as rollouts
        t3 = time.perf_counter()
        generated = int(rollout.response_mask.sum())
        record = {
            "step": step + 1,
            "loss": round(result["loss"], 6),
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": round(result["grad_norm"], 6),
            "tokens": generated,
            "kl_coef": kl["coef"],
            **_rounded(
                {**stats, **{f"score/{k}": float(v.mean()) for k, v in by_source.items()}, **module.step_metrics()}
            ),
            "time_generation_s": round(t1 - t0, 3),
            "time_scoring_s": round(t2 - t1, 3),
            "time_training_s": round(t3 - t2, 3),
            "epoch": round((consumed + settings.rollout_batch_size) / len(parts.prompts), 4),
        }
        if settings.adaptive_target is not None:  # Ziegler et al. 2019: after each batch of n responses
            kl["coef"] = adaptive_kl_coef(
                kl["coef"],
                stats["kl"],
                len(rollout.prompts),
                target=settings.adaptive_target,
                horizon=settings.adaptive_horizon,
            )
        return StepDone(record, generated, int(result["count"]), result["loss"], settings.rollout_batch_size)

    return drive(
        take_step=take_step,
        cadence=settings,
        loss_model=loss_model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        run_dir=run_dir,
        start_state=start_state,
        rows=len(parts.prompts),
        adapter_model=adapter_model,
        eval_fn=parts.evaluate,
        extra_state=lambda: {"kl_coef": kl["coef"]},
        history=parts.history,
        on_eval=on_eval,
    )


def _score(rewards, rollout, missing_eos_penalty: float | None, device) -> tuple[torch.Tensor, dict]:
    """(sequence scores (N,) with the no-EOS penalty applied, {source: raw scores (N,)})."""
    sequences = [rollout.sequence_ids(i) for i in range(len(rollout.prompts))]
    scores, by_source = rewards.score(rollout.prompts, rollout.responses, sequences, device)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~rollout.ended).float()
    return scores, by_source


def _rounded(values: dict) -> dict:
    return {k: round(float(v), 6) for k, v in values.items()}

"""One rollout's PPO update: old log-probs, KL-penalised rewards, advantages, clipped minibatch steps.

PPO (Schulman et al. 2017, arXiv 1707.06347) on language models as in Ziegler
et al. 2019 (arXiv 1909.08593) and InstructGPT (Ouyang et al. 2022, arXiv
2203.02155), with the conventions of Huang et al. 2024, "The N Implementation
Details of RLHF with PPO"; the arithmetic is ``math.py``.

1. ``experience``: old log-probs and values (the policy), reference log-probs,
   per-token rewards ``−β·KL_t`` plus the score at the last response token,
   then advantages — GAE over the value head, whitened; or, without a value
   model, group-relative over the ``group_size`` responses to each prompt:
   GRPO (Shao et al. 2024, arXiv 2402.03300) or RLOO (Ahmadian et al. 2024,
   arXiv 2402.14740). Departures for those two, so that one code path serves
   all three: the KL penalty enters the *sequence reward* (score − β·Σ_t KL_t,
   as RLOO does) rather than GRPO's separate k3 loss term; and every loss is a
   token-weighted mean over the minibatch (GRPO averages per sequence first).
2. ``ppo_update``: ``ppo_epochs`` passes over the rollout in minibatches of
   ``minibatch_size`` responses, each split into micro-batches whose summed
   losses ``training.step.forward_backward`` divides by the minibatch's
   response-token count (exact accumulation), then ``optimizer_step``.

The old statistics are computed on exactly the micro-batches the first epoch
will train on, in the same layout and mode, so the first minibatch's ratio is
exactly 1 (clip fraction 0, approx KL 0): METHODS.md's sanity check, and what
makes a departure from it a bug rather than noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...interface import Batch
from ...training.step import check_finite, forward_backward, optimizer_step
from .math import (
    KL_ESTIMATORS,
    gae,
    grpo_advantages,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    rloo_advantages,
    value_loss,
)
from .rollout import Reference, Rollout, forward_policy, micro_batch


@dataclass(frozen=True)
class UpdateSettings:
    """Flat values from the ``ppo:`` / ``generation:`` / ``training:`` sections."""

    ppo_epochs: int = 4
    minibatch_size: int | None = None  # responses per optimizer step; None: the whole rollout
    micro_batch_size: int = 4  # responses per forward pass
    group_size: int = 1
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    advantage: str = "gae"
    temperature: float = 1.0
    max_grad_norm: float | None = 1.0


class PpoLoss(torch.nn.Module):
    """``forward(**micro-batch)`` → (Σ over response tokens of the PPO loss, response tokens).

    Per token: clipped policy loss + ``vf_coef`` · clipped value loss − ``entropy_coef`` · entropy.
    Holds the policy (``.model``, what the runner saves) and the value head (None for grpo / rloo),
    so the optimizer, checkpoints and resume cover both. ``step_metrics`` reports token-weighted
    means since its last call; ``last_ratio`` keeps the last forward's ρ on response tokens.
    """

    def __init__(
        self,
        model,
        value_head=None,
        *,
        clip: float = 0.2,
        value_clip: float = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.model = model
        self.value_head = value_head
        self.clip, self.value_clip, self.vf_coef = clip, value_clip, vf_coef
        self.entropy_coef, self.temperature = entropy_coef, temperature
        self.last_ratio: torch.Tensor | None = None
        self._sums: dict[str, float] = {}

    def forward(
        self,
        input_ids,
        attention_mask,
        position_ids,
        response_mask,
        logp_old,
        advantages,
        returns=None,
        values_old=None,
    ):
        mask = response_mask.bool()  # (b, R)
        out = forward_policy(
            self.model,
            input_ids,
            attention_mask,
            position_ids,
            mask.shape[1],
            temperature=self.temperature,
            value_head=self.value_head,
            entropy=self.entropy_coef > 0,
        )
        pg = policy_loss(out.logp, logp_old, advantages, mask, clip=self.clip)
        per_token = pg.token_losses  # (b, R), 0 off the mask
        n = mask.sum()
        stats = {"policy_loss": pg.loss, "clip_fraction": pg.clip_fraction, "approx_kl": pg.approx_kl}
        if self.value_head is not None:
            vf = value_loss(out.values, values_old, returns, mask, clip=self.value_clip)
            per_token = per_token + self.vf_coef * vf.token_losses
            stats.update(value_loss=vf.loss, value_clip_fraction=vf.clip_fraction)
        if self.entropy_coef > 0:
            per_token = per_token - self.entropy_coef * torch.where(mask, out.entropy, 0.0)
        self.last_ratio = pg.ratio[mask]
        weight = float(n)
        for name, value in stats.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value.detach()) * weight
        self._sums["_tokens"] = self._sums.get("_tokens", 0.0) + weight
        return per_token.sum(), n

    def step_metrics(self) -> dict[str, float]:
        sums, self._sums = self._sums, {}
        tokens = max(sums.pop("_tokens", 0.0), 1.0)
        return {name: value / tokens for name, value in sums.items()}


def plan(n: int, settings: UpdateSettings, generator: torch.Generator) -> list[list[list[list[int]]]]:
    """Row indices for every epoch → minibatch → micro-batch: a fresh permutation per epoch."""
    size = settings.minibatch_size or n
    epochs = []
    for _ in range(settings.ppo_epochs):
        order = torch.randperm(n, generator=generator).tolist()
        minibatches = [order[i : i + size] for i in range(0, n, size)]
        epochs.append(
            [
                [mb[j : j + settings.micro_batch_size] for j in range(0, len(mb), settings.micro_batch_size)]
                for mb in minibatches
            ]
        )
    return epochs


@torch.no_grad()
def experience(
    loss_module: PpoLoss,
    reference: Reference,
    rollout: Rollout,
    scores: torch.Tensor,
    *,
    first_epoch: list[list[list[int]]],
    settings: UpdateSettings,
    kl_coef: float,
    accelerator,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(per-token training tensors (N, R), rollout statistics) for one rollout.

    ``scores`` (N,): each response's sequence score (sources, weights and any no-EOS penalty applied).
    """
    mask = rollout.response_mask  # (N, R) bool
    n, width = mask.shape
    device = mask.device
    logp_old = torch.zeros(n, width, device=device)
    logp_ref = torch.zeros(n, width, device=device)
    values = torch.zeros(n, width, device=device)
    entropy = torch.zeros(n, width, device=device)
    for minibatch in first_epoch:
        for rows in minibatch:
            inputs = micro_batch(rollout, rows, {})
            used = inputs["response_mask"].shape[1]
            with accelerator.autocast():
                out = forward_policy(
                    loss_module.model,
                    inputs["input_ids"],
                    inputs["attention_mask"],
                    inputs["position_ids"],
                    used,
                    temperature=settings.temperature,
                    value_head=loss_module.value_head,
                    entropy=True,
                )
                ref = reference.logp(inputs, temperature=settings.temperature)
            index = torch.tensor(rows, device=device)
            logp_old[index, :used] = out.logp.float()
            logp_ref[index, :used] = ref.float()
            entropy[index, :used] = out.entropy.float()
            if out.values is not None:
                values[index, :used] = out.values.float()  # bf16 under CPU/GPU autocast
    scores = scores.to(device)
    kl = torch.where(mask, KL_ESTIMATORS[settings.kl_estimator](logp_old, logp_ref), 0.0)  # (N, R)
    sequence_kl = kl.sum(-1)  # (N,)
    tensors = {"logp_old": logp_old}
    if settings.advantage == "gae":
        rewards, _ = per_token_rewards(
            scores, logp_old, logp_ref, mask, kl_coef=kl_coef, estimator=settings.kl_estimator
        )
        advantages, returns = gae(rewards, values, mask, gamma=settings.gamma, lam=settings.lam)
        if settings.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        tensors.update(returns=returns, values_old=values)
    else:
        grouped = (scores - kl_coef * sequence_kl).view(-1, settings.group_size)  # (G, K)
        relative = grpo_advantages if settings.advantage == "grpo" else rloo_advantages
        advantages = torch.where(mask, relative(grouped).reshape(-1, 1), 0.0)
    tensors["advantages"] = advantages
    stats = {
        "score": float(scores.mean()),
        "kl": float(sequence_kl.mean()),
        "objective": float((scores - kl_coef * sequence_kl).mean()),
        "entropy": float(masked_mean(entropy, mask)),
        "response_length": float(mask.sum(-1).float().mean()),
        "eos_fraction": float(rollout.ended.float().mean()),
    }
    if settings.advantage == "gae":
        stats["value_mean"] = float(masked_mean(values, mask))
    return tensors, stats


class _HeldSchedule:
    """Stands in for the scheduler inside a rollout's update: the learning rate moves once per rollout."""

    def step(self) -> None:
        pass


def ppo_update(
    loss_module,
    optimizer,
    accelerator,
    rollout: Rollout,
    tensors: dict[str, torch.Tensor],
    epochs: list[list[list[list[int]]]],
    settings: UpdateSettings,
    *,
    step: int,
    after_step=None,
) -> dict[str, float]:
    """Every epoch's minibatches: forward/backward over its micro-batches, then one optimizer step."""
    held = _HeldSchedule()
    losses, norms, count = [], [], 0
    for minibatches in epochs:
        for minibatch in minibatches:
            micro = []
            for rows in minibatch:
                inputs = micro_batch(rollout, rows, tensors)
                micro.append(
                    Batch(
                        inputs=inputs,
                        count=int(inputs["response_mask"].sum()),
                        tokens=int(inputs["attention_mask"].sum()),
                    )
                )
            stats = forward_backward(loss_module, micro, accelerator)
            check_finite(stats.loss, step)
            norms.append(
                optimizer_step(
                    loss_module,
                    optimizer,
                    held,
                    accelerator,
                    settings.max_grad_norm,
                    step=step,
                    before_zero_grad=after_step,
                )
            )
            losses.append(stats.loss)
            count += stats.count
    return {
        "loss": sum(losses) / len(losses),
        "grad_norm": sum(norms) / len(norms),
        "count": count,
        "optimizer_steps": len(losses),
    }

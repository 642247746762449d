"""The arithmetic of RLHF with PPO, as pure functions over (B, T) tensors.

PPO (Schulman et al. 2017, arXiv 1707.06347) applied to language models as in
Ziegler et al. 2019 (arXiv 1909.08593) and InstructGPT (Ouyang et al. 2022, arXiv
2203.02155), following the conventions of "The N Implementation Details of RLHF
with PPO" (Huang et al. 2023; arXiv 2403.17031 for the N+ follow-up):

- ``mask`` (B, T) marks response tokens; every reduction is a masked mean over them.
- Per-token reward ``r_t = −β·KL_t``, plus the sequence score at the last response
  token (a no-EOS penalty is the caller's, applied to the score before).
- KL estimators (Schulman 2020, "Approximating KL divergence"), with
  ``d = logp − logp_ref`` on tokens sampled from the policy: k1 = d (unbiased, can
  be negative), k3 = ``(e^{−d} − 1) + d`` (unbiased, never negative, lower variance).
- GAE (Schulman et al. 2015, arXiv 1506.02438) runs backwards over the response
  tokens only: a masked-out position is skipped, not treated as the episode's end.
- Advantages are whitened over the mask (unbiased variance, as in TRL).
- Clip fraction = the share of tokens where the clipped term is the active (larger)
  one; approx KL = k3 of the ratio, ``mean((ρ − 1) − log ρ)``, an unbiased, never
  negative estimate of KL(π_old ‖ π_new) (CleanRL's choice; TRL logs ``0.5·mean(log ρ²)``,
  which agrees to second order). Both are exactly 0 when ρ = 1.
- Losses come as a masked mean (``loss``) and as per-token values zeroed off the mask
  (``token_losses``), whose sum over the accumulated batch's mask count is what
  count-weighted accumulation (``training/step.py``) needs.

Group-relative advantages without a value model, for K samples of each prompt:
GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) and RLOO (Kool et al. 2019;
Ahmadian et al. 2024, arXiv 2402.14740).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# ----------------------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask's True (or 1.0) entries; 0 where the mask is empty."""
    m = mask.to(x.dtype)
    total = torch.where(m.bool(), x, 0.0)
    if dim is None:
        return total.sum() / m.sum().clamp(min=1)
    return total.sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over the mask (scalar), with Bessel's correction by default."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        var = var * n / (n - 1).clamp(min=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the mask; ``shift_mean=False`` only rescales (keeps the mean, as
    reward whitening does). Returns a new tensor, 0 off the mask."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, 0.0)


# ----------------------------------------------------------------------------- KL and rewards


def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per token ``log π − log π_ref``."""
    return logp - logp_ref


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per token ``(r − 1) − log r`` with ``r = π_ref / π``."""
    log_r = logp_ref - logp
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k3": kl_k3}


def per_token_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B,), logp / logp_ref / mask (B, T) → (rewards, kl), each (B, T) and 0 off the mask.

    ``rewards = −kl_coef·kl``, with each sequence's score added at its last response token
    (a row without response tokens gets no score). ``(kl).sum(-1)`` is the sequence KL to log.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; write one of: {', '.join(KL_ESTIMATORS)}")
    m = mask.bool()
    kl = torch.where(m, KL_ESTIMATORS[estimator](logp, logp_ref), 0.0)
    rewards = -kl_coef * kl
    last = m.long().cumsum(-1).argmax(-1)  # (B,): the first position reaching the full count = the last True
    rows = torch.arange(m.shape[0], device=m.device)
    score = torch.where(m.any(-1), scores.to(rewards.dtype), 0.0)
    rewards = rewards.index_put((rows, last), score, accumulate=True)
    return rewards, kl


# ----------------------------------------------------------------------------- GAE


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, values, mask (B, T) → (advantages, returns), each (B, T), 0 off the mask, no grad.

    ``δ_t = r_t + γV_{t'} − V_t``, ``A_t = δ_t + γλA_{t'}`` where t' is the next response token
    (V and A are 0 after the last one); ``returns = A + V``. Rewards and values off the mask are ignored.
    """
    m = mask.bool()
    advantages = torch.zeros_like(values)
    next_value = values.new_zeros(values.shape[0])  # (B,)
    next_adv = values.new_zeros(values.shape[0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(m[:, t], adv, 0.0)
        next_value = torch.where(m[:, t], values[:, t], next_value)
        next_adv = torch.where(m[:, t], adv, next_adv)
    returns = torch.where(m, advantages + values, 0.0)
    return advantages, returns


# ----------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor  # scalar, with grad: masked mean of token_losses
    token_losses: torch.Tensor  # (B, T), 0 off the mask
    clip_fraction: torch.Tensor  # scalar, detached
    approx_kl: torch.Tensor  # scalar, detached: mean k3 of the ratio
    ratio: torch.Tensor  # (B, T), detached


@dataclass(frozen=True)
class ValueLoss:
    loss: torch.Tensor  # scalar, with grad
    token_losses: torch.Tensor  # (B, T), 0 off the mask
    clip_fraction: torch.Tensor  # scalar, detached


def policy_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *, clip: float = 0.2
) -> PolicyLoss:
    """logp (new, with grad), logp_old, advantages, mask (B, T) → ``mean(max(−Aρ, −A·clip(ρ, 1±ε)))``."""
    log_ratio = logp - logp_old
    ratio = torch.exp(log_ratio)  # exactly 1 where logp == logp_old
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    per_token = torch.maximum(unclipped, clipped)
    m = mask.bool()
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(per_token.dtype), m)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, m)
    return PolicyLoss(
        masked_mean(per_token, m), torch.where(m, per_token, 0.0), clip_fraction, approx_kl, ratio.detach()
    )


def value_loss(
    values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, clip: float = 0.2
) -> ValueLoss:
    """values (new, with grad), values_old, returns, mask (B, T) →
    ``0.5·mean(max((V − R)², (clip(V, V_old ± ε) − R)²))``."""
    clipped_values = torch.maximum(torch.minimum(values, values_old + clip), values_old - clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped, clipped)
    m = mask.bool()
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(per_token.dtype), m)
    return ValueLoss(masked_mean(per_token, m), torch.where(m, per_token, 0.0), clip_fraction)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V) → entropy (B, T) in nats, ``logsumexp(z) − Σ softmax(z)·z``,
    one sequence at a time so only one (T, V) float32 transient lives at once."""
    rows = []
    for row in logits:
        z = row.float()  # (T, V)
        rows.append(torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1))
    return torch.stack(rows)


# ----------------------------------------------------------------------------- KL coefficient


def adaptive_kl_coef(
    kl_coef: float, current_kl: float, n_steps: int, *, target: float = 6.0, horizon: int = 10000
) -> float:
    """Ziegler et al. 2019's proportional controller: ``e = clip(KL/target − 1, ±0.2)``,
    ``β ← β·(1 + e·n/horizon)`` after n samples (episodes) at mean sequence KL ``current_kl``.
    Stateless: the coefficient is the whole state, so it checkpoints as one float."""
    error = min(max(current_kl / target - 1, -0.2), 0.2)
    return kl_coef * (1 + error * n_steps / horizon)


# ----------------------------------------------------------------------------- group-relative advantages


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """rewards (G, K), K samples for each of G prompts → ``(r − mean_g) / (std_g + eps)``, (G, K).
    std is the unbiased one and eps = 1e-4, as TRL's GRPO; a group of equal rewards gets 0."""
    if rewards.shape[-1] < 2:
        raise ValueError(f"group-relative advantages need at least 2 samples per prompt, got {rewards.shape[-1]}")
    mean = rewards.mean(-1, keepdim=True)
    return (rewards - mean) / (rewards.std(-1, keepdim=True) + eps)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (G, K) → ``r_i − mean_{j≠i} r_j`` (leave-one-out baseline), (G, K)."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got {k}")
    baseline = (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline

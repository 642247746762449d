"""Preference losses as pure functions: reward models (Bradley–Terry) and the DPO family.

Notation (``shared/reference/METHODS.md``): ``logp(y|x)`` is the sum of the
completion's token log-probs (prompt masked), ``Δ(y) = logp_θ(y|x) − logp_ref(y|x)``
and ``h = Δ(y_w) − Δ(y_l)`` for a chosen ``y_w`` and a rejected ``y_l``.

Reward model
- Bradley–Terry (Bradley & Terry 1952; InstructGPT, Ouyang et al. 2022, arXiv
  2203.02155): ``−log σ(r_w − r_l − m)`` with an optional per-pair margin ``m``
  (Llama 2, arXiv 2307.09288) and an optional centring term ``c·(r_w + r_l)²``
  that keeps scores near zero (Eisenstein et al. 2023, arXiv 2312.09244; TRL's
  ``center_rewards_coefficient``).
- K-way rankings (InstructGPT): one ranking of K responses is one batch element;
  its loss is the mean of the Bradley–Terry losses of its C(K,2) pairs.

DPO family: one function per variant, each citing its paper in its docstring.
Every function takes per-example log-probs (B,) and returns a
``PreferenceOutput`` of per-example losses (the engine sums them and divides by
the accumulated batch's example count) plus detached implicit rewards.
Which log-probs each variant wants:
- summed over completion tokens: dpo, cdpo, robust, hinge, kto;
- averaged over completion tokens (``sequence_logprobs(..., average=True)``):
  ipo (as in TRL and METHODS.md; the IPO paper's derivation uses summed log-probs,
  but averaging keeps the 1/(2β) target meaningful across lengths), simpo and
  orpo (their papers define them on length-normalised log-probs).
``LENGTH_AVERAGED`` and ``REFERENCE_FREE`` say so to the caller.

Accuracies are strict (``reward_w > reward_l``), so they are 0 at initialisation,
when policy = reference and every reward is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import torch
import torch.nn.functional as F

from ...data.types import IGNORE_INDEX
from .names import LENGTH_AVERAGED, LOSS_NAMES, REFERENCE_FREE  # noqa: F401  (re-exported)

# ----------------------------------------------------------------------------- log-probs


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, average: bool = False
) -> torch.Tensor:
    """logits (B, T, V), labels (B, T) unshifted (HF convention) → (B,) float32 log-probs.

    Position t predicts token t+1. Summed over the tokens whose label is not
    ``ignore_index``, or their mean with ``average=True`` (0 for a row without any).
    ``log p = logit[label] − logsumexp(logits)``, one sequence at a time, so no
    (B, T, V) log-softmax is materialised: the transient is one row's (T, V). (Under
    autograd, bf16 logits still leave each row's float32 copy saved for backward.)
    """
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != ignore_index
    safe = targets.masked_fill(~keep, 0)
    rows = []
    for b in range(logits.shape[0]):
        row = logits[b, :-1].float()  # (T-1, V); a view, not a copy, when already float32
        picked = row.gather(-1, safe[b, :, None]).squeeze(-1)  # (T-1,)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    token_logps = torch.where(keep, torch.stack(rows), 0.0)  # (B, T-1)
    total = token_logps.sum(-1)
    return total / keep.sum(-1).clamp(min=1) if average else total


# ----------------------------------------------------------------------------- reward model


@dataclass(frozen=True)
class RewardOutput:
    """losses (B,) per pair or per ranking, with grad; margins and correct (P,) per pair, detached."""

    losses: torch.Tensor
    margins: torch.Tensor  # r_w − r_l
    correct: torch.Tensor  # 1.0 where r_w > r_l (strict)

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"loss": self.losses.detach().mean(), "accuracy": self.correct.mean(), "margin": self.margins.mean()}


def bradley_terry(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
) -> RewardOutput:
    """chosen, rejected (P,) scores; margin (P,) or a scalar →
    per pair ``−log σ(r_w − r_l − m) + c·(r_w + r_l)²``."""
    _same_shape(chosen, rejected)
    diff = chosen - rejected  # (P,)
    losses = -F.logsigmoid(diff - margin) if margin is not None else -F.logsigmoid(diff)
    if center_coef:
        losses = losses + center_coef * (chosen + rejected) ** 2
    diff = diff.detach()
    return RewardOutput(losses, diff, (diff > 0).to(diff.dtype))


def ranking_pairs(k: int) -> list[tuple[int, int]]:
    """The C(K,2) (better, worse) index pairs of a ranking ordered best → worst."""
    return list(combinations(range(k), 2))


def ranking_loss(scores: torch.Tensor, *, mask: torch.Tensor | None = None, center_coef: float = 0.0) -> RewardOutput:
    """scores (B, K), each row ordered best → worst; mask (B, K) True for real responses
    (shorter rankings padded at the end). Per ranking: the mean of its pairs' Bradley–Terry losses."""
    b, k = scores.shape
    if k < 2:
        raise ValueError(f"a ranking needs at least 2 responses, got K={k}")
    if mask is not None:  # padding's scores may be anything (even NaN): keep them out of values and gradients
        scores = scores.masked_fill(~mask, 0.0)
    better, worse = (torch.tensor(idx, device=scores.device) for idx in zip(*ranking_pairs(k)))  # (C,) each
    pairs = bradley_terry(scores[:, better].reshape(-1), scores[:, worse].reshape(-1), center_coef=center_coef)
    valid = (
        torch.ones(b, better.numel(), dtype=torch.bool, device=scores.device)
        if mask is None
        else mask[:, better] & mask[:, worse]
    )  # (B, C)
    per_pair = torch.where(valid, pairs.losses.view(b, -1), 0.0)  # (B, C)
    losses = per_pair.sum(-1) / valid.sum(-1).clamp(min=1)  # (B,)
    flat = valid.reshape(-1)
    return RewardOutput(losses, pairs.margins[flat], pairs.correct[flat])


# ----------------------------------------------------------------------------- DPO family


@dataclass(frozen=True)
class PreferenceOutput:
    """losses (B,) with grad; detached implicit rewards of chosen / desirable and rejected /
    undesirable examples; correct (B,) 1.0 where the example is ranked right (strict);
    extra: variant-specific scalars to log (orpo's NLL and log-odds ratio, kto's KL)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    correct: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def metrics(self) -> dict[str, torch.Tensor]:
        # Means of empty tensors (a KTO batch without undesirable examples) are NaN: honestly undefined.
        chosen, rejected = self.chosen_rewards.mean(), self.rejected_rewards.mean()
        return {
            "loss": self.losses.detach().mean(),
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": self.correct.mean(),
            **self.extra,
        }


def _same_shape(*tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"log-probs / scores must have one shape (B,), got {sorted(shapes)}")


def _paired(
    losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, **extra: torch.Tensor
) -> PreferenceOutput:
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    correct = (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype)
    extra = {k: v.detach() for k, v in extra.items()}
    return PreferenceOutput(losses, chosen_rewards, rejected_rewards, correct, extra)


def _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected):
    """→ (Δ_w, Δ_l), each (B,)."""
    _same_shape(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return policy_chosen - ref_chosen, policy_rejected - ref_rejected


def _check_epsilon(epsilon: float, upper: float) -> None:
    if not 0 <= epsilon < upper:
        raise ValueError(f"label smoothing ε must be in [0, {upper}), got {epsilon}")


def dpo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
) -> PreferenceOutput:
    """DPO, Rafailov et al. 2023 (arXiv 2305.18290): ``−log σ(βh)``. ln 2 at initialisation."""
    d_w, d_l = _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return _paired(-F.logsigmoid(beta * (d_w - d_l)), beta * d_w, beta * d_l)


def cdpo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    epsilon: float = 0.1,
) -> PreferenceOutput:
    """Conservative DPO, Mitchell 2023 ("A note on DPO with noisy preferences", ericmitchell.ai/cdpo.pdf):
    labels flipped with probability ε, ``−(1−ε) log σ(βh) − ε log σ(−βh)``. ln 2 at initialisation."""
    _check_epsilon(epsilon, 1.0)
    d_w, d_l = _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    z = beta * (d_w - d_l)
    return _paired(-(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z), beta * d_w, beta * d_l)


def robust(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    epsilon: float = 0.1,
) -> PreferenceOutput:
    """Robust DPO, Chowdhury et al. 2024 (arXiv 2403.00409): the unbiased loss under flip rate ε,
    ``[−(1−ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)``, ε < 0.5. ln 2 at initialisation."""
    _check_epsilon(epsilon, 0.5)
    d_w, d_l = _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    z = beta * (d_w - d_l)
    losses = (-(1 - epsilon) * F.logsigmoid(z) + epsilon * F.logsigmoid(-z)) / (1 - 2 * epsilon)
    return _paired(losses, beta * d_w, beta * d_l)


def ipo(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
) -> PreferenceOutput:
    """IPO, Azar et al. 2023 (arXiv 2310.12036): ``(h̄ − 1/(2β))²`` on *length-averaged* log-probs
    (as TRL does; see the module docstring). 1/(4β²) = 25 at initialisation with β = 0.1."""
    d_w, d_l = _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return _paired((d_w - d_l - 1 / (2 * beta)) ** 2, beta * d_w, beta * d_l)


def hinge(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
) -> PreferenceOutput:
    """SLiC-HF's calibration loss, Zhao et al. 2023 (arXiv 2305.10425), on reference-relative
    log-ratios as in TRL: ``max(0, 1 − βh)`` (β = 1/δ for SLiC's margin δ). 1 at initialisation."""
    d_w, d_l = _ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return _paired(F.relu(1 - beta * (d_w - d_l)), beta * d_w, beta * d_l)


def simpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, *, beta: float = 2.0, gamma: float = 0.5
) -> PreferenceOutput:
    """SimPO, Meng et al. 2024 (arXiv 2405.14734), reference-free: ``−log σ(β·l̄_w − β·l̄_l − γ)`` on
    length-averaged log-probs l̄; the reward is ``β·l̄``. γ is the margin itself (TRL's
    ``simpo_gamma`` with its γ/β scaling gives the same loss)."""
    _same_shape(policy_chosen, policy_rejected)
    r_w, r_l = beta * policy_chosen, beta * policy_rejected
    return _paired(-F.logsigmoid(r_w - r_l - gamma), r_w, r_l)


def orpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, *, lam: float = 0.1) -> PreferenceOutput:
    """ORPO, Hong et al. 2024 (arXiv 2403.07691), reference-free, on length-averaged log-probs l̄:
    ``NLL(y_w) − λ log σ(log odds(y_w) − log odds(y_l))`` with ``odds = P/(1−P)``, ``P = exp(l̄)``.

    The NLL term is the chosen response's per-sequence mean token NLL ``−l̄_w`` (the paper's
    L_SFT). Rewards are ``λ·l̄`` as TRL logs them.
    """
    _same_shape(policy_chosen, policy_rejected)
    # log odds = l̄ − log(1 − exp(l̄)); log(−expm1(l̄)) stays finite for l̄ just below 0.
    log_odds = (policy_chosen - policy_rejected) - (
        torch.log(-torch.expm1(policy_chosen)) - torch.log(-torch.expm1(policy_rejected))
    )
    ratio_term = F.logsigmoid(log_odds)
    nll = -policy_chosen
    return _paired(
        nll - lam * ratio_term,
        lam * policy_chosen,
        lam * policy_rejected,
        nll=nll.mean(),
        log_odds_ratio=ratio_term.mean(),
    )


def kto(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    *,
    kl_policy_logps: torch.Tensor | None = None,
    kl_ref_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> PreferenceOutput:
    """KTO, Ethayarajh et al. 2024 (arXiv 2402.01306), unpaired: policy_logps, ref_logps (B,), desirable (B,) bool.

    desirable ``λ_D(1 − σ(β(Δ − z0)))``, undesirable ``λ_U(1 − σ(β(z0 − Δ)))``. The reference
    point ``z0 = max(0, mean(kl_policy_logps − kl_ref_logps))``, detached, estimated as the
    paper and TRL do from mismatched in-batch pairs (prompt i with completion i+1), whose
    summed log-probs the caller passes; without them z0 = 0. 0.5·λ at initialisation.
    An example is correct when it lies on its label's side of the reference point (strictly).
    """
    _same_shape(policy_logps, ref_logps, desirable)
    delta = policy_logps - ref_logps  # (B,)
    if kl_policy_logps is None or kl_ref_logps is None:
        z0 = delta.new_zeros(())
    else:
        z0 = (kl_policy_logps - kl_ref_logps).detach().mean().clamp(min=0)
    desirable = desirable.bool()
    good = desirable_weight * (1 - torch.sigmoid(beta * (delta - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - delta)))
    losses = torch.where(desirable, good, bad)
    rewards = (beta * delta).detach()
    correct = torch.where(desirable, delta > z0, delta < z0).to(rewards.dtype)
    return PreferenceOutput(losses, rewards[desirable], rewards[~desirable], correct.detach(), {"kl": z0})


LossFn = Callable[..., PreferenceOutput]
LOSSES: dict[str, LossFn] = {
    "dpo": dpo,
    "cdpo": cdpo,
    "robust": robust,
    "ipo": ipo,
    "hinge": hinge,
    "simpo": simpo,
    "orpo": orpo,
    "kto": kto,
}  # keys: names.LOSS_NAMES


def preference_loss(name: str, *args: torch.Tensor, **kwargs) -> PreferenceOutput:
    """``LOSSES[name](*args, **kwargs)`` with an error that lists the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown preference loss {name!r}; write one of: {', '.join(LOSS_NAMES)}")
    return LOSSES[name](*args, **kwargs)

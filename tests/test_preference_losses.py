"""Reward-model and DPO-family losses: values at initialisation, hand-computed values, equivalences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tuneforge.methods.preference.losses import (
    LENGTH_AVERAGED,
    LOSS_NAMES,
    LOSSES,
    REFERENCE_FREE,
    bradley_terry,
    cdpo,
    dpo,
    hinge,
    ipo,
    kto,
    orpo,
    preference_loss,
    ranking_loss,
    ranking_pairs,
    robust,
    sequence_logprobs,
    simpo,
)

LN2 = math.log(2)


def softplus(x: float) -> float:
    """−log σ(−x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def approx(x: torch.Tensor | float, *expected: float, tol: float = 1e-9) -> bool:
    return torch.allclose(torch.as_tensor(x, dtype=torch.float64).reshape(-1), t(*expected), atol=tol, rtol=0)


# ----------------------------------------------------------------------------- initialisation

# policy = reference: every Δ = 0 (log-probs differ between examples, not between models)
LOGPS_W, LOGPS_L = t(-12.0, -3.5, -40.0), t(-9.0, -7.25, -41.0)


@pytest.mark.parametrize("fn, expected", [(dpo, LN2), (cdpo, LN2), (robust, LN2), (ipo, 25.0), (hinge, 1.0)])
def test_paired_losses_at_initialisation(fn, expected):
    out = fn(LOGPS_W, LOGPS_L, LOGPS_W.clone(), LOGPS_L.clone(), beta=0.1)
    assert approx(out.losses, expected, expected, expected)
    metrics = out.metrics()
    assert metrics["rewards/accuracies"] == 0  # strict: 0 > 0 is false
    assert metrics["rewards/margins"] == 0 and metrics["rewards/chosen"] == 0 and metrics["rewards/rejected"] == 0


def test_ipo_at_initialisation_is_one_over_four_beta_squared():
    for beta in (0.1, 0.5):
        assert approx(ipo(LOGPS_W, LOGPS_L, LOGPS_W, LOGPS_L, beta=beta).losses.mean(), 1 / (4 * beta**2))


def test_kto_at_initialisation_is_half_lambda():
    desirable = torch.tensor([True, False, True])
    out = kto(LOGPS_W, LOGPS_W.clone(), desirable, kl_policy_logps=LOGPS_L, kl_ref_logps=LOGPS_L.clone())
    assert approx(out.losses, 0.5, 0.5, 0.5)
    weighted = kto(LOGPS_W, LOGPS_W.clone(), desirable, desirable_weight=2.0, undesirable_weight=0.5)
    assert approx(weighted.losses, 1.0, 0.25, 1.0)
    assert out.metrics()["rewards/accuracies"] == 0


def test_dpo_gradient_at_initialisation():
    # d/dz −log σ(z) = −(1 − σ(z)) = −1/2 at z = 0: −β/2 on the chosen log-prob, +β/2 on the rejected
    pw, pl = LOGPS_W.clone().requires_grad_(), LOGPS_L.clone().requires_grad_()
    dpo(pw, pl, LOGPS_W, LOGPS_L, beta=0.1).losses.sum().backward()
    assert approx(pw.grad, -0.05, -0.05, -0.05) and approx(pl.grad, 0.05, 0.05, 0.05)


# ----------------------------------------------------------------------------- hand-computed values

# example 0: Δ_w = +1, Δ_l = −1, h = 2 (right way round); example 1: Δ_w = −1, Δ_l = +1, h = −2
PW, PL, RW, RL = t(-10.0, -12.0), t(-12.0, -10.0), t(-11.0, -11.0), t(-11.0, -11.0)


def test_dpo_values():
    out = dpo(PW, PL, RW, RL, beta=0.1)  # βh = ±0.2
    assert approx(out.losses, softplus(-0.2), softplus(0.2))
    assert approx(out.chosen_rewards, 0.1, -0.1) and approx(out.rejected_rewards, -0.1, 0.1)
    m = out.metrics()
    assert approx(m["rewards/accuracies"], 0.5) and approx(m["rewards/margins"], 0.0)
    assert approx(m["loss"], (softplus(-0.2) + softplus(0.2)) / 2)


def test_cdpo_values():
    out = cdpo(PW, PL, RW, RL, beta=0.1, epsilon=0.1)
    assert approx(out.losses, 0.9 * softplus(-0.2) + 0.1 * softplus(0.2), 0.9 * softplus(0.2) + 0.1 * softplus(-0.2))
    assert approx(cdpo(PW, PL, RW, RL, epsilon=0.0).losses, *dpo(PW, PL, RW, RL).losses.tolist())


def test_robust_values():
    out = robust(PW, PL, RW, RL, beta=0.1, epsilon=0.1)
    assert approx(
        out.losses,
        (0.9 * softplus(-0.2) - 0.1 * softplus(0.2)) / 0.8,
        (0.9 * softplus(0.2) - 0.1 * softplus(-0.2)) / 0.8,
    )
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        robust(PW, PL, RW, RL, epsilon=0.5)


def test_ipo_values():
    # inputs are length-averaged log-probs; h = ±2, target 1/(2β) = 5
    out = ipo(PW, PL, RW, RL, beta=0.1)
    assert approx(out.losses, (2 - 5) ** 2, (-2 - 5) ** 2)


def test_hinge_values():
    assert approx(hinge(PW, PL, RW, RL, beta=0.1).losses, 1 - 0.2, 1 + 0.2)
    assert approx(hinge(PW, PL, RW, RL, beta=1.0).losses, 0.0, 3.0)  # max(0, 1 − 2), 1 + 2


def test_simpo_values():
    # averaged log-probs −1.0 vs −1.5: β(l̄_w − l̄_l) − γ = 2·0.5 − 0.5 = 0.5
    out = simpo(t(-1.0), t(-1.5), beta=2.0, gamma=0.5)
    assert approx(out.losses, softplus(-0.5))
    assert approx(out.chosen_rewards, -2.0) and approx(out.rejected_rewards, -3.0)
    assert out.metrics()["rewards/accuracies"] == 1


def test_orpo_values():
    def log_odds(avg_logp: float) -> float:
        p = math.exp(avg_logp)
        return math.log(p / (1 - p))

    lw, ll = -0.5, -1.0
    z = log_odds(lw) - log_odds(ll)  # ≈ 0.974
    out = orpo(t(lw), t(ll), lam=0.1)
    assert approx(out.losses, -lw + 0.1 * softplus(-z))  # NLL(y_w) − λ log σ(z)
    assert approx(out.extra["nll"], 0.5) and approx(out.extra["log_odds_ratio"], -softplus(-z))
    assert approx(out.chosen_rewards, -0.05) and approx(out.rejected_rewards, -0.1)
    # finite for a response the policy is all but certain of (l̄ → 0⁻)
    assert torch.isfinite(orpo(t(-1e-6), t(-2.0)).losses).all()


def test_kto_values_and_reference_point():
    policy, ref = t(-10.0, -14.0), t(-11.0, -12.0)  # Δ = +1 (desirable), −2 (undesirable)
    desirable = torch.tensor([True, False])
    kl_policy, kl_ref = t(-5.0, -6.0), t(-5.2, -6.8)  # mismatched-pair Δ = 0.2, 0.8 → z0 = 0.5
    out = kto(policy, ref, desirable, kl_policy_logps=kl_policy, kl_ref_logps=kl_ref, beta=0.1)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert approx(out.losses, 1 - sigmoid(0.1 * (1 - 0.5)), 1 - sigmoid(0.1 * (0.5 + 2)))
    assert approx(out.extra["kl"], 0.5)
    assert approx(out.chosen_rewards, 0.1) and approx(out.rejected_rewards, -0.2)
    assert out.metrics()["rewards/accuracies"] == 1
    # a negative KL estimate is clamped to 0; no estimate at all means z0 = 0
    clamped = kto(policy, ref, desirable, kl_policy_logps=kl_ref, kl_ref_logps=kl_policy, beta=0.1)
    assert approx(clamped.extra["kl"], 0.0)
    assert approx(clamped.losses, *kto(policy, ref, desirable, beta=0.1).losses.tolist())


def test_kto_reference_point_carries_no_gradient():
    kl_policy = t(-5.0, -6.0).requires_grad_()
    policy = t(-10.0, -14.0).requires_grad_()
    kto(
        policy, t(-11.0, -12.0), torch.tensor([True, False]), kl_policy_logps=kl_policy, kl_ref_logps=t(-5.2, -6.8)
    ).losses.sum().backward()
    assert kl_policy.grad is None and policy.grad is not None


# ----------------------------------------------------------------------------- dispatcher


def test_names_and_dispatcher():
    assert LOSS_NAMES == ("dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo", "kto")
    assert tuple(LOSSES) == LOSS_NAMES  # the config's names (names.py, torch-free) are the functions' names
    assert set(REFERENCE_FREE) <= set(LOSS_NAMES) and set(LENGTH_AVERAGED) <= set(LOSS_NAMES)
    direct = cdpo(PW, PL, RW, RL, beta=0.2, epsilon=0.05)
    via = preference_loss("cdpo", PW, PL, RW, RL, beta=0.2, epsilon=0.05)
    assert torch.equal(direct.losses, via.losses)
    assert torch.equal(preference_loss("orpo", t(-0.5), t(-1.0)).losses, orpo(t(-0.5), t(-1.0)).losses)
    with pytest.raises(ValueError, match="write one of: dpo, cdpo"):
        preference_loss("sigmoid", PW, PL, RW, RL)


def test_mismatched_shapes_fail():
    with pytest.raises(ValueError, match="one shape"):
        dpo(PW, PL, RW, t(-1.0))


# ----------------------------------------------------------------------------- reward model


def test_bradley_terry_equal_scores_is_ln2_and_strict_accuracy():
    scores = t(0.3, -2.0, 5.0)
    out = bradley_terry(scores, scores.clone())
    assert approx(out.losses, LN2, LN2, LN2)
    assert out.metrics()["accuracy"] == 0 and out.metrics()["margin"] == 0


def test_bradley_terry_margin_and_centring():
    chosen, rejected = t(1.0, 0.0), t(0.0, 0.5)
    out = bradley_terry(chosen, rejected, margin=t(0.5, 0.0), center_coef=0.01)
    assert approx(out.losses, softplus(-0.5) + 0.01 * 1.0, softplus(0.5) + 0.01 * 0.25)
    assert approx(out.margins, 1.0, -0.5) and approx(out.correct, 1.0, 0.0)
    assert approx(out.metrics()["accuracy"], 0.5) and approx(out.metrics()["margin"], 0.25)
    assert approx(bradley_terry(chosen, rejected, margin=0.5).losses, softplus(-0.5), softplus(1.0))


def test_ranking_pairs_of_a_4_way_ranking():
    assert ranking_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_k_way_loss_is_the_mean_of_its_pairwise_losses():
    torch.manual_seed(0)
    scores = torch.randn(3, 4, dtype=torch.float64)
    out = ranking_loss(scores, center_coef=0.01)
    for b in range(3):
        pairs = [
            bradley_terry(scores[b, i : i + 1], scores[b, j : j + 1], center_coef=0.01).losses
            for i, j in ranking_pairs(4)
        ]
        assert approx(out.losses[b], torch.cat(pairs).mean().item())
    assert out.margins.shape == (18,)
    expected_acc = sum(float(scores[b, i] > scores[b, j]) for b in range(3) for i, j in ranking_pairs(4)) / 18
    assert approx(out.metrics()["accuracy"], expected_acc)


def test_k_way_loss_with_padded_rankings():
    three = t(2.0, 0.5, -1.0)
    scores = torch.stack([torch.cat([three, t(float("nan"))]), t(1.0, 0.0, -1.0, -2.0)]).requires_grad_()
    padded = ranking_loss(scores, mask=torch.tensor([[True, True, True, False], [True] * 4]))
    alone = ranking_loss(three[None])
    assert approx(padded.losses[0], alone.losses.item())
    padded.losses.sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 3] == 0
    assert padded.margins.shape == (3 + 6,)
    assert approx(ranking_loss(t(0.0, 0.0)[None]).losses, LN2)  # a 2-way ranking is one pair


# ----------------------------------------------------------------------------- sequence log-probs


def naive_sequence_logprobs(logits, labels, average):
    logp = F.log_softmax(logits.double(), dim=-1)[:, :-1]  # (B, T-1, V)
    targets = labels[:, 1:]
    keep = targets != -100
    token = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * keep
    return token.sum(-1) / keep.sum(-1) if average else token.sum(-1)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logprobs_matches_naive_log_softmax(average):
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :3] = -100  # prompt
    labels[1, 5:] = -100  # padding
    labels[2, :2] = -100
    ours = sequence_logprobs(logits, labels, average=average)
    naive = naive_sequence_logprobs(logits, labels, average)
    assert ours.dtype == torch.float32 and ours.shape == (3,)
    assert torch.allclose(ours.double(), naive, atol=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_naive,) = torch.autograd.grad(naive.sum(), logits)
    assert torch.allclose(grad_ours, grad_naive, atol=1e-6)


def test_sequence_logprobs_bf16_and_empty_rows():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 9).bfloat16()
    labels = torch.randint(0, 9, (2, 5))
    labels[1] = -100  # no completion tokens at all
    ours = sequence_logprobs(logits, labels, average=True)
    assert ours.dtype == torch.float32 and ours[1] == 0
    assert torch.allclose(ours[0].double(), naive_sequence_logprobs(logits.float(), labels, True)[0], atol=1e-5)

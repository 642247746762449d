"""PPO arithmetic: masked statistics, KL estimators, per-token rewards, GAE, clipped losses,
entropy, the adaptive KL controller and group-relative advantages — against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.methods.ppo.math import (
    adaptive_kl_coef,
    entropy_from_logits,
    gae,
    grpo_advantages,
    kl_k1,
    kl_k3,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    rloo_advantages,
    value_loss,
)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(x: torch.Tensor | float, expected, tol: float = 1e-9) -> bool:
    return torch.allclose(
        torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0
    )


# ----------------------------------------------------------------------------- masked statistics


def test_masked_mean_and_var():
    x = t([1.0, 2.0, 100.0], [3.0, 4.0, -50.0])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert close(masked_mean(x, mask), 2.5)
    assert close(masked_mean(x, mask, dim=1), [1.5, 3.5])
    assert close(masked_var(x, mask), 5 / 3)  # (2.25 + 0.25 + 0.25 + 2.25) / (4 − 1)
    assert close(masked_var(x, mask, unbiased=False), 1.25)
    assert close(masked_mean(x, torch.zeros_like(mask)), 0.0)


def test_whitened_advantages_have_mean_0_std_1_over_the_mask():
    torch.manual_seed(0)
    x = 3 + 5 * torch.randn(4, 9, dtype=torch.float64)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[2, 3:] = False
    x_off = x.masked_fill(~mask, 1e6)  # garbage off the mask must not leak in
    w = masked_whiten(x_off, mask)
    assert close(w[mask].mean(), 0.0, tol=1e-7) and close(w[mask].std(), 1.0, tol=1e-6)
    assert (w[~mask] == 0).all()
    kept = masked_whiten(x_off, mask, shift_mean=False)
    assert close(kept[mask].mean(), x[mask].mean(), tol=1e-7) and close(kept[mask].std(), 1.0, tol=1e-6)


# ----------------------------------------------------------------------------- KL and rewards


def test_kl_estimators_vanish_when_policy_is_reference():
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(2, 5, 7), -1)[..., 0]
    assert (kl_k1(logp, logp.clone()) == 0).all() and (kl_k3(logp, logp.clone()) == 0).all()


def test_kl_estimator_values():
    logp, logp_ref = t(math.log(0.5)), t(math.log(0.25))  # π = 2·π_ref: d = ln 2, r = 1/2
    assert close(kl_k1(logp, logp_ref), math.log(2))
    assert close(kl_k3(logp, logp_ref), (0.5 - 1) + math.log(2))
    assert (kl_k3(t(*torch.randn(50).tolist()), t(*torch.randn(50).tolist())) >= 0).all()


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    g = torch.Generator().manual_seed(0)
    p, q = t(0.5, 0.2, 0.2, 0.1), t(0.25, 0.25, 0.25, 0.25)
    kl = (p * (p / q).log()).sum()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[samples], q.log()[samples]
    assert close(kl_k1(logp, logq).mean(), kl, tol=5e-3)
    assert close(kl_k3(logp, logq).mean(), kl, tol=5e-3)


def test_per_token_rewards_put_the_score_on_the_last_response_token():
    logp = t([-1.0, -2.0, -0.5, -9.0], [-9.0, -1.0, -1.0, -3.0], [-1.0, -1.0, -1.0, -1.0])
    logp_ref = t([-1.5, -1.0, -0.5, 0.0], [0.0, -2.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)  # padded / prompt / empty
    rewards, kl = per_token_rewards(t(2.0, -1.0, 7.0), logp, logp_ref, mask, kl_coef=0.1)
    assert close(kl, [[0.5, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, -2.0], [0.0] * 4])
    assert close(rewards, [[-0.05, 0.1, 2.0, 0.0], [0.0, -0.1, 0.0, 0.2 - 1.0], [0.0] * 4])
    _, kl3 = per_token_rewards(t(0.0, 0.0, 0.0), logp, logp_ref, mask, kl_coef=0.1, estimator="k3")
    assert close(kl3[0, 0], math.exp(-0.5) - 1 + 0.5)
    with pytest.raises(ValueError, match="k1, k3"):
        per_token_rewards(t(0.0), logp[:1], logp_ref[:1], mask[:1], kl_coef=0.1, estimator="k2")


# ----------------------------------------------------------------------------- GAE


def test_gae_hand_worked_three_tokens():
    rewards, values = t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # γ = 1, λ = 0.95: δ = [0.1, 0.1, 0.3]; A2 = 0.3, A1 = 0.1 + 0.95·0.3 = 0.385, A0 = 0.1 + 0.95·0.385 = 0.46575
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert close(adv, [[0.46575, 0.385, 0.3]]) and close(ret, [[0.96575, 0.985, 1.0]])
    # γ = 0.9, λ = 0.5: δ2 = 0.3, δ1 = 0.9·0.7 − 0.6 = 0.03, δ0 = 0.9·0.6 − 0.5 = 0.04; γλ = 0.45
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert close(adv, [[0.04 + 0.45 * 0.165, 0.03 + 0.45 * 0.3, 0.3]])
    assert close(ret, adv + values)


def test_gae_skips_masked_positions():
    rewards, values = t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7])
    expected, _ = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=0.9, lam=0.5)
    # prompt in front, padding behind, and a masked (e.g. tool-output) token in the middle, all with garbage
    r = t([5.0, 0.0, 9.0, 0.0, 1.0, 3.0])
    v = t([7.0, 0.5, -4.0, 0.6, 0.7, 8.0])
    mask = torch.tensor([[0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    adv, ret = gae(r, v, mask, gamma=0.9, lam=0.5)
    assert close(adv[mask], expected[0]) and (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_with_lambda_and_gamma_1_is_return_minus_value():
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    adv, ret = gae(rewards, values, torch.ones(2, 5, dtype=torch.bool), gamma=1.0, lam=1.0)
    to_go = rewards.flip(-1).cumsum(-1).flip(-1)
    assert close(ret, to_go) and close(adv, to_go - values)


# ----------------------------------------------------------------------------- clipped losses


def test_policy_loss_on_the_first_minibatch_has_ratio_1_and_nothing_clipped():
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(3, 6, 10), -1)[..., 0].requires_grad_()
    adv = torch.randn(3, 6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    out = policy_loss(logp, logp.detach().clone(), adv, mask)
    assert torch.equal(out.ratio, torch.ones(3, 6))
    assert out.clip_fraction == 0 and out.approx_kl == 0
    assert close(out.loss, -adv.mean(), tol=1e-6)
    out.loss.backward()
    assert close(logp.grad, -adv / 18, tol=1e-7)  # d(−Aρ)/d logp = −Aρ = −A


def test_policy_loss_hand_worked():
    ratio, adv = t([1.5, 0.5, 1.1, 3.0]), t([1.0, -1.0, 2.0, 1.0])
    mask = torch.tensor([[True, True, True, False]])
    logp = ratio.log().requires_grad_()
    out = policy_loss(logp, torch.zeros_like(ratio), adv, mask, clip=0.2)
    # token 0: max(−1.5, −1.2) = −1.2 (clipped); 1: max(0.5, 0.8) = 0.8 (clipped); 2: −2.2 either way
    assert close(out.loss, (-1.2 + 0.8 - 2.2) / 3)
    assert close(out.token_losses, [[-1.2, 0.8, -2.2, 0.0]])
    assert close(out.clip_fraction, 2 / 3)
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert close(out.approx_kl, sum(k3) / 3)
    out.loss.backward()
    assert close(logp.grad, [[0.0, 0.0, -2.2 / 3, 0.0]])  # only the unclipped token moves


def test_value_loss_hand_worked():
    values = t([1.0, 0.0, 0.0, 50.0]).requires_grad_()
    values_old, returns = t([0.5, 0.0, 1.0, 0.0]), t([0.0, 1.0, 0.0, 0.0])
    mask = torch.tensor([[True, True, True, False]])
    out = value_loss(values, values_old, returns, mask, clip=0.2)
    # 0: max(1, 0.7²) = 1; 1: max(1, 1) = 1; 2: max(0, 0.8²) = 0.64 (clipped); halved
    assert close(out.token_losses, [[0.5, 0.5, 0.32, 0.0]])
    assert close(out.loss, (0.5 + 0.5 + 0.32) / 3) and close(out.clip_fraction, 1 / 3)


# ----------------------------------------------------------------------------- entropy and KL control


def test_entropy_from_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8)
    logits[0, 0] = 0.0  # uniform
    logits[0, 1] = torch.tensor([50.0] + [-50.0] * 7)  # all but deterministic
    p = logits.double().softmax(-1)
    naive = -(p * p.log()).sum(-1)
    ent = entropy_from_logits(logits)
    assert ent.shape == (2, 3) and close(ent, naive, tol=1e-5)
    assert close(ent[0, 0], math.log(8), tol=1e-6) and close(ent[0, 1], 0.0, tol=1e-6)
    assert close(entropy_from_logits(logits.bfloat16()), naive, tol=5e-2)


def test_adaptive_kl_controller():
    assert adaptive_kl_coef(0.05, 6.0, 256) == 0.05  # on target: unchanged
    assert close(adaptive_kl_coef(0.05, 60.0, 256), 0.05 * (1 + 0.2 * 256 / 10000))  # error clipped at +0.2
    assert close(adaptive_kl_coef(0.05, 0.0, 256), 0.05 * (1 - 0.2 * 256 / 10000))
    assert close(adaptive_kl_coef(0.05, 6.6, 100, target=6.0, horizon=1000), 0.05 * (1 + 0.1 * 0.1))


# ----------------------------------------------------------------------------- group-relative advantages


def test_grpo_advantages():
    adv = grpo_advantages(t([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert close(adv, [[-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4)], [0.0, 0.0, 0.0]])  # std([1,2,3]) = 1
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(t([1.0]))


def test_rloo_advantages():
    rewards = t([1.0, 2.0, 3.0], [0.0, 4.0, 8.0])
    adv = rloo_advantages(rewards)
    assert close(adv, [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0 - 6.0, 4 - 4.0, 8 - 2.0]])
    # equivalently K/(K−1)·(r − mean)
    assert close(adv, 1.5 * (rewards - rewards.mean(-1, keepdim=True)))

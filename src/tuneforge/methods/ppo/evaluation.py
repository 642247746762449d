"""Held-out evaluation: mean reward and KL to the reference on sampled responses, before and after.

Responses are *sampled* with the training generation settings (one per prompt),
not decoded greedily: the objective PPO optimises, ``E[r] − β·KL(π‖π_ref)``, is
an expectation under the sampling policy, and the sequence KL estimate
``Σ_t (log π − log π_ref)`` (k1) is unbiased only on the policy's own samples —
the quantity on the x-axis of the DPO paper's reward-vs-KL frontier (Rafailov
et al. 2023, arXiv 2305.18290, Fig. 2). Sampling runs under
``torch.random.fork_rng`` with ``eval.seed``: before and after see the same
random stream, and training's sampling stream is untouched (resume stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...eval.generation import eval_mode
from .data import PromptRow
from .rollout import Reference, forward_policy, micro_batch, sample_rollout


@dataclass(frozen=True)
class EvalSettings:
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def evaluate_policy(
    model, reference: Reference, rewards, tokenizer, prompts: list[PromptRow], settings: EvalSettings
) -> dict:
    """``{"metrics": {reward, reward/<source>, kl, response_length, eos_fraction}, "samples": [...]}``."""
    if not prompts:
        return {"metrics": {}, "samples": []}
    device = next(model.parameters()).device
    devices = [device] if device.type == "cuda" else []
    scores, parts, kls, lengths, ended, samples = [], {}, [], [], [], []
    with torch.random.fork_rng(devices=devices), eval_mode(model), torch.no_grad():
        torch.manual_seed(settings.seed)
        for start in range(0, len(prompts), settings.batch_size):
            chunk = prompts[start : start + settings.batch_size]
            rollout = sample_rollout(
                model,
                tokenizer,
                chunk,
                group_size=1,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
            )
            total, by_source = rewards.score(
                rollout.prompts, rollout.responses, [rollout.sequence_ids(i) for i in range(len(chunk))], device
            )
            inputs = micro_batch(rollout, list(range(len(chunk))), {})
            mask = inputs["response_mask"]
            logp = forward_policy(
                model,
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["position_ids"],
                mask.shape[1],
                temperature=settings.temperature,
            ).logp
            logp_ref = reference.logp(inputs, temperature=settings.temperature)
            kl = torch.where(mask, logp - logp_ref, 0.0).sum(-1).cpu()  # (B,) sequence k1
            scores.append(total)
            kls.append(kl)
            lengths.append(mask.sum(-1).cpu().float())
            ended.append(rollout.ended.float())
            for name, value in by_source.items():
                parts.setdefault(name, []).append(value)
            for i, row in enumerate(chunk):
                shown = {"reward": round(float(total[i]), 6), "kl": round(float(kl[i]), 6)}
                if len(by_source) > 1:
                    shown.update({name: round(float(v[i]), 6) for name, v in by_source.items()})
                samples.append(
                    {"prompt": row.display, "reference": "", "prediction": rollout.responses[i], "scores": shown}
                )
    metrics = {
        "reward": float(torch.cat(scores).mean()),
        "kl": float(torch.cat(kls).mean()),
        "response_length": float(torch.cat(lengths).mean()),
        "eos_fraction": float(torch.cat(ended).mean()),
    }
    if len(parts) > 1:
        metrics.update({f"reward/{name}": float(torch.cat(v).mean()) for name, v in parts.items()})
    return {"metrics": {k: round(v, 6) for k, v in metrics.items()}, "samples": samples}

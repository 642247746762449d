"""Held-out evaluation: implicit-reward accuracy and margin, the loss, log-probs, and greedy samples.

The implicit reward of a response is ``β·(logp_θ − logp_ref)`` (Rafailov et al.
2023, arXiv 2305.18290, section 5); a pair counts as right when the chosen
response's reward is strictly higher. Before training the policy *is* the
reference, so every reward, the accuracy and the margin are exactly 0 (the
loss is its value at initialisation, ln 2 for dpo); the reference-free
variants' rewards (simpo, orpo: β or λ times the mean token log-prob) are
already meaningful then. KTO's accuracy: an example on its label's side of
the reference point.

All held-out pairs are scored first and the variant's loss is computed once
over the whole set, so KTO's reference point is the held-out set's.
"""

from __future__ import annotations

import torch

from ..preference.losses import LENGTH_AVERAGED, REFERENCE_FREE, preference_loss
from .data import PairRow, Row, collate_rows, split_sequences
from .logps import frozen_logps


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _score(rows: list[Row], pad_id: int, batch_size: int, logps_fn, device) -> tuple[torch.Tensor, ...]:
    """(first, second, first counts, second counts), each (N,): summed log-probs of every row's two sequences."""
    firsts, seconds, first_counts, second_counts = [], [], [], []
    for start in range(0, len(rows), batch_size):
        inputs = collate_rows(rows[start : start + batch_size], pad_id).inputs
        sequences, kl = split_sequences(inputs, device)
        sums, counts = logps_fn(sequences)
        if isinstance(rows[0], PairRow):
            b = sums.shape[0] // 2
            firsts.append(sums[:b]), seconds.append(sums[b:])
            first_counts.append(counts[:b]), second_counts.append(counts[b:])
        else:
            kl_sums, kl_counts = logps_fn(kl)
            (firsts.append(sums), seconds.append(kl_sums), first_counts.append(counts), second_counts.append(kl_counts))
    return tuple(torch.cat(parts).float().cpu() for parts in (firsts, seconds, first_counts, second_counts))


def heldout_metrics(
    model,
    rows: list[Row],
    *,
    loss: str,
    options: dict,
    sft_weight: float,
    pad_id: int,
    batch_size: int,
    reference_fn=None,
    before: bool = False,
) -> dict[str, float]:
    """eval_loss, rewards/accuracies, rewards/margins, rewards/chosen, rewards/rejected, logps/chosen,
    logps/rejected (and the variant's extras) over ``rows``.

    The reference: ``before`` → the model itself; else the rows' precomputed log-probs, or
    ``reference_fn`` (same signature as ``logps.base_logps``), or none for reference-free losses.
    """
    device = _device(model)
    policy = _score(rows, pad_id, batch_size, lambda sequences: frozen_logps(model, sequences), device)
    first, second, n_first, n_second = policy
    if loss in REFERENCE_FREE:
        ref = None
    elif before:
        ref = (first, second)
    elif all(r.ref is not None for r in rows):
        ref = tuple(torch.tensor(values, dtype=torch.float32) for values in zip(*(r.ref for r in rows)))
    else:
        ref = _score(rows, pad_id, batch_size, reference_fn, device)[:2]
    scale = (n_first.clamp(min=1), n_second.clamp(min=1)) if loss in LENGTH_AVERAGED else (1, 1)
    if loss == "kto":
        desirable = torch.tensor([r.item.desirable for r in rows])
        out = preference_loss("kto", first, ref[0], desirable, kl_policy_logps=second, kl_ref_logps=ref[1], **options)
        chosen, rejected = first[desirable], first[~desirable]
    else:
        args = (first / scale[0], second / scale[1])
        if ref is not None:
            args += (ref[0] / scale[0], ref[1] / scale[1])
        out = preference_loss(loss, *args, **options)
        chosen, rejected = first, second
    losses = out.losses + (sft_weight * -first / n_first.clamp(min=1) if sft_weight and loss != "kto" else 0)
    metrics = {
        "eval_loss": losses.mean(),
        **{k: v for k, v in out.metrics().items() if k != "loss"},
        "logps/chosen": chosen.mean(),
        "logps/rejected": rejected.mean(),
    }
    return {name: round(float(value), 6) for name, value in metrics.items() if torch.isfinite(torch.as_tensor(value))}


def generated_samples(model, tokenizer, samples, *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy answers to held-out prompts (same prompts and decoding before and after), for the report."""
    from ...eval.generation import generate

    if not samples:
        return []
    answers = generate(
        model, tokenizer, [s.prompt_ids for s in samples], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return [
        {"prompt": s.prompt, "reference": s.reference, "prediction": answer, "scores": {}}
        for s, answer in zip(samples, answers)
    ]

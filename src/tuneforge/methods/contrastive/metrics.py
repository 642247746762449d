"""Retrieval and similarity metrics as pure functions.

Retrieval: each query has exactly one relevant document; ``rank`` is its 1-based
position when the corpus is sorted by similarity (ties broken by index).
recall@k = mean[rank ≤ k]; MRR@10 = mean[1/rank if rank ≤ 10 else 0];
nDCG@10 with one relevant document = mean[1/log2(rank + 1) if rank ≤ 10 else 0]
(the ideal DCG is 1).
"""

from __future__ import annotations

import math

import torch


def ranks(queries: torch.Tensor, documents: torch.Tensor, relevant: list[int]) -> list[int]:
    """queries (Q, d), documents (D, d), unit-normalised → the 1-based rank of each relevant document."""
    scores = queries @ documents.T  # (Q, D)
    target = scores[torch.arange(len(relevant)), torch.tensor(relevant)]  # (Q,)
    better = (scores > target[:, None]).sum(dim=1)
    # Ties count against the relevant document only when they come first in the corpus.
    index = torch.arange(scores.shape[1])[None, :]
    ties = ((scores == target[:, None]) & (index < torch.tensor(relevant)[:, None])).sum(dim=1)
    return (better + ties + 1).tolist()


def retrieval_metrics(rank_list: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    n = len(rank_list)
    if not n:
        return {}
    out = {f"recall@{k}": sum(r <= k for r in rank_list) / n for k in ks}
    out["mrr@10"] = sum(1 / r for r in rank_list if r <= 10) / n
    out["ndcg@10"] = sum(1 / math.log2(r + 1) for r in rank_list if r <= 10) / n
    return {k: round(v, 6) for k, v in out.items()}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def rank(values):
        order = sorted(range(len(values)), key=values.__getitem__)
        r = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = rank(x), rank(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else 0.0

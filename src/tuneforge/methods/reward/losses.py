"""The reward model's loss: Bradley–Terry over pairs and K-way rankings, and the module the engine calls.

Christiano et al. 2017 (arXiv 1706.03741) fit a scalar reward r(x, y) to human
comparisons with the Bradley–Terry model, P(y_w ≻ y_l) = σ(r_w − r_l), i.e. the
per-pair loss ``−log σ(r_w − r_l)``. InstructGPT (Ouyang et al. 2022, arXiv
2203.02155) ranks K responses per prompt and trains on all C(K,2) pairs of a
ranking as ONE batch element, its loss the mean of those pairs' losses, so one
prompt's many correlated pairs neither dominate a batch nor overfit. We do the
same; a plain pair is a ranking with K = 2. Options beyond the papers: Llama 2's
per-pair margin ``−log σ(r_w − r_l − m)`` (arXiv 2307.09288; pairs only, rankings
carry no margin) and the centring term ``c·(r_w + r_l)²`` (Eisenstein et al. 2023,
arXiv 2312.09244; TRL's ``center_rewards_coefficient``).

The per-element losses are summed and the engine divides by the number of
comparisons of the whole accumulated batch (``count_name = "comparisons"``), so
gradient accumulation and DDP stay exact. Equal scores give ln 2 per element.
"""

from __future__ import annotations

import torch

from ..preference.data import group_scores
from ..preference.losses import RewardOutput, bradley_terry, ranking_loss


def comparison_losses(
    scores: torch.Tensor, mask: torch.Tensor, *, margin: torch.Tensor | None = None, center_coef: float = 0.0
) -> RewardOutput:
    """scores (B, K), each row best → worst; mask (B, K) True on real responses; margin (B,) or None →
    losses (B,), one per comparison: the mean Bradley–Terry loss of its pairs; margins / correct per pair.

    Only two-response comparisons (pairs) carry a margin; a ranking's entry in ``margin`` is ignored.
    """
    out = ranking_loss(scores, mask=mask, center_coef=center_coef)
    if margin is None or not bool(margin.any()):
        return out
    # Columns 0 and 1 are real in every row (K ≥ 2), so this is finite everywhere and torch.where's
    # unselected branch cannot leak NaN gradients.
    pair = bradley_terry(scores[:, 0], scores[:, 1], margin=margin.to(scores.dtype), center_coef=center_coef)
    two = mask.sum(-1) == 2  # (B,)
    return RewardOutput(torch.where(two, pair.losses, out.losses), out.margins, out.correct)


def sequence_scores(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, T) → (N,) float32: the one-output head at the last non-pad token (transformers' own pooling)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()


class RewardLoss(torch.nn.Module):
    """Wrap a one-label sequence classifier (plain or peft): ``forward`` → (summed loss, comparisons).

    Every response of the batch goes through one forward; ``group`` / ``rank`` put the scores
    back in (B, K) ranking order. ``step_metrics`` reports the strict pairwise accuracy and the
    mean margin r_w − r_l over the training micro-batches since its last call (pair-weighted).
    """

    def __init__(self, model: torch.nn.Module, *, use_margin: bool = True, center_coef: float = 0.0):
        super().__init__()
        self.model = model
        self.use_margin = use_margin
        self.center_coef = center_coef
        self._sums: torch.Tensor | None = None  # (correct, margin, pairs), on the device: no sync per step

    def forward(self, input_ids, attention_mask, group, rank, margin):
        scores = sequence_scores(self.model, input_ids, attention_mask)  # (N,)
        grid, mask = group_scores(scores, group, rank)  # (B, K)
        out = comparison_losses(grid, mask, margin=margin if self.use_margin else None, center_coef=self.center_coef)
        if self.training:  # the held-out loss calls this module too, in eval mode
            batch = torch.stack([out.correct.sum(), out.margins.sum(), out.margins.new_tensor(out.margins.numel())])
            self._sums = batch if self._sums is None else self._sums + batch
        return out.losses.sum(), group.new_tensor(grid.shape[0])

    def step_metrics(self) -> dict[str, float]:
        if self._sums is None:
            return {}
        correct, margin, pairs = self._sums.tolist()
        self._sums = None
        return {"accuracy": correct / max(pairs, 1), "margin": margin / max(pairs, 1)}

"""The classification loss: cross-entropy with optional class weights and label smoothing.

Per example ``ℓ_i = w_{y_i} · [(1 − ε)·(−log p_{y_i}) + ε·mean_c(−log p_c)]``,
summed over the batch and normalised by the number of examples of the whole
accumulated batch (the engine's count), so accumulation and DDP stay exact.
Smoothing mixes the one-hot target with the uniform one (Szegedy et al. 2016);
``class_weights: balanced`` is ``w_k = n / (K · n_k)`` (King & Zeng 2001, as in
scikit-learn), whose mean over the training examples is 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss_sum(
    logits: torch.Tensor, labels: torch.Tensor, *, weights: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """logits (B, K), labels (B,) → the summed loss (scalar)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, K)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)  # (B,)
    per_example = nll if label_smoothing == 0 else (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    if weights is not None:
        per_example = per_example * weights.to(per_example.device)[labels]
    return per_example.sum()


def balanced_weights(counts: list[int]) -> list[float]:
    """``n / (K · n_k)`` for each class (a class without examples gets 0)."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) if c else 0.0 for c in counts]


class ClassifierLoss(torch.nn.Module):
    """Wrap a sequence-classification model (plain or peft) so ``forward`` returns (summed loss, examples).

    The model's own forward computes the logits (pooling and head exactly as plain
    transformers loads them); the loss is ours (weights, smoothing, summed).
    """

    def __init__(self, model: torch.nn.Module, *, weights: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.model = model
        self.register_buffer("weights", torch.tensor(weights) if weights is not None else None, persistent=False)
        self.label_smoothing = label_smoothing

    def logits(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits  # (B, K)

    def forward(self, input_ids, attention_mask, labels, token_type_ids=None):
        logits = self.logits(input_ids, attention_mask, token_type_ids)
        loss = classification_loss_sum(logits, labels, weights=self.weights, label_smoothing=self.label_smoothing)
        return loss, labels.new_tensor(labels.numel())

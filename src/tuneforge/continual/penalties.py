"""Penalties that hold the weights near what earlier stages learned (METHODS.md, "Continual learning").

- L2 to the anchor θ* (the weights at the stage's start): λ/2 · Σ (θ − θ*)²;
- EWC (Kirkpatrick et al. 2017, PNAS 114(13)): λ/2 · Σ F_i (θ_i − θ*_i)², with the diagonal
  empirical Fisher F_i = E[(∂ log p/∂θ_i)²], the mean of squared per-row gradients over the
  finished stage's data;
- O-LoRA (Wang et al. 2023, arXiv 2310.14152): λ1 · Σ_old Σ_layers Σ |A_old A_newᵀ| between the new
  stage's LoRA A and each frozen earlier one (the paper writes a squared Frobenius norm, its code
  sums absolute values; we follow the code, whose runs gave the paper's λ1 = 0.5), plus
  λ2 · ‖θ_new‖².

They act on the trainable parameters only (the adapter, or every weight in full fine-tuning) and
enter the loss through :class:`PenalisedLoss`, which keeps the engine's count-weighted contract.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable weights: the anchor θ*."""
    return {name: p.detach().clone() for name, p in trainable_parameters(model).items()}


def l2_penalty(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    """λ/2 · Σ (θ − θ*)² over the anchored parameters."""
    total = sum(((params[n] - a) ** 2).sum() for n, a in anchor.items())
    return 0.5 * weight * total


def ewc_penalty(
    params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], weight: float
) -> torch.Tensor:
    """λ/2 · Σ F_i (θ_i − θ*_i)² over the parameters that have a Fisher estimate."""
    total = sum((fisher[n] * (params[n] - anchor[n]) ** 2).sum() for n in fisher)
    return 0.5 * weight * total


def diagonal_fisher(
    loss_module: torch.nn.Module,
    rows: list,
    collate: Callable[[list], object],
    device: torch.device | str = "cpu",
    params: dict[str, torch.nn.Parameter] | None = None,
) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher: the mean over ``rows`` of each row's squared gradient.

    Each row's gradient is that of its mean loss (the mean negative log-likelihood of its loss tokens,
    or of its examples), one row at a time, so the estimate is E[(∂ log p/∂θ)²] per row, not the square
    of a batch mean (which would shrink it by the batch size). ``params``: the parameters to estimate
    it for, under the caller's names (default: the loss module's trainable ones).
    """
    module = getattr(loss_module, "module", loss_module)
    params = params if params is not None else trainable_parameters(module)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = module.training
    module.eval()  # no dropout: the Fisher of the model as it is
    for row in rows:
        module.zero_grad(set_to_none=True)
        batch = collate([row])
        loss_sum, count = module(**{k: v.to(device) for k, v in batch.inputs.items()})
        (loss_sum / max(float(count), 1.0)).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().float() ** 2
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    return {name: f / max(len(rows), 1) for name, f in fisher.items()}


def normalized(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Fisher divided by its mean over all entries (mean 1), so λ does not depend on the loss scale."""
    entries = sum(f.numel() for f in fisher.values())
    mean = float(sum(f.double().sum() for f in fisher.values()) / max(entries, 1))
    if mean <= 0:
        return fisher
    return {name: f / mean for name, f in fisher.items()}


def lora_pairs(model: torch.nn.Module, new: str, old: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A_old, A_new) for every LoRA layer and every older adapter name present in it."""
    pairs = []
    for module in model.modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or new not in lora_a:
            continue
        for name in old:
            if name in lora_a:
                pairs.append((lora_a[name].weight, lora_a[new].weight))
    return pairs


def olora_penalty(
    model: torch.nn.Module, new: str, old: list[str], *, orthogonality: float, l2: float = 0.0
) -> torch.Tensor:
    """λ1 · Σ_old Σ_layers Σ |A_old A_newᵀ| + λ2 · ‖θ_new‖² (O-LoRA; 0 for orthogonal row spaces, λ2 = 0)."""
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    if orthogonality:
        for a_old, a_new in lora_pairs(model, new, old):
            total = total + orthogonality * (a_old.detach() @ a_new.T).abs().sum()
    if l2:
        marker = f".{new}."
        total = total + l2 * sum(
            (p**2).sum() for n, p in model.named_parameters() if p.requires_grad and marker in n + "."
        )
    return total


class PenalisedLoss(torch.nn.Module):
    """A method's loss module plus a penalty on the weights, during training only.

    ``forward`` returns (summed loss + penalty · count, count): the engine divides by the count of
    the whole accumulated batch, so over the micro-batches of one step the penalty is added exactly
    once, whatever the accumulation (the same device AdaLoRA's regulariser uses in ``training.step``).
    The trained model stays reachable as ``.model``; the penalty's tensors (anchor, Fisher) are plain
    attributes, not parameters or buffers, so checkpoints hold only the trained weights.
    """

    def __init__(self, inner: torch.nn.Module, penalty: Callable[[], torch.Tensor]):
        super().__init__()
        self.inner = inner
        self._penalty = penalty
        self.last_penalty = 0.0

    @property
    def model(self):
        return self.inner.model

    def forward(self, **inputs):
        loss_sum, count = self.inner(**inputs)
        if not self.training:
            return loss_sum, count
        penalty = self._penalty()
        self.last_penalty = float(penalty.detach())
        return loss_sum + penalty * count, count

    def step_metrics(self) -> dict:
        inner = getattr(self.inner, "step_metrics", None)
        return {**(inner() if inner else {}), "penalty": self.last_penalty}

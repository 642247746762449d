"""The module the training engine calls: one batch of pairs (or KTO examples) → (summed loss, count).

DPO (Rafailov et al. 2023, arXiv 2305.18290) and its variants compare the
policy's log-probs of the chosen and rejected responses with a frozen
reference's. Per batch:

1. one forward of the policy over the batch, with gradients: a (2B, T)
   batch with chosen rows first, or one row per pair with the prompt shared
   (``data.collate_rows``, ``logps.py``): per-sequence log-probs of the
   response tokens, summed, or averaged over them for the variants that want
   it (``losses.LENGTH_AVERAGED``: ipo, simpo, orpo);
2. the reference's log-probs, without gradients: precomputed ones from the
   batch, or a forward of the base with adapters switched off, or of a frozen
   copy; none for the reference-free variants (simpo, orpo);
3. the variant's per-pair loss (``preference/losses.py``, one pure function
   per paper), plus ``sft_weight`` × the chosen response's per-token NLL
   (RPO, Pang et al. 2024, arXiv 2404.19733), summed over the pairs. The
   count is the number of pairs, so accumulation averages over pairs.

KTO (Ethayarajh et al. 2024, arXiv 2402.01306) gets B judged responses and
their B mismatched sequences; the mismatched ones only estimate the detached
reference point z0, so their policy forward runs without gradients (a second,
smaller forward instead of keeping activations nobody backpropagates through).
z0 is estimated per micro-batch, on this process's rows.

While training, the module keeps what it measured (rewards, accuracies,
log-probs, loss parts) for ``step_metrics``; held-out calls (eval mode) do not
count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

import torch

from ..causal_lm.loss import adalora_orthogonality  # AdaLoRA's regulariser lives outside peft's forward here
from ..preference.losses import LENGTH_AVERAGED, REFERENCE_FREE, PreferenceOutput, preference_loss
from .logps import response_logps

ReferenceFn = Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


class PreferenceLoss(torch.nn.Module):
    """``forward(**batch.inputs)`` → (Σ per-pair losses, number of pairs).

    ``reference``: a batch's sequences (``input_ids`` and ``labels``, or the shared-prompt layout) →
    (summed log-probs (N,), counts (N,)) without gradients, or None
    when the batch brings precomputed ``ref_logps`` or the loss is reference-free. ``options``: the
    keyword arguments of the loss function (beta, epsilon, gamma, lam, kto's weights).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        loss: str,
        options: dict[str, float],
        sft_weight: float = 0.0,
        reference: ReferenceFn | None = None,
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        self.options = dict(options)
        self.sft_weight = sft_weight
        self.averaged = loss in LENGTH_AVERAGED
        self.reference_free = loss in REFERENCE_FREE
        self.reference = reference  # a plain callable, not a submodule: a frozen copy stays out of the optimizer
        self._sums: dict[str, list] = defaultdict(lambda: [0.0, 0])

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        ref_logps: torch.Tensor | None = None,
        desirable: torch.Tensor | None = None,
        kl_input_ids: torch.Tensor | None = None,
        kl_labels: torch.Tensor | None = None,
        kl_ref_logps: torch.Tensor | None = None,
        **sequences: torch.Tensor,
    ):
        # sequences: input_ids and labels (one sequence per row), or the shared-prompt pair layout.
        if self.loss == "kto":
            kl = {"input_ids": kl_input_ids, "labels": kl_labels}
            out, sums, losses = self._kto(sequences, ref_logps, desirable, kl, kl_ref_logps)
            chosen, rejected = sums[desirable], sums[~desirable]
        else:
            out, sums, counts = self._paired(sequences, ref_logps)
            b = sums.shape[0] // 2
            chosen, rejected, losses = sums[:b], sums[b:], out.losses
            if self.sft_weight:
                nll = -sums[:b] / counts[:b].clamp(min=1)  # (B,) per-token NLL of the chosen response
                losses = losses + self.sft_weight * nll
                self._note("loss/sft", nll)
        if self.training:
            self._note("loss/preference", out.losses)
            self._record(out, chosen, rejected)
            orth = adalora_orthogonality(self.model)
            if orth is not None:  # per pair, so count-weighting keeps it a plain mean
                losses = losses + orth
        return losses.sum(), torch.tensor(losses.shape[0], device=losses.device)

    def _reference_sums(self, sequences, precomputed):
        if precomputed is not None:
            return precomputed.float()
        if self.reference is None:
            raise RuntimeError(
                "this batch has no precomputed reference log-probs (loss.reference: precomputed); "
                "they are computed when the loss module is built, for data.train and data.eval"
            )
        return self.reference(sequences)[0]

    def _paired(self, sequences, ref_logps) -> tuple[PreferenceOutput, torch.Tensor, torch.Tensor]:
        sums, counts = response_logps(self.model, sequences)  # (2B,) each, chosen first
        scale = counts.clamp(min=1) if self.averaged else 1
        policy = sums / scale
        b = policy.shape[0] // 2
        if self.reference_free:
            return preference_loss(self.loss, policy[:b], policy[b:], **self.options), sums, counts
        ref = self._reference_sums(sequences, ref_logps) / scale
        return (preference_loss(self.loss, policy[:b], policy[b:], ref[:b], ref[b:], **self.options), sums, counts)

    def _kto(self, sequences, ref_logps, desirable, kl, kl_ref_logps):
        sums, _ = response_logps(self.model, sequences)  # (B,)
        with torch.no_grad():  # z0 is detached: no graph for the mismatched rows
            kl_policy, _ = response_logps(self.model, kl)
        ref = self._reference_sums(sequences, ref_logps)
        kl_ref = self._reference_sums(kl, kl_ref_logps)
        out = preference_loss(
            "kto", sums, ref, desirable, kl_policy_logps=kl_policy, kl_ref_logps=kl_ref, **self.options
        )
        return out, sums, out.losses

    # ------------------------------------------------------------------ metrics

    def _note(self, name: str, values: torch.Tensor) -> None:
        """Add per-example values (or one scalar) to the running sums; empty tensors add nothing."""
        values = values.detach().float().reshape(-1)
        if values.numel():
            entry = self._sums[name]
            entry[0] = entry[0] + values.sum()  # a tensor from the first value on
            entry[1] += values.numel()

    def _record(self, out: PreferenceOutput, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self._note("rewards/chosen", out.chosen_rewards)
        self._note("rewards/rejected", out.rejected_rewards)
        self._note("rewards/accuracies", out.correct)
        self._note("logps/chosen", chosen)
        self._note("logps/rejected", rejected)
        for name, value in out.extra.items():  # orpo's nll / log_odds_ratio, kto's kl
            self._note(name, value)

    def step_metrics(self) -> dict[str, float]:
        """Means since the last call, over pairs (kto: over examples; rewards/chosen over desirable ones)."""
        if not self._sums:
            return {}
        totals = torch.stack([total for total, _ in self._sums.values()]).tolist()  # one device sync
        means = {name: total / n for (name, (_, n)), total in zip(self._sums.items(), totals)}
        self._sums.clear()
        if "rewards/chosen" in means and "rewards/rejected" in means:
            means["rewards/margins"] = means["rewards/chosen"] - means["rewards/rejected"]
        return means

"""Next-token cross-entropy on a causal LM, shared by every method that trains one (cpt, sft, DPO's and
PPO's policy): the loss module, the output projection at loss positions only, and the helpers that run a
peft-wrapped decoder to its hidden states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...data.types import IGNORE_INDEX
from ...training.linear_ce import linear_cross_entropy, supports_fused


class CausalLMLoss(torch.nn.Module):
    """Wrap a causal LM (plain or peft) so ``forward`` returns (summed loss, loss tokens).

    Only positions that carry a loss go through the output projection: for SFT
    the prompt tokens never need vocabulary logits, which saves the largest
    matmul of a small model at those positions. Being an ``nn.Module`` lets
    accelerate wrap it (DDP/FSDP) so gradient sync hooks run as usual.
    """

    def __init__(self, model: torch.nn.Module, fused: bool = True, packed_attention: str = "auto"):
        super().__init__()
        self.model = model
        self.fused = fused
        self.packed_attention = packed_attention  # model.packed_attention: auto | segments | mask
        self._mode: str | None = None  # resolved on the first forward (it depends on the device)

    @property
    def _no_split_modules(self):
        # FSDP's auto-wrap policy reads this from the prepared module (this wrapper): without it, it finds no
        # decoder layers and shards the whole model as one unit (every forward gathers all weights at once).
        return getattr(self.model, "_no_split_modules", None)

    def tie_weights(self, *args, **kwargs):
        # accelerate re-ties weights through the prepared module after FSDP's meta-device loading.
        return self.model.tie_weights(*args, **kwargs)

    def _parts(self):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        decoder = getattr(base, base.base_model_prefix)
        return base, decoder, base.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor,
        cu_seq_lens: torch.Tensor | None = None,
    ):
        # input_ids, labels, position_ids: (B, T); labels unshifted (HF convention); cu_seq_lens: the packed
        # batch's segment boundaries over the flattened B·T (derived from position_ids when not given).
        base, decoder, head = self._parts()
        targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
        keep = targets != IGNORE_INDEX
        if _prompt_learning(self.model):
            hidden = hidden_through_peft(self.model, decoder, input_ids)
        else:
            hidden = self._packed_hidden(decoder, input_ids, position_ids, cu_seq_lens)  # (B, T, H)
        selected = hidden[:, :-1][keep]  # (N, H)
        loss_sum, count = self._loss(base, head, selected, targets[keep])
        orth = adalora_orthogonality(self.model) if self.training else None
        if orth is not None:  # AdaLoRA's regulariser (training only), per token so count-weighting keeps it a mean
            loss_sum = loss_sum + orth * count
        return loss_sum, count

    def _packed_hidden(self, decoder, input_ids, position_ids, cu_seq_lens) -> torch.Tensor:
        """The decoder's last hidden states with packed examples kept apart (models/segment_attention.py).

        segments: per-segment attention, no mask; flash: the same boundaries as flash-attention's
        variable-length arguments; mask: attention_mask=None + restarting position_ids, from which
        transformers builds the block-diagonal causal mask.
        """
        from ...data.collate import segment_boundaries
        from ...models.segment_attention import packed_attention_mode, segment_attention_for

        if self._mode is None:
            self._mode = packed_attention_mode(self.packed_attention, decoder.config, input_ids.device)
        common = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": None, "use_cache": False}
        if self._mode == "mask":
            return decoder(**common).last_hidden_state
        if cu_seq_lens is None:
            cu_seq_lens = segment_boundaries(position_ids)
        longest = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
        varlen = {
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest,
            "max_length_k": longest,
        }
        if self._mode == "flash":
            return decoder(**common, **varlen).last_hidden_state
        with segment_attention_for(decoder.config):
            return decoder(**common, **varlen).last_hidden_state

    def _loss(self, base, head, selected, targets):
        count = torch.tensor(targets.numel(), device=targets.device)
        if self.fused and plain_logits(base.config) and supports_fused(head):
            # Chunked projection + loss: the (N, V) logits are never held at once (linear_ce.py).
            return linear_cross_entropy(selected, head.weight, targets), count
        loss_sum = F.cross_entropy(output_logits(base.config, head, selected), targets, reduction="sum")
        return loss_sum, count


def plain_logits(config) -> bool:
    """True when the model's logits are the output projection as is (no softcap, no rescaling)."""
    return (
        not getattr(config, "final_logit_softcapping", None)
        and (getattr(config, "logits_scaling", None) or 1.0) == 1.0
        and (getattr(config, "logit_scale", None) or 1.0) == 1.0
    )


def output_logits(config, head, selected: torch.Tensor) -> torch.Tensor:
    """(N, V) float32 logits for (N, H) hidden states, as the model's own forward computes them.

    Some families rescale logits inside their forward (Granite divides, Cohere multiplies) and
    Gemma 2 soft-caps them; a loss computed outside that forward must do the same.
    """
    divide = getattr(config, "logits_scaling", None) or 1.0
    multiply = getattr(config, "logit_scale", None) or 1.0
    logits = head(selected).float() * (multiply / divide)
    softcap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def _prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def hidden_through_peft(model, decoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states for ``input_ids`` when peft must run the forward.

    Soft prompts live in peft's forward (prompt / p-tuning prepend virtual token
    embeddings, prefix tuning passes key/value prefixes as a cache), so the model
    runs through peft; a hook takes the decoder's output, and ``logits_to_keep=1``
    keeps the full-vocabulary logits from being computed. peft ignores
    ``position_ids`` for soft prompts, and rows hold one example each (validation
    refuses packing), so no mask is needed beyond the causal one: right padding
    only follows the real tokens.
    """
    captured = {}

    def grab(_module, _inputs, output):
        captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = decoder.register_forward_hook(grab)
    try:
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured["hidden"][:, -input_ids.shape[1] :]  # drop prompt / p-tuning's virtual positions


def adalora_orthogonality(model):
    """AdaLoRA's ‖PᵀP − I‖_F + ‖QQᵀ − I‖_F regulariser (Zhang et al. 2023, eq. 4), times its weight.

    peft adds it inside ``AdaLoraModel.forward`` only when that forward computes the
    loss; the loss here is computed outside, so it is added here the same way.
    """
    config = getattr(model, "active_peft_config", None)
    if getattr(config, "peft_type", None) is None or str(config.peft_type.value) != "ADALORA":
        return None
    weight = config.orth_reg_weight
    if weight <= 0:
        return None
    total, count = 0.0, 0
    for name, param in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and param.requires_grad:
            mat = param @ param.T if "lora_A" in name else param.T @ param
            eye = torch.eye(*mat.size(), out=torch.empty_like(mat))
            total = total + torch.norm(mat - eye, p="fro")
            count += 1
    return weight * total / max(count, 1) if count else None


def count_loss_tokens(labels: torch.Tensor) -> int:
    """Positions that carry a loss once labels are shifted (labels[:, 0] is never a target)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())

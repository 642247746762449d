"""Per-sequence log-probs of response tokens, for the policy and for the frozen reference.

``logp(y|x) = Σ_t log π(y_t | x, y_<t)`` over the response tokens only (labels
IGNORE_INDEX on the prompt and on padding), as DPO defines it (Rafailov et al.
2023, arXiv 2305.18290, eq. 7). Like ``training.step.CausalLMLoss``, only the
positions that carry a label go through the output projection: a prompt token
never needs vocabulary logits.

Two batch layouts give the same numbers:

- one sequence per row, right-padded: the forward runs with
  ``attention_mask=None``, since a real token only ever attends to earlier
  positions, which are all real; padding comes after and is never a target.
  That keeps the fast causal attention path and gives what an unpadded forward
  gives;
- shared prompt (``preference.data.collate_pairs_shared``): one row per pair,
  the prompt once and both responses after it, with explicit positions and a
  segment mask (:func:`shared_prompt_mask`) so that each response sees the
  prompt and itself only. The prompt's tokens go through the network once
  instead of twice, which is where a pair's time goes when prompts are long
  (system prompts, instructions, few-shot context); the price is a masked
  attention, cheap at preference-pair lengths.

The reference, whichever way it is obtained, is computed in eval mode (no
dropout) without gradients:
- :func:`base_logps`: the same network with every adapter switched off
  (``adapters.adapters_disabled``), straight through the decoder (so soft
  prompts are off too): the base model, with no second copy of the weights;
- :func:`frozen_logps`: a model exactly as it is, soft prompts included: a
  frozen copy, or the policy before its first step when log-probs are
  precomputed (both are "the policy at initialisation").
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ...adapters import adapters_disabled, is_prompt_learning
from ...data.types import IGNORE_INDEX
from ...eval.generation import eval_mode
from ...training.linear_ce import linear_cross_entropy, supports_fused
from ..causal_lm.loss import hidden_through_peft, output_logits, plain_logits
from .attention import pair_attention_for


def _parts(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base, getattr(base, base.base_model_prefix), base.get_output_embeddings()


def response_logps(
    model, batch: Mapping[str, torch.Tensor], *, through_peft: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's sequences → (N,) float32 summed log-probs of each sequence's response tokens and (N,) how many
    there are. Differentiable when gradients are on.

    ``batch``: ``input_ids`` and ``labels`` (N, T), one sequence per row, labels unshifted (HF convention);
    or the shared-prompt layout of ``preference.data.collate_pairs_shared`` (``segment_ids`` present),
    whose N = 2B sequences come out chosen first, as the one-per-row layout's do.

    ``through_peft=False`` runs the decoder directly even when the model has a soft prompt (the
    reference with adapters off must not see the virtual tokens).
    """
    base, decoder, head = _parts(model)
    if "segment_ids" in batch:
        return _shared_prompt_logps(model, base, decoder, head, batch)
    input_ids, labels = batch["input_ids"], batch["labels"]
    if through_peft and is_prompt_learning(model):
        hidden = hidden_through_peft(model, decoder, input_ids)
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=None, use_cache=False).last_hidden_state  # (N, T, H)
    targets = labels[:, 1:]  # (N, T-1): token t+1 is predicted at position t
    keep = targets != IGNORE_INDEX
    counts = keep.sum(-1)  # (N,)
    selected = hidden[:, :-1][keep]  # (K, H), row-major: row 0's tokens first
    return _token_logp_sums(base, head, selected, targets[keep], counts), counts


# Where the shared-prompt layout attends per row (attention.py) rather than with a dense mask: measured faster on
# CPU; on CUDA the masked SDPA kernels are left to do it.
PAIR_ATTENTION_DEVICES = ("cpu",)


def shared_prompt_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """segment_ids (B, T) → (B, 1, T, T) bool, True where position i may attend to j: j ≤ i and j in i's own
    segment or in the prompt (segment 0). Every row allows at least its own position, so no softmax row is
    empty (padding sees earlier padding and the prompt)."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()  # (T, T)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T): [i, j]
    return (causal & (same | (segment_ids[:, None, :] == 0)))[:, None]  # (B, 1, T, T)


def _shared_prompt_logps(model, base, decoder, head, batch) -> tuple[torch.Tensor, torch.Tensor]:
    if is_prompt_learning(model):  # the config refuses this combination; virtual tokens would shift every index
        raise ValueError("the shared-prompt pair layout cannot run with a soft prompt; use pair_forward: separate")
    implementation = getattr(decoder.config, "_attn_implementation", "sdpa")  # the config its layers read
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if implementation == "sdpa" and batch["input_ids"].device.type in PAIR_ATTENTION_DEVICES:
        # Two attention calls per row, no T×T mask (attention.py): the CPU kernel would compute every masked score.
        with pair_attention_for(decoder.config):
            hidden = decoder(**inputs, attention_mask=None, pair_spans=batch["pair_lengths"].tolist()).last_hidden_state
    else:
        mask = shared_prompt_mask(batch["segment_ids"])
        if implementation == "eager":  # eager adds the mask to the scores
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
        # transformers uses a 4D mask as given (sdpa takes it as a boolean attend / don't-attend mask).
        hidden = decoder(**inputs, attention_mask=mask).last_hidden_state  # (B, T, H)
    selected = hidden.reshape(-1, hidden.shape[-1])[batch["score_index"]]  # (K, H), sequence by sequence
    counts = batch["score_counts"]
    return _token_logp_sums(base, head, selected, batch["score_targets"], counts), counts


def _token_logp_sums(base, head, selected: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """selected (K, H) hidden states, targets (K,), counts (N,) tokens per row (Σ = K) → (N,) summed log-probs."""
    # The chunked projection (linear_ce.py) never holds the (K, V) logits. One call per row gives
    # per-row sums; it is used only while the head is frozen (adapters, or no gradients at all):
    # with a trained head each call would keep its own (V, H) weight-gradient buffer.
    frozen_head = not torch.is_grad_enabled() or not head.weight.requires_grad
    if plain_logits(base.config) and frozen_head and supports_fused(head):
        pieces = zip(selected.split(counts.tolist()), targets.split(counts.tolist()))
        return torch.stack([-linear_cross_entropy(h, head.weight, t) for h, t in pieces])
    token_logps = -F.cross_entropy(output_logits(base.config, head, selected), targets, reduction="none")  # (K,)
    rows = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)  # (K,)
    return token_logps.new_zeros(counts.numel()).index_add(0, rows, token_logps)


@contextlib.contextmanager
def _frozen(model):
    """Eval mode (no dropout) and no gradients for the block, then the caller's mode back."""
    with eval_mode(model), torch.no_grad():
        yield


def base_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference as the base model: ``model`` with every adapter switched off, no gradients."""
    with _frozen(model), adapters_disabled(model):
        return response_logps(model, batch, through_peft=False)


def frozen_logps(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``model`` as it is (adapters and soft prompts on), in eval mode, no gradients."""
    with _frozen(model):
        return response_logps(model, batch)

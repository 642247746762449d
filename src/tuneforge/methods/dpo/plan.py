"""What `tuneforge plan` adds for DPO: the reference model's memory and forwards, the pair's shape."""

from __future__ import annotations

from ...planning import memory as M
from ...planning.profile import PlanExtras, PlanInputs, PlanProfile
from .config import reference_kind

_SHARED_NOTES = {
    "adapter_disabled": "the base with the adapter off: shared",
    "precomputed": "log-probs computed once before step 1",
    None: "reference-free loss: none",
}


def dpo_profile(config) -> PlanProfile:
    """Two sequences per pair; one prompt forward for both unless the loss or the config separates them."""
    pair_forward = getattr(config, "pair_forward", getattr(config.data, "pair_forward", "auto"))
    return PlanProfile(
        lm_head=True, sequences_per_item=2, shared_prompt=config.loss.type != "kto" and pair_forward != "separate"
    )


def dpo_extras(config, inputs: PlanInputs) -> PlanExtras:
    """The reference model: a frozen copy (memory + a forward per pair), the adapter switched off (a forward),
    or log-probs precomputed before step 1 (neither)."""
    kind = reference_kind(config)
    if kind == "frozen_copy":
        whole = inputs.params.frozen_bytes + inputs.params.trainable_bytes
        part = M.Part("reference model", whole, "frozen copy of the policy")
    else:
        part = M.Part("reference model", 0, _SHARED_NOTES.get(kind, str(kind)))
    forwards = inputs.step.slots_per_step if kind in ("adapter_disabled", "frozen_copy") else 0.0
    return PlanExtras(parts=[part], forward_tokens=forwards)

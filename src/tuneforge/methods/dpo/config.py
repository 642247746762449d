"""The run config of `method: dpo`: preference data, the loss (DPO or a variant) and evaluation.

The loss formulas, defaults and values at initialisation are in
``shared/reference/METHODS.md`` ("DPO and variants"); the functions are in
``methods/preference/losses.py``. Options that belong to one variant are
refused on another (only when set to something other than their default, so a
dumped config, which spells every key out, reloads).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...adapters.config import SELECTIVE, SOFT_PROMPTS
from ...config.schema import RunBase, Section
from ..preference.config import FeedbackData
from ..preference.names import LOSS_NAMES, REFERENCE_FREE

REFERENCES = ("auto", "adapter_disabled", "frozen_copy", "precomputed")
DEFAULT_BETA = {"simpo": 2.0}  # every other variant that has a β: 0.1
LABEL_SMOOTHED = ("cdpo", "robust")
_RESHAPED_BASE = ("pissa", "olora")  # LoRA inits that rewrite the base weights at attach time


class PreferenceLoss(Section):
    type: Literal[LOSS_NAMES] = Field(
        "dpo",
        description="dpo (Rafailov et al. 2023), cdpo, robust, ipo, hinge (SLiC), simpo and orpo "
        "(reference-free), kto (unpaired: thumbs up / down, or pairs split into both).",
    )
    beta: float | None = Field(
        None,
        gt=0,
        description="β, the strength of the pull towards the reference: 0.1 when unset (simpo: 2.0, "
        "its reward scale). orpo has none (its weight is lam).",
    )
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="cdpo / robust: ε, the assumed share of flipped labels (robust: below 0.5)."
    )
    gamma: float = Field(0.5, description="simpo: the target reward margin γ.")
    lam: float = Field(0.1, ge=0, description="orpo: the weight λ of the odds-ratio term.")
    desirable_weight: float = Field(1.0, gt=0, description="kto: λ_D, the weight of desirable examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: λ_U, the weight of undesirable examples.")
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="RPO-style (Pang et al. 2024, arXiv 2404.19733): add this times the chosen "
        "response's per-token NLL to each pair's loss. Paired losses other than orpo (which has its own).",
    )
    reference: Literal[REFERENCES] = Field(
        "auto",
        description="The frozen reference π_ref. auto: adapter_disabled with an adapter, precomputed "
        "for full fine-tuning (and for adapters that rewrite base weights). adapter_disabled: the base, the "
        "adapter switched off (no second copy). frozen_copy: a copy of the model before training. precomputed: "
        "the model before training scores every pair once, before step 1; the log-probs are kept with the rows.",
    )

    @property
    def effective_beta(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA.get(self.type, 0.1)

    def options(self) -> dict[str, float]:
        """The keyword arguments of ``losses.<type>`` (torchtune-style: the function never sees a config)."""
        if self.type == "orpo":
            return {"lam": self.lam}
        out = {"beta": self.effective_beta}
        if self.type in LABEL_SMOOTHED:
            out["epsilon"] = self.label_smoothing
        if self.type == "simpo":
            out["gamma"] = self.gamma
        if self.type == "kto":
            out.update(desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight)
        return out


class PreferenceEval(Section):
    batch_size: int = Field(8, ge=1, description="Pairs (kto: examples) per forward when scoring held-out data.")
    before: bool = Field(
        True,
        description="Score the model before training too (policy = reference, so the "
        "implicit rewards are exactly 0 then).",
    )
    samples_in_report: int = Field(
        4,
        ge=0,
        description="Held-out prompts answered greedily before and after training, shown in the report (0: none).",
    )
    max_new_tokens: int = Field(64, ge=1)


class DpoConfig(RunBase):
    """Preference optimisation against a frozen reference: DPO (Rafailov et al. 2023) and its variants."""

    method: Literal["dpo"]
    data: FeedbackData
    loss: PreferenceLoss = Field(default_factory=PreferenceLoss)
    eval: PreferenceEval | None = Field(default_factory=PreferenceEval)
    pair_forward: Literal["auto", "shared_prompt", "separate"] = Field(
        "auto",
        description="How a pair goes through the network. shared_prompt: one row per pair, the prompt "
        "once and both responses after it, kept apart by an attention mask (fewer tokens: the prompt is not "
        "computed twice). separate: chosen and rejected as two full rows with the fast causal path. auto: "
        "shared_prompt for paired losses unless the model uses flash-attention or sliding-window attention or "
        "the adapter is a soft prompt. Both give the same log-probs.",
    )

    @model_validator(mode="after")
    def _combinations(self) -> DpoConfig:
        # Here rather than on the loss section: errors at the top level print as written, key first.
        problem = _loss_problem(self.loss) or _reference_problem(self) or _layout_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _loss_problem(loss: PreferenceLoss) -> str | None:
    """The first option that does not fit ``loss.type`` (set to a value other than its default)."""
    kind = loss.type
    defaults = type(loss).model_fields
    owners = {
        "label_smoothing": LABEL_SMOOTHED,
        "gamma": ("simpo",),
        "lam": ("orpo",),
        "desirable_weight": ("kto",),
        "undesirable_weight": ("kto",),
    }
    for key, types in owners.items():
        if getattr(loss, key) != defaults[key].default and kind not in types:
            return f"loss.{key}: only used by loss.type {' / '.join(types)}, not {kind}; remove it"
    if kind == "orpo" and loss.beta is not None:
        return "loss.beta: orpo has no β; its odds-ratio term is weighted by loss.lam"
    if kind == "robust" and loss.label_smoothing >= 0.5:
        return f"loss.label_smoothing: robust needs ε below 0.5 (it divides by 1 − 2ε), got {loss.label_smoothing}"
    if loss.sft_weight and kind in ("orpo", "kto"):
        why = (
            "orpo already adds the chosen response's NLL" if kind == "orpo" else "kto examples have no chosen response"
        )
        return f"loss.sft_weight: {why}; remove sft_weight or use a paired loss (dpo, ipo, …)"
    if kind in REFERENCE_FREE and loss.reference != "auto":
        return f"loss.reference: {kind} is reference-free (no π_ref is computed); remove loss.reference"
    return None


def _reference_problem(config: DpoConfig) -> str | None:
    ref, adapter = config.loss.reference, config.adapter
    if ref == "adapter_disabled":
        if adapter is None:
            return (
                "loss.reference: adapter_disabled needs an adapter; for full fine-tuning use precomputed "
                "(what auto picks) or frozen_copy"
            )
        if adapter.type in SELECTIVE:
            return (
                f"loss.reference: adapter_disabled cannot work with adapter.type {adapter.type}, which trains "
                "the base's own weights (nothing to switch off); use precomputed or frozen_copy (or auto)"
            )
        if adapter.type == "lora" and adapter.init in _RESHAPED_BASE:
            return (
                f"loss.reference: adapter_disabled with adapter.init {adapter.init}: that init moves part of "
                "each base weight into the adapter, so switching it off leaves a residual model, not the "
                "original; use precomputed (or auto)"
            )
    if ref == "frozen_copy" and config.model.quantize:
        return "loss.reference: frozen_copy cannot copy quantized weights; use adapter_disabled (or auto)"
    return None


def _layout_problem(config: DpoConfig) -> str | None:
    if config.pair_forward != "shared_prompt":
        return None
    why = (
        "loss.type kto trains single responses, not pairs"
        if config.loss.type == "kto"
        else f"adapter.type {config.adapter.type} puts virtual tokens before the prompt"
        if config.adapter is not None and config.adapter.type in SOFT_PROMPTS
        else "flash_attention_2 takes no custom attention mask"
        if config.model.attn_implementation == "flash_attention_2"
        else None
    )
    return f"pair_forward: shared_prompt cannot be used here ({why}); use auto or separate" if why else None


def shares_prompt(config, model_config) -> bool:
    """Whether pairs go through the network as one row with the prompt once (``pair_forward``)."""
    if config.pair_forward != "auto":
        return config.pair_forward == "shared_prompt"
    soft = config.adapter is not None and config.adapter.type in SOFT_PROMPTS
    flash = (getattr(model_config, "_attn_implementation", None) or "").startswith("flash")
    # A custom mask replaces the model's own; a sliding window would be lost (a row can exceed it).
    windowed = getattr(model_config, "sliding_window", None) and getattr(model_config, "use_sliding_window", True)
    return config.loss.type != "kto" and not soft and not flash and not windowed


def reference_kind(config) -> str | None:
    """What ``loss.reference: auto`` means for this config; None for reference-free losses.

    Full fine-tuning defaults to ``precomputed`` rather than ``frozen_copy``: the two give the same
    numbers (the model before its first step, in eval mode), but a copy is one more full set of
    weights in memory for the whole run and one more forward per pair per epoch, while precomputing
    costs one no-grad pass over the pairs before step 1.
    """
    loss = config.loss
    if loss.type in REFERENCE_FREE:
        return None
    if loss.reference != "auto":
        return loss.reference
    adapter = config.adapter
    if adapter is None or adapter.type in SELECTIVE or (adapter.type == "lora" and adapter.init in _RESHAPED_BASE):
        return "precomputed"
    return "adapter_disabled"

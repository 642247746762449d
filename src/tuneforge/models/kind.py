"""Which family a model belongs to (causal LM, encoder, …), from its config.json alone."""

from __future__ import annotations


def is_causal_lm(config) -> bool:
    """Whether the run config's model is a causal LM (reads its config.json only)."""
    from transformers import AutoConfig

    from .load import resolve_model

    m = config.model
    model_config = AutoConfig.from_pretrained(
        resolve_model(m.name), trust_remote_code=m.trust_remote_code, revision=m.revision
    )
    return model_kind(model_config) == "causal-lm"


def model_kind(model_config) -> str:
    """ "causal-lm", "encoder", "encoder-decoder" or "other", from the model's config alone.

    Encoders (BERT, RoBERTa, MiniLM, …) are the families transformers has a masked-LM head
    for; a few of them also register a causal-LM class, so that test comes first.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(model_config, "model_type", None)
    if getattr(model_config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    architectures = " ".join(getattr(model_config, "architectures", None) or [])
    return "causal-lm" if "CausalLM" in architectures or "LMHeadModel" in architectures else "other"

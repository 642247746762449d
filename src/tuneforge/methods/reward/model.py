"""The reward model: classify's head code with ONE output, so plain transformers loads it.

``AutoModelForSequenceClassification`` with ``num_labels=1`` on a Llama-family
decoder reads its score at the rightmost token that is not ``pad_token_id``
(transformers' pooling, which ignores the attention mask). A response is
rendered through its end-of-turn / EOS token (``preference.data``); when pad ==
eos (SmolLM2: ``<|im_end|>``) that token counts as padding and the score is read
at the response's last content token, otherwise at the end-of-turn token. Either
way it is the same position plain transformers uses, so our scores and theirs agree.

Output, as for classify (``classify/model.py``): a full folder that
``AutoModelForSequenceClassification.from_pretrained(out)`` loads (``num_labels`` 1,
``id2label {0: "reward"}``), or a peft adapter whose ``modules_to_save`` holds the
head. ``classifier.json`` beside it records the base model and pad token (what
plain peft needs to rebuild the base, see docs/ARCHITECTURE.md, with one label)
and, for `tuneforge score`, how responses were rendered: ``chat`` (the chat
template, else plain text), ``system_prompt`` and ``max_length``.
"""

from __future__ import annotations

from pathlib import Path

import torch

LABELS = ["reward"]


def build_reward_model(model_cfg, *, pad_token_id: int | None, dtype: torch.dtype):
    """The base causal LM with a fresh one-output head (transformers' default init)."""
    from ..classify.model import load_classifier

    return load_classifier(
        model_cfg.name,
        LABELS,
        dtype=dtype,
        pad_token_id=pad_token_id,
        trust_remote_code=model_cfg.trust_remote_code,
        revision=model_cfg.revision,
        attn_implementation=model_cfg.attn_implementation,
    )


def save_reward_model(config, model, output_dir: Path, tokenizer, *, chat: bool, state_dict=None) -> None:
    from ..classify.model import save_classifier

    m = config.model
    base = model.peft_config["default"].base_model_name_or_path if hasattr(model, "peft_config") else None
    if base is None and hasattr(model, "get_base_model"):  # our bottleneck adapters
        base = getattr(model.get_base_model().config, "_name_or_path", None)
    save_classifier(
        model,
        output_dir,
        tokenizer,
        state_dict=state_dict,
        info={
            "method": "reward",
            "labels": LABELS,
            "max_length": config.data.max_length,
            "pad_token_id": tokenizer.pad_token_id,
            "chat": chat,
            "system_prompt": config.data.system_prompt,
            "base_model": base or m.name,
            "model_name": m.name,
            "revision": m.revision,
            "trust_remote_code": m.trust_remote_code,
        },
    )


def load_reward_model(path: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer, info) from a run folder or its model/ or adapter/ folder; refuses classifiers."""
    from ...models.load import ModelNotFoundError
    from ..classify.model import load_trained_classifier

    try:
        model, tokenizer, labels, info = load_trained_classifier(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except ModelNotFoundError as exc:  # its messages name the classify method; here a reward model is wanted
        raise ModelNotFoundError(str(exc).replace("method: classify", "method: reward")) from None
    if len(labels) != 1:
        raise ModelNotFoundError(
            f"{path}: a classifier with {len(labels)} labels, not a reward model (one score); "
            "give the output of a `method: reward` run, or use `tuneforge predict` for it"
        )
    if model.config.pad_token_id is None:
        raise ModelNotFoundError(
            f"{path}: the model's config has no pad_token_id, so transformers cannot find the "
            "last token of a padded row; set pad_token_id in its config.json"
        )
    return model, tokenizer, info

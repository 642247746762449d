"""Start prefix tuning's key/value prefixes from real tokens' activations (Li & Liang 2021, §7.3).

peft initialises prefixes as random N(0, 1) vectors at every layer. That is far
from anything the model has seen: on the embedded SmolLM2-135M the untrained
prefix raised the held-out loss of the clinical-notes task from 0.75 to 7.4, and
training at prefix tuning's usual rates (1e-2) never came back (0.706 → 8.19).
Li & Liang found that initialising the prefix with the activations of real words
matters most in low-data settings; a prefix that *is* the keys and values of
``n`` real tokens starts the adapted model exactly where the base model would be
after reading those tokens (held-out loss 0.75 → 0.75-0.78 here, a test checks
the equivalence), and training moves it from there.

Applies without the reparametrisation MLP (``projection: false``): with it, the
prefix is the MLP's output, which has no such direct initialisation.
"""

from __future__ import annotations

import torch

from ..models.cache_name import cache_name


def starts_from_real_tokens(cfg) -> bool:
    """A prefix_tuning / mam section's start: ``init``, else real tokens unless trained through the MLP."""
    return (cfg.init or ("random" if cfg.projection else "real_tokens")) == "real_tokens"


def real_token_ids(model: torch.nn.Module, count: int) -> torch.Tensor:
    """``count`` token ids drawn uniformly from the vocabulary (the global RNG: the run's seed)."""
    vocab = model.get_input_embeddings().num_embeddings
    return torch.randint(0, vocab, (1, count))


def init_prefix_from_tokens(peft_model, token_ids: torch.Tensor) -> None:
    """Set the active prefix to the base model's cached keys / values for ``token_ids`` (1, n).

    peft reads the prefix embedding row of virtual token ``t`` as
    ``[K_0[t], V_0[t], K_1[t], V_1[t], …]``, each ``num_key_value_heads × head_dim``
    wide (already rotated: the cache holds keys after RoPE, as a real prefix would).
    """
    config = peft_model.active_peft_config
    encoder = peft_model.prompt_encoder[peft_model.active_adapter]
    if getattr(encoder, "prefix_projection", False):
        raise ValueError("a prefix trained through the projection MLP cannot start from real tokens")
    weight = encoder.embedding.weight
    if weight.is_meta:  # the planner attaches adapters to a model without weights
        return
    count = config.num_virtual_tokens
    if token_ids.shape != (1, count):
        raise ValueError(f"need (1, {count}) token ids for {count} virtual tokens, got {tuple(token_ids.shape)}")
    base = peft_model.get_base_model()
    with torch.no_grad():
        cache = getattr(base(input_ids=token_ids.to(weight.device), use_cache=True), cache_name())
        rows = []
        for layer in range(config.num_layers):
            keys, values = _layer_kv(cache, layer)  # (1, kv_heads, n, head_dim)
            rows += [keys[0].transpose(0, 1).reshape(count, -1), values[0].transpose(0, 1).reshape(count, -1)]
        prefix = torch.cat(rows, dim=1)
        if prefix.shape != weight.shape:
            raise ValueError(
                f"prefix from real tokens has shape {tuple(prefix.shape)}, peft's is {tuple(weight.shape)}"
            )
        weight.copy_(prefix.to(weight.dtype))


def _layer_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):  # transformers >= 4.56: one object per layer
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]

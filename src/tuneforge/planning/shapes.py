"""What the planner needs to know about a model, read without weights.

``Arch`` comes from the model's config.json; ``Params`` from the model built on
the meta device with the run's adapter attached (the same dry run `validate`
uses for its exact trainable-parameter count, ``adapters/checks.py``), so the
parameter, gradient and optimizer-state bytes are counted tensor by tensor,
not estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# bitsandbytes storage per weight: 8bit LLM.int8 keeps one int8 per weight plus one fp32 scale per
# output row; 4bit NF4/FP4 packs two weights per byte plus one absmax per 64-weight block (fp32, or
# with double quantisation an 8-bit code plus one fp32 constant per 256 blocks).
_BLOCK_4BIT = 64
_DQ_GROUP = 256


@dataclass(frozen=True)
class Arch:
    """Shape of a transformer stack. ``kind``: "causal-lm", "encoder", … (checks.model_kind)."""

    kind: str
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim


def arch_of(model_config) -> Arch:
    """Arch from a transformers config (Llama-style names, with the GPT-2 / BERT spellings as fallbacks)."""
    from ..models.kind import model_kind

    c = model_config
    hidden = _first(c, "hidden_size", "n_embd", "d_model")
    heads = _first(c, "num_attention_heads", "n_head") or 1
    layers = _first(c, "num_hidden_layers", "n_layer", "num_layers")
    intermediate = _first(c, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    return Arch(
        kind=model_kind(c),
        model_type=getattr(c, "model_type", "?"),
        hidden=hidden,
        intermediate=intermediate,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=getattr(c, "vocab_size", 0) or 0,
        tied=bool(getattr(c, "tie_word_embeddings", False)),
    )


def _first(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if value:
            return int(value)
    return 0


@dataclass(frozen=True)
class Params:
    """Unique parameters of the adapted model (tied weights once).

    ``frozen_bytes`` is at the storage dtype, or bitsandbytes' packed size for quantized linear
    weights; ``trainable_bytes`` at each trainable tensor's own dtype (peft keeps adapter weights in
    fp32 whatever the base's dtype).
    """

    total: int
    trainable: int
    frozen_bytes: int
    trainable_bytes: int
    trainable_tensors: int
    norms_trainable_per_layer: int  # norm weights that get gradients (their inputs must be saved)
    adapter_rank_per_layer: int  # Σ LoRA-family ranks in one layer: each saves an (N, r) activation
    head_trainable: bool  # the output projection gets a gradient (full fine-tuning of an LM)
    linear_weights: int = 0  # elements of the linear layers' weights (the head excepted): autocast copies them
    embeddings: int = 0  # lookup tables (token, position) and an untied output head: no per-token matmul

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def count_params(
    model: torch.nn.Module,
    *,
    storage_dtype: torch.dtype,
    quantize: str | None,
    double_quant: bool = True,
    layers: int = 1,
) -> Params:
    """Params of ``model`` (real or on the meta device) for a run whose base is stored as ``storage_dtype``."""
    seen: set[int] = set()
    total = trainable = frozen_bytes = trainable_bytes = tensors = norms = 0
    head_trainable = False
    quantizable = _quantizable_weights(model) if quantize else set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        n = param.numel()
        total += n
        if param.requires_grad:
            trainable += n
            tensors += 1
            trainable_bytes += n * param.element_size()
            low = name.lower()
            norms += "norm" in low and param.dim() == 1 and not low.endswith("bias")
            head_trainable |= param.dim() == 2 and ("lm_head" in low or "embed_tokens" in low or "wte" in low)
        elif id(param) in quantizable:
            frozen_bytes += quantized_bytes(param.shape, quantize, double_quant)
        else:
            size = (
                torch.empty((), dtype=storage_dtype).element_size()
                if param.is_floating_point()
                else param.element_size()
            )
            frozen_bytes += n * size
    return Params(
        total=total,
        trainable=trainable,
        frozen_bytes=frozen_bytes,
        trainable_bytes=trainable_bytes,
        trainable_tensors=tensors,
        norms_trainable_per_layer=round(norms / max(layers, 1)),
        adapter_rank_per_layer=round(_adapter_ranks(model) / max(layers, 1)),
        head_trainable=head_trainable,
        linear_weights=_linear_weights(model),
        embeddings=_embedding_elements(model),
    )


def quantized_bytes(shape, quantize: str, double_quant: bool = True) -> int:
    """Bytes bitsandbytes keeps for one (out, in) linear weight quantized to ``quantize``."""
    n = math.prod(shape)
    if quantize == "8bit":
        return n + 4 * shape[0]
    blocks = math.ceil(n / _BLOCK_4BIT)
    constants = blocks + 4 * math.ceil(blocks / _DQ_GROUP) if double_quant else 4 * blocks
    return math.ceil(n / 2) + constants


def _quantizable_weights(model: torch.nn.Module) -> set[int]:
    """ids of the weights transformers would quantize: linear layers, the output head and its tied
    embedding excepted (as in LLM.int8 and QLoRA)."""
    out: set[int] = set()
    head = getattr(model, "get_output_embeddings", lambda: None)()
    skip = {id(head.weight)} if head is not None and getattr(head, "weight", None) is not None else set()
    for name, module in model.named_modules():
        is_body_linear = type(module) is torch.nn.Linear and not name.endswith(("lm_head", "score", "classifier"))
        if is_body_linear and id(module.weight) not in skip:
            out.add(id(module.weight))
    return out


def _embedding_elements(model: torch.nn.Module) -> int:
    """Elements of every embedding table and of an untied output head (each tensor once)."""
    tensors = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if head is not None and getattr(head, "weight", None) is not None:
        tensors[id(head.weight)] = head.weight
    return sum(t.numel() for t in tensors.values())


def _linear_weights(model: torch.nn.Module) -> int:
    head = getattr(model, "get_output_embeddings", lambda: None)()
    skip = id(head.weight) if head is not None and getattr(head, "weight", None) is not None else None
    return sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and id(m.weight) != skip and "lora_" not in name
    )


def _adapter_ranks(model: torch.nn.Module) -> int:
    """Σ over LoRA-style modules of their rank: lora_A / hada / lokr factors save an (N, r) input."""
    total = 0
    for name, module in model.named_modules():
        if name.endswith(".lora_A.default") and isinstance(module, torch.nn.Linear):
            total += module.out_features
    return total

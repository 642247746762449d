"""Write a transformers Llama-family model as a GGUF file with the ``gguf`` package.

Format: GGUF v3 (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md). What llama.cpp's
``convert_hf_to_gguf.py`` does for these families, and no more:

- shapes: ``llama`` (Llama, SmolLM2), ``mistral`` (written as the ``llama`` architecture, as llama.cpp
  does; its sliding window is not carried, so prompts beyond it would differ) and ``qwen2`` (q/k/v
  biases). Tensor names come from ``gguf.get_tensor_name_map``.
- rotary layout: HF Llama rotates the two *halves* of each head (``rotate_half``); GGML's ``llama``
  rope rotates *adjacent pairs*. So q and k rows are permuted per head (:func:`permute_qk`, the
  inverse of transformers' ``_reverse_permute_weights``). ``qwen2`` uses the NeoX (halves) rope in
  GGML too: no permutation.
- vocabulary: byte-level BPE only (``tokenizer.ggml.model = gpt2``: SmolLM2, Llama 3, Qwen2), with
  merges, token types (special added tokens are CONTROL), bos / eos / pad / unk ids, the
  end-of-turn id (``eot``) when it is not eos, and ``tokenizer.chat_template``. The pre-tokenizer
  name llama.cpp needs is read off tokenizer.json (:func:`pre_tokenizer_name`); verify-export checks
  the resulting token ids against training's.
- quantization (``gguf.quants``): f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0. Vectors (norms,
  biases) stay f32; with 4- and 5-bit types the embedding and output matrices stay q8_0, as llama.cpp
  keeps its most sensitive tensors at higher precision; a matrix whose rows do not fill whole
  32-value blocks falls back to f16. K-quants (q4_k_m …) have no quantizer in the ``gguf`` package:
  refused with the llama.cpp command that makes them from the f16 file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ExportRefused

ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}  # → (arch, permute)
QUANTS = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "bf16", "f32")
FILE_TYPES = {
    "f32": "ALL_F32",
    "f16": "MOSTLY_F16",
    "bf16": "MOSTLY_BF16",
    "q8_0": "MOSTLY_Q8_0",
    "q5_1": "MOSTLY_Q5_1",
    "q5_0": "MOSTLY_Q5_0",
    "q4_1": "MOSTLY_Q4_1",
    "q4_0": "MOSTLY_Q4_0",
}
LOW_BIT = ("q5_1", "q5_0", "q4_1", "q4_0")
SENSITIVE = ("token_embd.weight", "output.weight")  # kept at q8_0 under LOW_BIT types

# Split regexes of tokenizer.json pre-tokenizers → llama.cpp's tokenizer.ggml.pre names (llama-vocab.cpp).
_SPLIT_NAMES = (("\\p{N}{1,3}", "llama-bpe"), ("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|", "qwen2"))


@dataclass
class GGUFFacts:
    """What was written, for the export record."""

    path: Path
    architecture: str
    quant: str
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGML type name → tensor count
    notes: list[str] = field(default_factory=list)


def check_quant(quant: str) -> None:
    if quant in QUANTS:
        return
    if quant.lower().startswith(("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq")):
        raise ExportRefused(
            f"--quant {quant}: the gguf package has no quantizer for K-quants; export --quant f16 and run "
            f"llama.cpp's `llama-quantize model.f16.gguf model.{quant}.gguf {quant.upper()}`, or use q4_0 / q4_1 here"
        )
    raise ExportRefused(f"--quant {quant}: unknown; choose one of {', '.join(QUANTS)}")


def check_architecture(config) -> tuple[str, bool]:
    """(GGUF architecture, permute q/k) for a transformers config; ExportRefused for other families."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        raise ExportRefused(
            f"model: {kind} is not a shape the GGUF writer knows ({', '.join(ARCHITECTURES)}); export --format "
            "merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in (None, "default"):
        raise ExportRefused(
            f"model: rope scaling '{rope_type}' is not written by the GGUF writer; export --format merged and "
            "convert with llama.cpp's convert_hf_to_gguf.py"
        )
    return ARCHITECTURES[kind]


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF half-rotation rows → GGML pair-rotation rows, per head: (n_head·d, …) → same shape.

    Row i·d + j of a head (j < d/2: first half, else second) goes to 2j (first) or 2(j − d/2) + 1.
    """
    d = weights.shape[0] // n_head
    return weights.reshape(n_head, 2, d // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def pre_tokenizer_name(tokenizer_json: dict) -> tuple[str, str | None]:
    """llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json, and a note when it is a guess."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2", None
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm", None
    if "Split" in kinds:
        regex = (parts[kinds.index("Split")].get("pattern") or {}).get("Regex", "")
        for needle, name in _SPLIT_NAMES:
            if needle in regex:
                return name, None
    return "default", f"tokenizer.ggml.pre: no llama.cpp pre-tokenizer matches {kinds}; wrote 'default'"


def _vocabulary(tokenizer, vocab_size: int) -> tuple[dict, list[str], list[int], list[str], list[str]]:
    """(tokenizer.json, tokens, token types, merges, notes) for the ``gpt2`` GGUF tokenizer model."""
    import gguf

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data.get("model") or {}
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (data.get("decoder") or {}).get("type") not in ("ByteLevel", None)
    ):
        raise ExportRefused(
            f"tokenizer: a {model.get('type')} vocabulary{' with byte fallback' if model.get('byte_fallback') else ''}"
            " (sentencepiece style); the GGUF writer handles byte-level BPE (SmolLM2, Llama 3, Qwen2): export "
            "--format merged and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportRefused(f"tokenizer: {max(by_id) + 1} tokens but the model has {vocab_size} embedding rows")
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    added = set(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(
            gguf.TokenType.CONTROL
            if i in special
            else gguf.TokenType.USER_DEFINED
            if i in added
            else gguf.TokenType.NORMAL
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return data, tokens, [int(t) for t in types], merges, []


def _tensor_type(name: str, array: np.ndarray, quant: str):
    import gguf

    T = gguf.GGMLQuantizationType
    if array.ndim == 1 or quant == "f32":
        return T.F32
    wanted = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q5_1": T.Q5_1, "q5_0": T.Q5_0, "q4_1": T.Q4_1}.get(
        quant, T.Q4_0
    )
    if quant in LOW_BIT and name in SENSITIVE:
        wanted = T.Q8_0
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    return wanted if array.shape[-1] % block == 0 else T.F16


def write_gguf(
    model,
    tokenizer,
    path: Path,
    *,
    quant: str,
    chat_template: str,
    eot_token_id: int | None,
    name: str,
    extra: dict | None = None,
) -> GGUFFacts:
    """Write ``model`` (a plain fp32 transformers causal LM) and ``tokenizer`` to ``path``, atomically.

    ``chat_template`` goes to ``tokenizer.chat_template``; ``eot_token_id`` (the template's end-of-turn
    token) to ``tokenizer.ggml.eot_token_id`` when it differs from eos, so llama.cpp ends turns on it;
    ``extra`` is stored as JSON under ``tuneforge.export``.
    """
    import gguf

    check_quant(quant)
    config = model.config
    arch, permute = check_architecture(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    facts = GGUFFacts(path=path, architecture=arch, quant=quant)
    if getattr(config, "sliding_window", None) and config.model_type == "mistral":
        facts.notes.append(f"mistral sliding_window={config.sliding_window} is not carried (llama architecture)")

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _write_metadata(writer, config, heads, kv_heads, head_dim, quant, name)
        data, tokens, types, merges, _ = _vocabulary(tokenizer, config.vocab_size)
        pre, note = pre_tokenizer_name(data)
        if note:
            facts.notes.append(note)
        _write_tokenizer(writer, tokenizer, tokens, types, merges, pre, chat_template, eot_token_id)
        if extra:
            writer.add_string("tuneforge.export", json.dumps(extra, ensure_ascii=False))
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for key, tensor in model.state_dict().items():
            if tied and key == "lm_head.weight":
                continue  # llama.cpp reads a missing output.weight as tied to token_embd
            target = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ExportRefused(f"model: no GGUF name for tensor '{key}'; this {config.model_type} variant differs")
            array = tensor.detach().to("cpu").float().numpy()
            if permute and key.endswith(("q_proj.weight", "q_proj.bias")):
                array = permute_qk(array, heads)
            elif permute and key.endswith(("k_proj.weight", "k_proj.bias")):
                array = permute_qk(array, kv_heads)
            kind = _tensor_type(target, array, quant)
            facts.tensor_types[kind.name] = facts.tensor_types.get(kind.name, 0) + 1
            if kind == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(target, np.ascontiguousarray(array, dtype=np.float32))
            elif kind == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(target, array.astype(np.float16))
            else:
                writer.add_tensor(target, gguf.quants.quantize(array, kind), raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
    return facts


def _write_metadata(writer, config, heads: int, kv_heads: int, head_dim: int, quant: str, name: str) -> None:
    import gguf

    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    theta = theta or getattr(config, "rope_theta", None) or 10000.0
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[quant]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tokenizer(writer, tokenizer, tokens, types, merges, pre: str, chat_template: str, eot: int | None) -> None:
    from ..data.formats import bos_prefix

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    if eot is not None and eot != tokenizer.eos_token_id:
        writer.add_eot_token_id(int(eot))
    writer.add_add_bos_token(bool(bos_prefix(tokenizer)))
    writer.add_chat_template(chat_template)

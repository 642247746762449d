"""The embedding model: a transformers base (``AutoModel``: an encoder, or a decoder's trunk),
pooling and normalisation — saved as a sentence-transformers folder.

The folder is what ``sentence_transformers.SentenceTransformer(path)`` reads
(``modules.json``: Transformer → Pooling → Normalize), and also a plain
transformers folder (full fine-tuning: ``AutoModel.from_pretrained``) or a
plain peft adapter folder (``PeftModel`` / sentence-transformers' adapter
loading) with the pooling settings beside it. Pooling "last" is
sentence-transformers' ``lasttoken`` mode: the last token under the attention
mask, right padding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

POOLING_FLAGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "last": "pooling_mode_lasttoken"}
ALL_FLAGS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
SETTINGS_FILE = "tuneforge_embedding.json"


def load_encoder(
    name: str,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
):
    """``AutoModel`` of the resolved model: BertModel for an encoder, LlamaModel (no LM head) for a decoder."""
    from transformers import AutoModel

    from ...models.load import ModelNotFoundError, resolve_model

    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModel.from_pretrained(resolve_model(name), **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"model.name: could not load '{name}': {exc}") from None


def inference_loader(adapter_folder: Path):
    """``load_encoder`` for an embedding adapter (``tuneforge_embedding.json`` beside it, or peft task
    ``FEATURE_EXTRACTION``); None for any other folder."""
    from ...adapters.inference import task_of

    return load_encoder if task_of(Path(adapter_folder)) == "FEATURE_EXTRACTION" else None


def save_sentence_transformer(
    model,
    output_dir: Path,
    tokenizer,
    *,
    pooling: str,
    normalize: bool,
    max_length: int,
    state_dict=None,
    source: dict | None = None,
) -> None:
    """Weights (full folder or adapter), tokenizer, and the sentence-transformers module files."""
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(output_dir)
    dim = model.config.hidden_size
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (output_dir / "2_Normalize").mkdir(exist_ok=True)
    (output_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (output_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2)
    )
    (output_dir / "1_Pooling").mkdir(exist_ok=True)
    flags = {flag: flag == POOLING_FLAGS[pooling] for flag in ALL_FLAGS}
    (output_dir / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": dim, **flags, "include_prompt": True}, indent=2)
    )
    (output_dir / SETTINGS_FILE).write_text(
        json.dumps({"pooling": pooling, "normalize": normalize, "max_length": max_length, **(source or {})}, indent=2)
    )


def load_embedding_model(path: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer, settings) from a folder ``save_sentence_transformer`` wrote, or a run folder."""
    from ...models.load import ModelNotFoundError, load_tokenizer

    path = Path(path)
    if not (path / SETTINGS_FILE).exists():
        for inner in ("adapter", "model"):
            if (path / inner / SETTINGS_FILE).exists():
                path = path / inner
                break
    if not (path / SETTINGS_FILE).exists():
        raise ModelNotFoundError(
            f"{path}: not an embedding model written by `method: contrastive` "
            f"(no {SETTINGS_FILE}); give the run folder or its model/ or adapter/ folder"
        )
    settings = json.loads((path / SETTINGS_FILE).read_text())
    from ...adapters import adapter_base_name, is_adapter_folder, load_adapter

    if is_adapter_folder(path):
        # The base as the config named it (an embedded name resolves on any machine), else the adapter's record.
        base_name = settings.get("model_name") or adapter_base_name(path)
        base = load_encoder(
            base_name, dtype=dtype, trust_remote_code=trust_remote_code, revision=settings.get("revision")
        )
        model = load_adapter(base, path)
    else:
        model = load_encoder(str(path), dtype=dtype, trust_remote_code=trust_remote_code)
    return model.eval(), load_tokenizer(str(path)), settings


@torch.no_grad()
def embed_texts(
    model, tokenizer, texts: list[str], *, pooling: str, normalize: bool, max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """(N, d) float32 embeddings, in the order of ``texts`` (batches sorted by length inside)."""
    import torch.nn.functional as F

    from .losses import pool

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), model.config.hidden_size)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in chunk],
            truncation=True,
            max_length=max_length,
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )  # pooling expects right padding
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state
        emb = pool(hidden, enc["attention_mask"], pooling).float()
        out[chunk] = (F.normalize(emb, dim=-1) if normalize else emb).cpu()
    model.train(was_training)
    return out


def embed_file(model_path: str | Path, data: str, *, text_column: str = "text", batch_size: int = 64):
    """(texts, (N, d) embeddings) for a JSONL / CSV / JSON / .txt file, with the saved pooling settings."""
    from ...data.sources import read_records
    from ...data.types import DataError

    model, tokenizer, settings = load_embedding_model(model_path)
    problems: list[str] = []
    texts = []
    if str(data).endswith(".txt"):  # a .txt file: one text per non-empty line
        return _embed_lines(model, tokenizer, settings, Path(data), batch_size)
    for record in read_records(data, problems=problems):
        text = record.data.get(text_column)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{record.where}: {text_column}: missing or empty (use --text-column to name yours)")
        else:
            texts.append(text)
    if problems:
        raise DataError(problems)
    return texts, embed_texts(
        model,
        tokenizer,
        texts,
        pooling=settings["pooling"],
        normalize=settings["normalize"],
        max_length=settings["max_length"],
        batch_size=batch_size,
    )


def _embed_lines(model, tokenizer, settings: dict, path: Path, batch_size: int):
    texts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return texts, embed_texts(
        model,
        tokenizer,
        texts,
        pooling=settings["pooling"],
        normalize=settings["normalize"],
        max_length=settings["max_length"],
        batch_size=batch_size,
    )

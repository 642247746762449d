"""`tuneforge predict`: label a file of texts with a trained classifier, with probabilities.

Texts are tokenised by the same ``encode`` as in training (decoders: text and
text_pair joined by a newline; encoders: the tokenizer's pair encoding), so a
prediction here equals the model's held-out evaluation of the same text.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...data.types import DataError


def predict_file(
    model_path: str | Path,
    data: str,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    columns: dict[str, str] | None = None,
) -> tuple[list[dict], dict | None]:
    """(one output row per input row, metrics when the rows carry a known ``label``).

    ``max_length`` defaults to the one the model was trained with (``classifier.json``), else 512.
    """
    from .model import load_trained_classifier

    model, tokenizer, labels, info = load_trained_classifier(model_path)
    _refuse_reward_model(model_path, info)
    return predict_records(
        model,
        tokenizer,
        labels,
        data,
        batch_size=batch_size,
        max_length=max_length or info.get("max_length") or 512,
        columns=columns,
    )


def predict_with_adapters(
    adapters: dict[str, str | Path],
    data: str,
    *,
    use: str | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    columns: dict[str, str] | None = None,
) -> dict[str, tuple[list[dict], dict | None]]:
    """{adapter name: (rows, metrics)} for ``use`` or every adapter, all on one base loaded once.

    Each classify adapter carries its own label head (peft's ``modules_to_save`` keeps one
    copy per adapter name), so switching the adapter switches the head too. The
    adapters must share the base model and the label set.
    """
    from .model import load_classifier_adapters

    model, tokenizer, labels, info = load_classifier_adapters(adapters)
    _refuse_reward_model(", ".join(map(str, adapters.values())), info)
    out = {}
    from ...adapters import is_peft_model

    for name in [use] if use else list(adapters):
        if is_peft_model(model):
            model.set_adapter(name)
        out[name] = predict_records(
            model,
            tokenizer,
            labels,
            data,
            batch_size=batch_size,
            max_length=max_length or info.get("max_length") or 512,
            columns=columns,
        )
    return out


def _refuse_reward_model(path, info: dict) -> None:
    """A reward model has one output: a softmax over it says 1.0 for everything. Point to `score`."""
    from ...models.load import ModelNotFoundError

    if info.get("method") == "reward" or len(info.get("labels") or []) == 1:
        raise ModelNotFoundError(
            f"{path}: a reward model (one score, no labels); score responses with "
            "`tuneforge score --model ... --data ...`"
        )


def predict_records(
    model,
    tokenizer,
    labels: list[str],
    data: str,
    *,
    batch_size: int,
    max_length: int,
    columns: dict[str, str] | None = None,
) -> tuple[list[dict], dict | None]:
    from ...data.sources import read_records
    from ...models.kind import model_kind
    from .data import LabelledText, encode
    from .metrics import classification_metrics

    decoder = model_kind(model.config) == "causal-lm"
    problems: list[str] = []
    records = list(read_records(data, problems=problems))
    items = []
    for record in records:
        row = dict(record.data)
        for field, column in (columns or {}).items():
            if column in row:
                row[field] = row.pop(column)
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{record.where}: text: missing or empty (use --text-column to name yours)")
            continue
        if row.get("text_pair") is not None and not isinstance(row["text_pair"], str):
            problems.append(f"{record.where}: text_pair: must be a string")
            continue
        items.append((row, LabelledText(text, row.get("text_pair"), "", record.where)))
    if problems:
        raise DataError(problems)
    out: list[dict] = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            encoded = [encode(tokenizer, item, 0, max_length, decoder)[0] for _, item in chunk]
            width = max(len(e.input_ids) for e in encoded)
            ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            types = torch.zeros_like(ids)
            for b, e in enumerate(encoded):
                ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[b, : len(e.input_ids)] = 1
                if e.token_type_ids is not None:
                    types[b, : len(e.input_ids)] = torch.tensor(e.token_type_ids)
            extra = {"token_type_ids": types.to(device)} if encoded[0].token_type_ids is not None else {}
            probs = torch.softmax(
                model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.float(), dim=-1
            ).cpu()
            for (row, item), p in zip(chunk, probs):
                result = {
                    "text": item.text,
                    "label": labels[int(p.argmax())],
                    "probabilities": {name: round(float(v), 6) for name, v in zip(labels, p)},
                }
                if item.text_pair is not None:
                    result["text_pair"] = item.text_pair
                if row.get("label") is not None:
                    result["true_label"] = str(row["label"]).strip()
                out.append(result)
    metrics = None

    def gold_index(value: str) -> int | None:
        if value in labels:
            return labels.index(value)
        return int(value) if value.isdigit() and int(value) < len(labels) else None  # integer labels

    known = [r for r in out if "true_label" in r and gold_index(r["true_label"]) is not None]
    if known:
        gold = [gold_index(r["true_label"]) for r in known]
        metrics = classification_metrics(gold, [labels.index(r["label"]) for r in known], labels)
        metrics = {"rows": len(known), **{k: v for k, v in metrics.items() if "/" not in k}}
    return out, metrics

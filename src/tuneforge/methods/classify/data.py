"""`format: classification` data: ``{"text", "label"}`` rows (optional ``text_pair``).

Labels are strings (the label set is read from the training data, sorted, and
saved with the model) or integers indexing ``data.labels``. Every problem is
reported as ``file:line: field: what``; the label set is checked as a whole:
a held-out label never seen in training, or a named class without a training
example, stops the run before any weight is read.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ...data.formats import split_indices
from ...data.sources import read_records, with_columns
from ...data.types import DataError, Record

FIELDS = ("text", "text_pair", "label")


@dataclass
class LabelledText:
    text: str
    text_pair: str | None
    label: str  # the label name
    where: str


@dataclass
class ClassificationExample:
    input_ids: list[int]
    token_type_ids: list[int] | None  # encoders with sentence pairs (BERT); None for decoders
    label: int
    text: str  # for the report, predictions and the zero-shot baseline
    where: str = ""


@dataclass
class ClassificationSplits:
    labels: list[str]
    train: list[ClassificationExample]
    eval: list[ClassificationExample]
    eval_texts: list[LabelledText]
    counts: dict[str, int]  # training examples per label
    truncated: int = 0


def parse(
    record: Record, columns: dict[str, str], label_names: list[str] | None, problems: list[str]
) -> LabelledText | None:
    data = with_columns(record, columns)
    where = record.where
    before = len(problems)
    text = data.get("text")
    if text is None:
        problems.append(
            f"{where}: text: missing (columns present: {', '.join(map(str, data)) or 'none'}; "
            "map yours with data.columns, e.g. {text: body})"
        )
    elif not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: text: must be a non-empty string")
    pair = data.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        problems.append(f"{where}: text_pair: must be a string")
    label = data.get("label")
    name = None
    if (
        isinstance(label, str)
        and label.strip().isdigit()
        and label_names is not None
        and label.strip() not in label_names
    ):
        label = int(label.strip())  # CSV cells are text: "0" with data.labels set is an index
    if label is None or (isinstance(label, str) and not label.strip()):
        problems.append(f"{where}: label: missing")
    elif isinstance(label, bool) or not isinstance(label, (str, int, float)):
        problems.append(f"{where}: label: must be a string or an integer (got {type(label).__name__})")
    elif isinstance(label, float) and not math.isfinite(label):
        problems.append(f"{where}: label: missing (got {label})")
    elif isinstance(label, (int, float)):
        if float(label) != int(label):
            problems.append(f"{where}: label: {label} is not an integer")
        elif label_names is None:
            problems.append(
                f"{where}: label: integer labels need their names in data.labels "
                "(0 → the first name), e.g. labels: [negative, positive]"
            )
        elif not 0 <= int(label) < len(label_names):
            problems.append(
                f"{where}: label: {int(label)} is out of range for the {len(label_names)} names in data.labels"
            )
        else:
            name = label_names[int(label)]
    else:
        name = label.strip()
        if label_names is not None and name not in label_names:
            problems.append(f"{where}: label: '{name}' is not one of data.labels ({', '.join(label_names)})")
    if len(problems) > before:
        return None
    return LabelledText(text=text, text_pair=pair, label=name, where=where)


def read_labelled(source, columns, label_names, problems: list[str]) -> list[LabelledText]:
    out = []
    for record in read_records(source, problems=problems):
        item = parse(record, columns, label_names, problems)
        if item is not None:
            out.append(item)
    return out


def label_set(
    train: list[LabelledText], held: list[LabelledText], names: list[str] | None, problems: list[str]
) -> list[str]:
    """The label names in head order; problems for unseen held-out labels and empty classes."""
    seen = Counter(item.label for item in train)
    labels = list(names) if names is not None else sorted(seen)
    for name in labels:
        if seen[name] == 0 and train:
            problems.append(f"data.labels: class '{name}' has no training example; add examples or drop the name")
    for item in held:
        if item.label not in seen and train:
            problems.append(
                f"{item.where}: label: '{item.label}' never appears in the training data, so the "
                "model cannot learn it; add training examples or drop this row"
            )
    if train and len(labels) < 2:
        problems.append(
            f"train: only one label ('{labels[0] if labels else ''}') in the training data; "
            "classification needs at least two"
        )
    return labels


def encode(
    tokenizer, item: LabelledText, label_index: int, max_length: int, decoder: bool
) -> tuple[ClassificationExample, bool]:
    """Tokenise one text (pair); returns the example and whether it was cut to ``max_length``.

    Encoders get the tokenizer's own pair encoding ([CLS] a [SEP] b [SEP], token types),
    cut from the longer side by the tokenizer. Decoders read ``text`` then ``"\n" + text_pair``
    as one sequence scored at its last token; when too long, ``text`` is cut so the pair
    (usually the shorter, decisive part) survives. Special-token strings inside user text
    stay plain text (``split_special_tokens``): a literal "<|im_end|>" must not become the
    pad id, which would move the last-token pooling.
    """
    if decoder:
        ids = tokenizer(item.text, split_special_tokens=True)["input_ids"]
        pair = (
            tokenizer("\n" + item.text_pair, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            if item.text_pair is not None
            else []
        )
        cut = len(ids) + len(pair) > max_length
        if cut:
            # The pair keeps what the text leaves, and at least half when both are long.
            pair = pair[: min(len(pair), max(max_length - len(ids), max_length // 2))]
            ids = ids[: max_length - len(pair)]
        return ClassificationExample(list(ids) + list(pair), None, label_index, item.text, item.where), cut
    full = tokenizer(item.text, item.text_pair, split_special_tokens=True)
    cut = len(full["input_ids"]) > max_length
    if cut:
        full = tokenizer(item.text, item.text_pair, truncation=True, max_length=max_length, split_special_tokens=True)
    types = list(full["token_type_ids"]) if "token_type_ids" in full else None
    return ClassificationExample(list(full["input_ids"]), types, label_index, item.text, item.where), cut


def load_classification(cfg, tokenizer, *, decoder: bool) -> ClassificationSplits:
    """Read, validate, split and tokenise; raise DataError listing every problem."""
    problems: list[str] = []
    for field in cfg.columns:
        if field not in FIELDS:
            problems.append(
                f"data.columns.{field}: not a field of format 'classification' (its fields: {', '.join(FIELDS)})"
            )
    train = read_labelled(cfg.train, cfg.columns, cfg.labels, problems)
    if cfg.eval is not None:
        held = read_labelled(cfg.eval, cfg.columns, cfg.labels, problems)
    else:
        train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
        train, held = [train[i] for i in train_idx], [train[i] for i in eval_idx]
    if cfg.max_examples:
        train = train[: cfg.max_examples]
    if not train and not problems:
        problems.append("train: no rows")
    labels = label_set(train, held, cfg.labels, problems)
    if problems:
        raise DataError(problems, hint="Fix these rows (or run `tuneforge validate` to see a full report).")
    index = {name: i for i, name in enumerate(labels)}
    truncated = 0
    encoded = {}
    for split, items in (("train", train), ("eval", held)):
        out = []
        for item in items:
            example, cut = encode(tokenizer, item, index[item.label], cfg.max_length, decoder)
            truncated += cut and split == "train"
            out.append(example)
        encoded[split] = out
    counts = Counter(item.label for item in train)
    return ClassificationSplits(
        labels=labels,
        train=encoded["train"],
        eval=encoded["eval"],
        eval_texts=held,
        counts={name: counts[name] for name in labels},
        truncated=truncated,
    )

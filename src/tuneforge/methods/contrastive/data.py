"""Contrastive data: pairs (with optional hard negatives), scored pairs, raw text (SimCSE).

Rows are checked one by one (``file:line: field: problem``). Texts are tokenised
exactly as sentence-transformers does (``tokenizer(text, truncation=True,
max_length=...)``), so the saved model embeds a text the same way in both.

Batches without duplicates: in-batch negatives assume every other text in the
batch is *not* a match, so the same text twice in one batch (a popular answer
with many paraphrased questions) is a false negative. :func:`arrange_without_duplicates`
reorders each epoch's shuffled order so that no global batch holds a text twice,
deferring a colliding row to the next batch that can take it.

Unsupervised SimCSE (Gao et al. 2021): a raw text is its own positive; the two
copies differ only by dropout, which the model applies independently to each
position of the batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from ...data.formats import split_indices
from ...data.sources import read_records, with_columns
from ...data.types import DataError, Record

FIELDS = {"pairs": ("anchor", "positive", "negative"), "scored_pairs": ("text_a", "text_b", "score"), "text": ("text",)}


@dataclass
class ContrastiveRow:
    texts: tuple[str, ...]  # (anchor, positive, *negatives); (text_a, text_b); SimCSE: (text, text)
    ids: tuple[list[int], ...]
    types: tuple[list[int] | None, ...]
    score: float | None = None
    where: str = ""

    @property
    def input_ids(self) -> list[int]:  # all tokens of the row, for counts and length-sorted batching
        return [i for ids in self.ids for i in ids]


@dataclass
class RetrievalSet:
    queries: list[str]
    documents: list[str]
    relevant: list[int]  # for each query, the index of its document


def _text(data: dict, field: str, where: str, problems: list[str], required: bool = True) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            problems.append(
                f"{where}: {field}: missing (columns present: {', '.join(map(str, data)) or 'none'}; "
                f"map yours with data.columns)"
            )
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {field}: must be a non-empty string")
        return None
    return value


def parse(record: Record, fmt: str, columns: dict[str, str], problems: list[str]) -> tuple | None:
    """(texts, score) of one row, or None with the problems appended."""
    data, where = with_columns(record, columns), record.where
    before = len(problems)
    if fmt == "text":
        text = _text(data, "text", where, problems)
        return ((text, text), None) if len(problems) == before else None  # read_rows splits it into lines
    if fmt == "scored_pairs":
        a, b = _text(data, "text_a", where, problems), _text(data, "text_b", where, problems)
        score = data.get("score")
        if isinstance(score, str):
            with contextlib.suppress(ValueError):
                score = float(score)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            problems.append(f"{where}: score: must be a number (got {score!r})")
        return ((a, b), float(score)) if len(problems) == before else None
    anchor, positive = (_text(data, "anchor", where, problems), _text(data, "positive", where, problems))
    negatives = data.get("negative", data.get("negatives"))
    if negatives is None:
        negatives = []
    elif isinstance(negatives, str):
        negatives = [negatives]
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
        problems.append(f"{where}: negative: must be a string or a list of non-empty strings")
    return ((anchor, positive, *negatives), None) if len(problems) == before else None


def read_rows(source, fmt: str, columns: dict[str, str], problems: list[str]) -> list[tuple]:
    """Parsed rows. Raw text (SimCSE) is cut into its non-empty lines: a ``.txt`` file is one
    record, and sentences or short paragraphs are the unit SimCSE learns from."""
    out = []
    for record in read_records(source, problems=problems):
        parsed = parse(record, fmt, columns, problems)
        if parsed is None:
            continue
        if fmt == "text":
            out.extend(((line, line), None, record.where) for line in _lines(parsed[0][0]))
        else:
            out.append((*parsed, record.where))
    return out


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def tokenize(tokenizer, text: str, max_length: int) -> tuple[list[int], list[int] | None, bool]:
    full = tokenizer(text, truncation=True, max_length=max_length)
    cut = len(tokenizer(text)["input_ids"]) > max_length if len(full["input_ids"]) == max_length else False
    return (list(full["input_ids"]), (list(full["token_type_ids"]) if "token_type_ids" in full else None), cut)


def to_rows(items: list[tuple], tokenizer, max_length: int) -> tuple[list[ContrastiveRow], int]:
    rows, truncated, cache = [], 0, {}
    for texts, score, where in items:
        encoded = []
        for text in texts:
            if text not in cache:
                cache[text] = tokenize(tokenizer, text, max_length)
            encoded.append(cache[text])
        truncated += any(e[2] for e in encoded)
        rows.append(
            ContrastiveRow(tuple(texts), tuple(e[0] for e in encoded), tuple(e[1] for e in encoded), score, where)
        )
    return rows, truncated


def retrieval_set(eval_items: list[tuple], corpus_texts: list[str]) -> RetrievalSet:
    """Queries = held-out anchors; documents = their positives, then the extra corpus (deduplicated)."""
    documents: dict[str, int] = {}
    queries, relevant = [], []
    for texts, _, _ in eval_items:
        anchor, positive = texts[0], texts[1]
        relevant.append(documents.setdefault(positive, len(documents)))
        queries.append(anchor)
    for text in corpus_texts:
        documents.setdefault(text, len(documents))
    return RetrievalSet(queries, list(documents), relevant)


def load_contrastive(cfg, tokenizer) -> dict:
    """Train / eval rows, the retrieval set (pairs) or scored pairs for evaluation, and counts."""
    problems: list[str] = []
    fmt = cfg.format
    for field in cfg.columns:
        if field not in FIELDS[fmt] and not (fmt == "text" and field in FIELDS["pairs"]):
            problems.append(
                f"data.columns.{field}: not a field of format '{fmt}' (its fields: {', '.join(FIELDS[fmt])})"
            )
    train = read_rows(cfg.train, fmt, cfg.columns, problems)
    # SimCSE learns from raw text, but is evaluated on retrieval: its held-out rows are pairs.
    eval_format = "pairs" if fmt == "text" else fmt
    if cfg.eval is not None:
        held = read_rows(cfg.eval, eval_format, cfg.columns, problems)
    else:
        if fmt == "text" and cfg.eval_fraction > 0:
            problems.append(
                "data.eval_fraction: raw text (SimCSE) has no pairs to evaluate retrieval on; "
                "give data.eval as {anchor, positive} pairs"
            )
        train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
        train, held = [train[i] for i in train_idx], [train[i] for i in eval_idx]
    if cfg.max_examples:
        train = train[: cfg.max_examples]
    corpus = []
    if cfg.corpus is not None:
        corpus = [texts[0] for texts, _, _ in read_rows(cfg.corpus, "text", {}, problems)]
    if not train and not problems:
        problems.append("train: no rows")
    if problems:
        raise DataError(problems, hint="Fix these rows (or run `tuneforge validate` to see a full report).")
    same = sum(1 for texts, _, _ in train if fmt == "pairs" and texts[0] == texts[1])
    train_rows, truncated = to_rows(train, tokenizer, cfg.max_length)
    eval_rows, _ = to_rows(held, tokenizer, cfg.max_length)
    return {
        "train": train_rows,
        "eval": eval_rows,
        "truncated": truncated,
        "anchor_equals_positive": same,
        "retrieval": retrieval_set(held, corpus) if eval_format == "pairs" and held else None,
        "scored": [(texts[0], texts[1], score) for texts, score, _ in held]
        if eval_format == "scored_pairs" and held
        else None,
    }


def duplicate_texts(rows: list[ContrastiveRow], order: list[int], group: int, first: int = 0) -> int:
    """How many texts repeat inside the global batches of ``order`` (each extra copy counts once)."""
    count, start = 0, 0
    size = first or group
    while start < len(order):
        texts = [t for i in order[start : start + size] for t in set(rows[i].texts)]
        count += len(texts) - len(set(texts))
        start += size
        size = group
    return count


def arrange_without_duplicates(
    rows: list[ContrastiveRow], order: list[int], group: int, first: int = 0
) -> tuple[list[int], int]:
    """Reorder ``order`` so that no global batch (``group`` consecutive rows) holds a text twice.

    ``first``: the size of the first batch when the epoch starts inside one (the previous
    epoch's last batch continues into this one); 0 means it starts a fresh batch. Greedy and
    deterministic: rows are taken in the shuffled order; a row whose texts collide with its
    batch waits and goes into the first later batch that can take it. Batches keep their full
    size, so when only colliding rows are left they fill the batch anyway (then the duplicate
    cannot be avoided). Returns the new order and how many rows had to wait.
    """

    def texts(i: int) -> set[str]:
        return set(rows[i].texts)

    out: list[int] = []
    waiting: list[int] = []
    queue = list(reversed(order))  # pop() from the end = take in order
    deferred = 0
    size = first or group
    while queue or waiting:
        batch: list[int] = []
        seen: set[str] = set()
        kept = []
        for k, i in enumerate(waiting):  # the rows that waited come first
            if len(batch) >= size:
                kept.extend(waiting[k:])
                break
            if texts(i) & seen:
                kept.append(i)
            else:
                batch.append(i)
                seen |= texts(i)
        waiting = kept
        while len(batch) < size and queue:
            i = queue.pop()
            if texts(i) & seen:
                waiting.append(i)
                deferred += 1
            else:
                batch.append(i)
                seen |= texts(i)
        if len(batch) < size and waiting and not queue:  # nothing else left: unavoidable
            take = size - len(batch)
            batch.extend(waiting[:take])
            waiting = waiting[take:]
        out.extend(batch)
        size = group
    return out, deferred

"""The data preview: the first rows exactly as training will see them.

The rows come from the method's own ``load_data`` (the code `train` runs, caches included), so a
packed row is shown packed, a cut example is shown cut, and the tokens that carry the loss are the
ones whose ``labels`` are not IGNORE_INDEX (``labels[i]`` is the target at position ``i``). A packed
row's examples are told apart by ``position_ids`` restarting at 0, as attention tells them apart.
Rows of other methods (a label, a pair of texts) show each token sequence they hold and their
scalar fields.
"""

from __future__ import annotations

import dataclasses

IGNORE_INDEX = -100  # data.types.IGNORE_INDEX; repeated to keep this module import-light


def _fields(row) -> dict:
    return dataclasses.asdict(row) if dataclasses.is_dataclass(row) and not isinstance(row, type) else dict(vars(row))


def _token_lists(row) -> dict[str, list[int]]:
    values = _fields(row)
    return {
        k: v
        for k, v in values.items()
        if k.endswith("ids") and k != "position_ids" and isinstance(v, list) and all(isinstance(t, int) for t in v)
    }


def _scalars(row) -> dict[str, object]:
    values = _fields(row)
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}


def render_row(row, tokenizer) -> dict:
    """``{"sequences": [{"name", "tokens": [{"text", "loss", "example"}]}], "fields": {...}}``."""
    labels = getattr(row, "labels", None)
    positions = getattr(row, "position_ids", None)
    sequences = []
    for name, ids in _token_lists(row).items():
        example = 0
        tokens = []
        for i, tid in enumerate(ids):
            if positions is not None and name == "input_ids" and i > 0 and positions[i] == 0:
                example += 1
            loss = isinstance(labels, list) and len(labels) == len(ids) and labels[i] != IGNORE_INDEX
            tokens.append({"text": tokenizer.decode([tid]), "loss": bool(loss), "example": example})
        sequences.append({"name": name, "tokens": tokens, "length": len(ids)})
    return {"sequences": sequences, "fields": _scalars(row)}


def preview(config, n: int = 4) -> dict:
    """The first ``n`` training rows as training sees them, with the data's facts and warnings."""
    from ..checks import check_config
    from ..models.load import load_tokenizer
    from ..registry import get_method

    method = get_method(config.method)
    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    report = check_config(config, tokenizer=tokenizer)
    if report.errors:
        return {"errors": report.errors, "rows": []}
    data = method.load_data(config, tokenizer)
    rows = [render_row(r, tokenizer) for r in data.train[:n]]
    max_length = getattr(getattr(config, "data", None), "max_length", None)
    for row in rows:
        main: dict = row["sequences"][0] if row["sequences"] else {"length": 0, "tokens": []}
        row["examples"] = 1 + max((t["example"] for t in main["tokens"]), default=0)
        row["loss_tokens"] = sum(t["loss"] for t in main["tokens"])
        row["full"] = bool(max_length) and main["length"] >= max_length
    return {
        "errors": [],
        "rows": rows,
        "total_rows": len(data.train),
        "max_length": max_length,
        "facts": {k: str(v) for k, v in {**report.facts, **data.facts}.items()},
        "warnings": report.warnings,
    }

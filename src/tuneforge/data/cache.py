"""On-disk cache of tokenised splits, so a rerun skips reading and rendering.

The key hashes everything the result depends on: the source files' bytes (or
hub name + split), the tokenizer (its full serialized backend when it is a
fast tokenizer, else the vocabulary, plus chat template and special tokens),
every data setting, and the version of the rendering code (templates, each
format module, the pipeline). Any change is a miss; nothing is ever stale.

One ``.npz`` file per key under ``cache_root()/"tokenized"``: token ids and
labels as flat int32/int64 arrays with offsets, everything else as a JSON
string. Written to a temporary file and moved into place with ``os.replace``,
so a crash or a concurrent run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tuneforge.data.types import DataReport, Example, GenerationSample, Splits

CACHE_VERSION = 1


def default_dir() -> Path:
    from tuneforge.fsutil import cache_root

    return cache_root() / "tokenized"


def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())  # vocab, merges, normalizer, added tokens
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    template = getattr(tokenizer, "chat_template", None)
    digest.update(json.dumps(template, sort_keys=True, default=str).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cache_key(parts: dict) -> str:
    """Stable hash of a JSON-able dict of everything the result depends on."""
    text = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _flatten(examples: list[Example]) -> dict[str, np.ndarray]:
    lengths = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    ids = [i for e in examples for i in e.input_ids]
    labels = [i for e in examples for i in e.labels]
    return {"lengths": lengths, "ids": np.array(ids, dtype=np.int64), "labels": np.array(labels, dtype=np.int64)}


def _unflatten(arrays, prefix: str, wheres: list[str]) -> list[Example]:
    lengths = arrays[f"{prefix}_lengths"].tolist()
    ids = arrays[f"{prefix}_ids"].tolist()
    labels = arrays[f"{prefix}_labels"].tolist()
    out, start = [], 0
    for n, where in zip(lengths, wheres):
        out.append(Example(ids[start : start + n], labels[start : start + n], where))
        start += n
    return out


def save(splits: Splits, key: str, directory: Path | None = None) -> Path:
    directory = Path(directory) if directory is not None else default_dir()
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for prefix, examples in (("train", splits.train), ("eval", splits.eval)):
        for name, array in _flatten(examples).items():
            arrays[f"{prefix}_{name}"] = array
    meta = {
        "train_where": [e.where for e in splits.train],
        "eval_where": [e.where for e in splits.eval],
        "samples": [asdict(s) for s in splits.eval_samples],
        "report": asdict(splits.report),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    target = directory / f"{key}.npz"
    fd, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(key: str, directory: Path | None = None) -> Splits | None:
    """The cached splits for ``key``, or None on a miss (or an unreadable entry)."""
    directory = Path(directory) if directory is not None else default_dir()
    path = directory / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            train = _unflatten(arrays, "train", meta["train_where"])
            held = _unflatten(arrays, "eval", meta["eval_where"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a damaged entry is a miss; the fresh result overwrites it
    samples = [GenerationSample(**s) for s in meta["samples"]]
    return Splits(train, held, samples, DataReport(**meta["report"]))

"""On-disk cache of tokenised splits, so a rerun skips reading and rendering.

The key hashes everything the result depends on: the source files' bytes (or
hub name + split), the tokenizer (its full serialized backend when it is a
fast tokenizer, else the vocabulary, plus chat template and special tokens),
every data setting, and the version of the rendering code (templates, each
format module, the pipeline). Any change is a miss; nothing is ever stale.

One ``.npz`` file per key under ``cache_root()/"tokenized"``: token ids and
labels as flat int64 arrays with lengths, everything else as a JSON string,
and a SHA-256 of all of it. Written to a temporary file and moved into place
with ``os.replace``, so a crash or a concurrent run never leaves a half-written
entry under its name.

An entry is never trusted: it is read back only when its checksum matches and
its arrays agree with each other (lengths add up, integer ids). A damaged one
(a disk error, a truncated copy, an edit) is reported in one line, deleted and
rebuilt from the source data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tuneforge.data.types import DataReport, Example, GenerationSample, Splits

CACHE_VERSION = 2  # 2: entries carry a checksum
ARRAYS = ("lengths", "ids", "labels")

log = logging.getLogger("tuneforge.data")


class DamagedEntry(ValueError):
    """A cache entry that cannot be trusted; the message says why."""


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
    lengths, ids, labels = (arrays[f"{prefix}_{name}"] for name in ARRAYS)
    for name, array in zip(ARRAYS, (lengths, ids, labels)):
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise DamagedEntry(f"{prefix}_{name} is not a flat integer array ({array.dtype}, {array.ndim}-d)")
    if len(lengths) != len(wheres) or (lengths < 0).any():
        raise DamagedEntry(f"{prefix}: {len(lengths)} lengths for {len(wheres)} examples")
    if int(lengths.sum()) != len(ids) or len(ids) != len(labels):
        raise DamagedEntry(f"{prefix}: lengths add up to {int(lengths.sum())}, ids {len(ids)}, labels {len(labels)}")
    out, start = [], 0
    ids_list, labels_list = ids.tolist(), labels.tolist()
    for n, where in zip(lengths.tolist(), wheres):
        out.append(Example(ids_list[start : start + n], labels_list[start : start + n], where))
        start += n
    return out


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


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
    arrays["sha256"] = np.array(_digest(arrays))
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
    """The cached splits for ``key``, or None on a miss.

    A damaged entry is a miss too: it is reported (one warning naming the file and what is wrong),
    deleted, and the caller rebuilds it.
    """
    directory = Path(directory) if directory is not None else default_dir()
    path = directory / f"{key}.npz"
    if not path.exists():
        return None
    try:
        return _read(path)
    except Exception as exc:  # whatever a damaged file raises (zip, numpy, JSON, a wrong shape): never trusted
        reason = str(exc) if isinstance(exc, DamagedEntry) else f"{type(exc).__name__}: {exc}"
        log.warning("tokenisation cache entry %s is damaged (%s); rebuilding it from the data", path, reason)
        path.unlink(missing_ok=True)
        return None


def _read(path: Path) -> Splits:
    if not zipfile.is_zipfile(path):  # else numpy would try it as a pickle and advise allow_pickle
        raise DamagedEntry("not a complete .npz file")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    stored = arrays.pop("sha256", None)
    if stored is None or str(stored) != _digest(arrays):
        raise DamagedEntry("checksum mismatch" if stored is not None else "no checksum")
    meta = json.loads(str(arrays["meta"]))
    train = _unflatten(arrays, "train", meta["train_where"])
    held = _unflatten(arrays, "eval", meta["eval_where"])
    samples = [GenerationSample(**s) for s in meta["samples"]]
    return Splits(train, held, samples, DataReport(**meta["report"]))

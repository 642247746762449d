"""Read raw rows from local files, folders, globs or a Hugging Face hub dataset.

Every row comes back as a :class:`Record` that remembers where it came from
(``path:line``) so that a bad row can be named precisely in an error message.

Supported local files:

- ``.jsonl``: one JSON object per line; blank lines are skipped; ``where`` is
  the 1-based line number.
- ``.json``: an array of objects (``where`` = index + 1) or one object
  (``where`` = 1; a Natural Instructions task file is one object).
- ``.csv``: a header row, then one record per data row; ``where`` is the
  physical line the row starts on (the header is line 1). Values are strings.
- ``.parquet``: one record per row; ``where`` is the 1-based row number.
- ``.txt``: the whole file is one record ``{"text": ...}`` (raw documents for
  continued pretraining); ``where`` is line 1.

Text files must be UTF-8 (a leading BOM is dropped). A file that is not names
the first bad byte and its offset in the file, so it can be found with a hex
viewer, rather than ending in a UnicodeDecodeError traceback. A JSON row whose
strings hold an unpaired surrogate escape (``"\\ud800"``: valid JSON, not text;
tokenizers refuse it) is a bad row, named by its line.

A folder means every supported file directly inside it (not recursive, sorted
by name). A pattern with ``*`` or ``?`` is a glob (``**`` recurses). Anything
else that is not a local path is tried as a hub dataset name, optionally with
a split in brackets: ``"tatsu-lab/alpaca[train]"``.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from tuneforge.data.types import DataError, Record

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
_HUB_SPLIT = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<split>[^\[\]]+)\]$")


def _as_list(source: str | list[str]) -> list[str]:
    return [source] if isinstance(source, str) else list(source)


def _looks_local(source: str) -> bool:
    """A string the user clearly meant as a local path (so a miss is 'file not found',
    not a hub look-up that would fail with a confusing network error)."""
    if source.lower().endswith(SUPPORTED_SUFFIXES) or source.startswith(("/", ".", "~")):
        return True
    if any(ch in source for ch in "*?"):
        return True
    first = Path(source).parts[0] if Path(source).parts else ""
    return os.sep in source and Path(first).is_dir()


def resolve(source: str) -> list[Path] | tuple[str, str]:
    """Local files a source names (sorted), or ``(hub_name, split)`` for a hub dataset.

    Raises DataError with what to do when a local-looking source does not exist.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise DataError(
                [f"{source}: folder has no data files"],
                hint=f"Put {', '.join(SUPPORTED_SUFFIXES)} files directly inside it, or name the files.",
            )
        return files
    if any(ch in source for ch in "*?"):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]
        if not files:
            raise DataError(
                [f"{source}: no data files match this pattern (working directory {os.getcwd()})"],
                hint="Check the pattern, or name the files or their folder directly.",
            )
        return files
    if _looks_local(source):
        raise DataError(
            [f"{source}: file not found (working directory {os.getcwd()})"],
            hint="Check the path (relative paths are relative to where you run tuneforge), "
            "or give a folder or a glob such as data/*.jsonl.",
        )
    match = _HUB_SPLIT.match(source)
    if match:
        return match["name"], match["split"]
    return source, ""


def read_records(
    source: str | list[str], *, split: str | None = None, problems: list[str] | None = None
) -> Iterator[Record]:
    """Yield every row of one or more sources as a Record.

    ``split`` applies to hub datasets only (default ``"train"``; a ``name[split]``
    suffix wins). Malformed rows (bad JSON line, a row that is not an object) are
    appended to ``problems`` and skipped when a list is given; otherwise the first
    one raises DataError.
    """
    for one in _as_list(source):
        resolved = resolve(one)
        if isinstance(resolved, tuple):
            name, hub_split = resolved
            yield from _read_hub(name, hub_split or split or "train")
            continue
        for path in resolved:
            yield from _read_file(path, problems)


def _problem(problems: list[str] | None, message: str) -> None:
    if problems is None:
        raise DataError([message])
    problems.append(message)


def _read_file(path: Path, problems: list[str] | None) -> Iterator[Record]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            yield from _read_jsonl(path, problems)
        elif suffix == ".json":
            yield from _read_json(path, problems)
        elif suffix == ".csv":
            yield from _read_csv(path)
        elif suffix == ".parquet":
            yield from _read_parquet(path)
        elif suffix == ".txt":
            yield Record({"text": path.read_text(encoding="utf-8-sig")}, f"{path}:1")
        else:
            _problem(problems, f"{path}: unsupported file type '{suffix}' (use one of {', '.join(SUPPORTED_SUFFIXES)})")
    except UnicodeDecodeError as err:
        # The rest of the file cannot be read (rows decoded with the bad byte's buffer are lost too).
        message = f"{path}: not UTF-8 text ({_first_bad_byte(path, err)})"
        if problems is None:
            raise DataError([message], hint=_NOT_UTF8_HINT) from None
        problems.append(message)


_NOT_UTF8_HINT = (
    "Data files are read as UTF-8. Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), "
    "or check that it is the file you meant (a binary file renamed to a text extension reads like this)."
)


def _first_bad_byte(path: Path, err: UnicodeDecodeError) -> str:
    """``byte 0x.. at offset N`` for the first byte of ``path`` that is not UTF-8.

    The decode error's own position is relative to whatever buffer the text reader
    was decoding (and to the end of a BOM), so the file is scanned again as bytes to
    give an absolute offset. Plain ``utf-8`` here: a BOM is valid UTF-8 and counts.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes handed to the decoder so far
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            pending = len(decoder.getstate()[0])  # an incomplete sequence carried over
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as found:
                offset = consumed - pending + found.start
                return f"byte 0x{found.object[found.start]:02x} at offset {offset}"
            if not chunk:
                break
            consumed += len(chunk)
    # Not reproducible from the bytes (the file changed under us): report what the reader saw.
    return f"byte 0x{err.object[err.start]:02x}"


def _read_jsonl(path: Path, problems: list[str] | None) -> Iterator[Record]:
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                _problem(problems, f"{path}:{number}: not valid JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(row, dict):
                _problem(problems, f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                continue
            if _SURROGATE_ESCAPE.search(line) and (where := _lone_surrogate(row)):
                _problem(problems, f"{path}:{number}: {where}")
                continue
            yield Record(row, f"{path}:{number}")


def _read_json(path: Path, problems: list[str] | None) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        _problem(problems, f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})")
        return
    if isinstance(data, dict):
        if where := _lone_surrogate(data):
            _problem(problems, f"{path}:1: {where}")
            return
        yield Record(data, f"{path}:1")
        return
    if not isinstance(data, list):
        _problem(problems, f"{path}: expected a JSON array of objects or one object, got {type(data).__name__}")
        return
    for index, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            _problem(problems, f"{path}:{index}: expected a JSON object, got {type(row).__name__}")
            continue
        if where := _lone_surrogate(row):
            _problem(problems, f"{path}:{index}: {where}")
            continue
        yield Record(row, f"{path}:{index}")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # only a line with one can hold a lone surrogate


def _lone_surrogate(node, key: str = "") -> str | None:
    """``field: ...`` for the first string (or key) in ``node`` holding an unpaired UTF-16 surrogate, else None.

    ``json.loads`` pairs escaped surrogates into one character (an escaped emoji is fine); an unpaired one
    stays, and no tokenizer can encode it.
    """
    if isinstance(node, str):
        bad = next((c for c in node if "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            return f"{key or 'value'}: holds an unpaired surrogate escape (\\u{ord(bad):04x}), which is not text"
        return None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for name, value in items:
        where = _lone_surrogate(str(name), key) if isinstance(name, str) else None
        where = where or _lone_surrogate(value, f"{key}.{name}" if key else str(name))
        if where:
            return where
    return None


def _read_csv(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        # line_num is the physical line where the reader stopped; a row starts one after
        # the previous stop (quoted fields may span several lines).
        start = 2
        for row in reader:
            yield Record({k: v for k, v in row.items() if k is not None}, f"{path}:{start}")
            start = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield Record(row, f"{path}:{number}")


def _read_hub(name: str, split: str) -> Iterator[Record]:
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown name, bad split: all mean "cannot read this"
        raise DataError(
            [
                f"{name}: neither a local file nor reachable on the Hugging Face hub "
                f"(split '{split}'): {type(err).__name__}: {err}"
            ],
            hint="If it is a local file, check the path and its extension "
            f"({', '.join(SUPPORTED_SUFFIXES)}); hub datasets need a network connection "
            "or a prior download into the datasets cache.",
        ) from err
    for index, row in enumerate(dataset):
        yield Record(dict(row), f"{name}[{split}]:{index}")


def fingerprint_sources(source: str | list[str] | None, split: str | None = None) -> str:
    """Hash of what a source reads: file names and contents, or hub name + split.

    Used as part of the tokenisation cache key; a changed byte changes the hash.
    """
    digest = hashlib.sha256()
    for one in _as_list(source) if source is not None else []:
        resolved = resolve(one)
        if isinstance(resolved, tuple):
            digest.update(f"hub:{resolved[0]}[{resolved[1] or split or 'train'}]".encode())
            continue
        for path in resolved:
            digest.update(f"file:{path}:".encode())  # the path shows up in `where`
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def with_columns(record: Record, columns: dict[str, str]) -> dict:
    """The record's fields with the user's column names mapped onto the format's
    (``columns: {field: column}``); the record itself is not changed."""
    data = dict(record.data)
    for field, column in columns.items():
        if column in data and field != column:
            data[field] = data.pop(column)
    return data

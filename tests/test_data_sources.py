"""Reading records: every file type, folders, globs, `where` strings, and failure messages."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data import DataError, read_records
from tuneforge.data.sources import fingerprint_sources


def test_jsonl_where_is_the_line_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    records = list(read_records(str(path)))
    assert [r.data["text"] for r in records] == ["one", "two"]
    assert [r.where for r in records] == [f"{path}:1", f"{path}:3"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n[1, 2]\n')
    problems: list[str] = []
    records = list(read_records(str(path), problems=problems))
    assert len(records) == 2
    assert problems[0].startswith(f"{path}:3: not valid JSON: ")
    assert problems[1] == f"{path}:4: expected a JSON object, got list"
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        list(read_records(str(path)))


def test_json_array_and_single_object(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"x": 1}, {"x": 2}]))
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"x": 3}))
    assert [(r.data["x"], r.where) for r in read_records(str(arr))] == [(1, f"{arr}:1"), (2, f"{arr}:2")]
    assert [(r.data["x"], r.where) for r in read_records(str(one))] == [(3, f"{one}:1")]


def test_csv_rows_keep_their_physical_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\nhi,there\n"multi\nline",x\nlast,y\n')
    records = list(read_records(str(path)))
    assert [r.data for r in records] == [
        {"prompt": "hi", "completion": "there"},
        {"prompt": "multi\nline", "completion": "x"},
        {"prompt": "last", "completion": "y"},
    ]
    assert [r.where.rsplit(":", 1)[1] for r in records] == ["2", "3", "5"]


def test_parquet_rows(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"]}), path)
    records = list(read_records(str(path)))
    assert [r.data for r in records] == [{"prompt": "a", "completion": "c"}, {"prompt": "b", "completion": "d"}]
    assert records[1].where == f"{path}:2"


def test_folder_reads_supported_files_sorted_and_glob(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"i": 2}\n')
    (tmp_path / "a.jsonl").write_text('{"i": 1}\n')
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "doc.txt").write_text("raw document")
    assert [r.data for r in read_records(str(tmp_path))] == [{"i": 1}, {"i": 2}, {"text": "raw document"}]
    assert [r.data["i"] for r in read_records(str(tmp_path / "*.jsonl"))] == [1, 2]
    assert [r.data["i"] for r in read_records([str(tmp_path / "b.jsonl"), str(tmp_path / "a.jsonl")])] == [2, 1]


def test_missing_file_says_what_to_do(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as err:
        list(read_records(str(missing)))
    assert str(missing) in str(err.value) and "file not found" in str(err.value)
    assert "glob" in err.value.hint
    with pytest.raises(DataError, match="no data files match"):
        list(read_records(str(tmp_path / "*.parquet")))


def test_hub_name_failure_is_a_clear_data_error(monkeypatch):
    import datasets

    calls = []

    def offline(name, split):
        calls.append((name, split))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="neither a local file nor reachable on the Hugging Face hub"):
        list(read_records("someone/some-dataset"))
    with pytest.raises(DataError):
        list(read_records("someone/other[validation]"))
    assert calls == [("someone/some-dataset", "train"), ("someone/other", "validation")]


def test_hub_rows_are_records(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: [{"text": "a"}, {"text": "b"}])
    records = list(read_records("org/ds", split="test"))
    assert [r.where for r in records] == ["org/ds[test]:0", "org/ds[test]:1"]


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n')
    first = fingerprint_sources(str(path))
    assert fingerprint_sources(str(path)) == first
    path.write_text('{"text": "two"}\n')
    assert fingerprint_sources(str(path)) != first

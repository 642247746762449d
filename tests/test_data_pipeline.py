"""The pipeline: splits, caps, reports, validation and the tokenisation cache."""

import pytest
from conftest import chat_rows, write_jsonl
from tiny import tiny_tokenizer

from tuneforge.config.schema import DataConfig
from tuneforge.data import DataError, load_splits, pipeline, validate_data
from tuneforge.data.formats import loss_tokens


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def counted_builds(monkeypatch):
    """Count how often the pipeline really reads and renders (cache misses)."""
    calls = []
    real = pipeline.build

    def counting(cfg, tokenizer):
        calls.append(cfg.train)
        return real(cfg, tokenizer)

    monkeypatch.setattr(pipeline, "build", counting)
    return calls


def test_eval_fraction_splits_rows_deterministically(tok, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", chat_rows(20))
    cfg = DataConfig(format="chat", train=str(path), eval_fraction=0.2, seed=3)
    first = load_splits(cfg, tok, use_cache=False)
    assert (len(first.train), len(first.eval), len(first.eval_samples)) == (16, 4, 4)
    assert {e.where for e in first.eval} == {s.where for s in first.eval_samples}
    assert {e.where for e in first.eval}.isdisjoint(e.where for e in first.train)
    again = load_splits(cfg, tok, use_cache=False)
    assert [e.where for e in again.eval] == [e.where for e in first.eval]
    other = load_splits(cfg.model_copy(update={"seed": 4}), tok, use_cache=False)
    assert [e.where for e in other.eval] != [e.where for e in first.eval]


def test_max_examples_caps_training_examples_only(tok, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", chat_rows(20))
    splits = load_splits(
        DataConfig(format="chat", train=str(path), eval_fraction=0.25, max_examples=5), tok, use_cache=False
    )
    assert (len(splits.train), len(splits.eval)) == (5, 5)
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "x" * 50}] * 10)
    blocks = load_splits(
        DataConfig(format="text", train=str(text), max_length=16, max_examples=3), tok, use_cache=False
    )
    assert len(blocks.train) == 3 and all(len(e.input_ids) == 16 for e in blocks.train)


def test_report_counts_tokens_and_loss_fraction(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "abc", "completion": "de"}] * 4)
    report = load_splits(
        DataConfig(format="prompt_completion", train=str(path), template="plain"), tok, use_cache=False
    ).report
    # plain: "abc" (3, masked) + "de" + EOS (3, targets) per row
    assert (report.rows, report.examples, report.tokens, report.loss_tokens) == (4, 4, 24, 12)
    assert report.loss_fraction == pytest.approx(0.5)
    assert report.problems == []


def test_long_examples_are_truncated_and_counted_and_empty_ones_dropped(tok, tmp_path):
    rows = [{"prompt": "p" * 5, "completion": "c" * 20}, {"prompt": "q" * 40, "completion": "d"}]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    splits = load_splits(
        DataConfig(format="prompt_completion", train=str(path), template="plain", max_length=12), tok, use_cache=False
    )
    assert splits.report.truncated == 2
    assert len(splits.train) == 1 and len(splits.train[0].input_ids) == 12
    assert loss_tokens(splits.train[0].labels) == 7
    assert any("no loss tokens" in w and "dropped" in w for w in splits.report.warnings)


def test_validate_reports_bad_rows_without_raising_and_caps_the_list(tok, tmp_path):
    rows = chat_rows(3) + [{"messages": [{"role": "bot", "content": "x"}]}] * 30
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    report = validate_data(DataConfig(format="chat", train=str(path)), tok, max_problems=5)
    assert len(report.problems) == 6 and report.problems[-1] == "… and 25 more problem(s)"
    assert report.problems[0] == f"{path}:4: messages[0].role: must be one of system, user, assistant, tool (got 'bot')"
    assert report.examples == 3 and 0 < report.loss_fraction < 1
    missing = validate_data(DataConfig(format="chat", train=str(tmp_path / "missing.jsonl")), tok)
    assert "file not found" in missing.problems[0]


def test_template_that_masks_end_of_turn_stops_loading(tmp_path):
    from test_data_templates import END_IN_NEXT_HEADER

    tok = tiny_tokenizer(END_IN_NEXT_HEADER)
    path = write_jsonl(tmp_path / "c.jsonl", chat_rows(4))
    cfg = DataConfig(format="chat", train=str(path))
    report = validate_data(cfg, tok)
    assert report.problems and all("end-of-turn token" in p for p in report.problems)
    with pytest.raises(DataError, match="end-of-turn token"):
        load_splits(cfg, tok, use_cache=False)


def test_zero_loss_tokens_is_a_problem(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "x" * 30, "completion": "y"}])
    report = validate_data(DataConfig(format="prompt_completion", train=str(path), template="plain", max_length=8), tok)
    assert any("no loss tokens" in p for p in report.problems)


def test_second_load_is_a_cache_hit_and_changes_miss(tok, tmp_path, counted_builds):
    path = write_jsonl(tmp_path / "c.jsonl", chat_rows(10))
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(format="chat", train=str(path), eval_fraction=0.2)
    first = load_splits(cfg, tok, cache_dir=cache_dir)
    second = load_splits(cfg, tok, cache_dir=cache_dir)
    assert len(counted_builds) == 1  # hit: nothing re-read
    assert [(e.input_ids, e.labels, e.where) for e in second.train] == [
        (e.input_ids, e.labels, e.where) for e in first.train
    ]
    assert second.eval_samples == first.eval_samples and second.report == first.report
    assert len(list(cache_dir.glob("*.npz"))) == 1 and not list(cache_dir.glob("*.tmp"))

    load_splits(cfg.model_copy(update={"max_length": 256}), tok, cache_dir=cache_dir)  # a setting changed
    assert len(counted_builds) == 2
    write_jsonl(path, chat_rows(10, seed=1))  # the file changed
    load_splits(cfg, tok, cache_dir=cache_dir)
    assert len(counted_builds) == 3
    other_tok = tiny_tokenizer(chat_template=tok.chat_template.replace("tiny test model", "tiny model"))
    load_splits(cfg, other_tok, cache_dir=cache_dir)  # the tokenizer's template changed
    assert len(counted_builds) == 4
    load_splits(cfg, tok, cache_dir=cache_dir, use_cache=False)
    assert len(counted_builds) == 5


def test_default_cache_dir_is_under_the_tuneforge_cache(tok, tmp_path, isolated_cache):
    path = write_jsonl(tmp_path / "c.jsonl", chat_rows(3))
    load_splits(DataConfig(format="chat", train=str(path)), tok)
    assert len(list((isolated_cache / "tokenized").glob("*.npz"))) == 1


def test_failed_loads_are_not_cached(tok, tmp_path, counted_builds):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": []}])
    cfg = DataConfig(format="chat", train=str(path))
    for _ in range(2):
        with pytest.raises(DataError):
            load_splits(cfg, tok, cache_dir=tmp_path / "cache")
    assert len(counted_builds) == 2


def test_a_single_text_document_is_split_by_blocks(tok, tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("word " * 200)  # 1000 bytes + EOS = 1001 tokens: 15 full blocks of 64 + 41 kept
    splits = load_splits(
        DataConfig(format="text", train=str(path), max_length=64, eval_fraction=0.2), tok, use_cache=False
    )
    assert (len(splits.train), len(splits.eval)) == (13, 3)
    assert all(e.labels == e.input_ids for e in splits.train + splits.eval)

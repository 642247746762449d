"""The bundled sentiment task: deterministic, balanced, held-out clean, every phenomenon in both splits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.tasks import sentiment
from tuneforge.tasks.sentiment import LABELS, describe, generate, make_splits, write_task_files

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "examples" / "sentiment"

EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
NEGATION = re.compile(r"\b(not|never|no|nobody|cant|didnt|wasnt|doesnt|isnt)\b|n't\b", re.I)
SARCASM = re.compile(r"/s\b|yeah right|oh great, another|🙄|🙃|a great experience|exactly how i wanted", re.I)
LOADED = re.compile(r"\b(good|overrated|not sure|no idea)\b", re.I)
SLANG = re.compile(r"\b(ngl|tbh|lowkey|fr|mid|bussin|w|l|no cap|goated|slaps|bruh|smh|ong)\b", re.I)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def normalised(text: str) -> str:
    """Case, punctuation and emoji removed: what a held-out comment must differ from training in."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def negated(text: str) -> bool:
    return bool(NEGATION.search(re.sub(r"not gonna lie", "", text, flags=re.I)))  # "ngl" spelt out negates nothing


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    train, held_out = make_splits()
    return {"train": train, "eval": held_out}


def test_same_seed_same_rows_and_bytes(tmp_path):
    assert generate(150, seed=3) == generate(150, seed=3)
    assert make_splits() == make_splits()
    a = write_task_files(tmp_path / "a", n_train=90, n_eval=30, seed=3)
    b = write_task_files(tmp_path / "b", n_train=90, n_eval=30, seed=3)
    for split in ("train", "eval"):
        assert a[split].read_bytes() == b[split].read_bytes()
    assert len(read_jsonl(a["train"])) == 90
    assert len(read_jsonl(a["eval"])) == 30


def test_different_seeds_differ():
    a = {row["text"] for row in generate(150, seed=0)}
    b = {row["text"] for row in generate(150, seed=1)}
    assert len(a & b) < 15


def test_default_sizes_and_balanced_labels(splits):
    assert (len(splits["train"]), len(splits["eval"])) == (sentiment.TRAIN_SIZE, sentiment.EVAL_SIZE) == (960, 240)
    assert LABELS == ("negative", "neutral", "positive")
    for rows in splits.values():
        counts = Counter(row["label"] for row in rows)
        assert set(counts) == set(LABELS)
        for label in LABELS:
            assert abs(counts[label] / len(rows) - 1 / 3) < 0.05, counts


def test_held_out_never_repeats_a_training_comment(splits):
    train, held_out = splits["train"], splits["eval"]
    train_texts = {row["text"] for row in train}
    assert not train_texts & {row["text"] for row in held_out}
    # not even up to case, punctuation and emoji
    assert not {normalised(row["text"]) for row in train} & {normalised(row["text"]) for row in held_out}
    assert len({normalised(row["text"]) for row in held_out}) == len(held_out)
    assert len({normalised(row["text"]) for row in train}) == len(train)


def test_held_out_mixes_seen_and_unseen_template_topic_pairs():
    train, held_out = sentiment._split_rows(sentiment.TRAIN_SIZE, sentiment.EVAL_SIZE, sentiment.SEED)
    seen = {(row["template"], row["topic"]) for row in train}
    unseen = [row for row in held_out if (row["template"], row["topic"]) not in seen]
    assert 0.3 * len(held_out) <= len(unseen) <= 0.7 * len(held_out)
    # new combinations of known parts: every held-out template and topic also occurs in training
    assert {row["template"] for row in held_out} <= {row["template"] for row in train}
    assert {row["topic"] for row in held_out} <= {row["topic"] for row in train}
    kinds = {row["kind"] for row in train}
    assert {row["kind"] for row in held_out} == kinds
    assert {row["kind"] for row in unseen} >= {"negation", "sarcasm", "question"}


def test_written_rows_are_jsonl_with_text_and_label_only(tmp_path):
    paths = write_task_files(tmp_path)
    for _split, path in paths.items():
        raw = path.read_text(encoding="utf-8")
        assert "\\u" not in raw and EMOJI.search(raw)  # ensure_ascii=False: emoji stay readable
        assert raw.endswith("\n")
        for line in raw.splitlines():
            row = json.loads(line)
            assert list(row) == ["text", "label"]
            assert row["label"] in LABELS
            assert isinstance(row["text"], str) and row["text"] == row["text"].strip()
            assert "\n" not in row["text"]
            assert 8 <= len(row["text"].split()) <= 40, row["text"]


def test_shipped_examples_are_what_the_task_writes(tmp_path):
    """examples/sentiment/ is generated, not hand-edited: regenerate it with
    `python -m tuneforge.tasks.sentiment examples/sentiment` whenever the task changes."""
    fresh = write_task_files(tmp_path)
    for split in ("train", "eval"):
        shipped = SHIPPED / f"{split}.jsonl"
        assert shipped.read_bytes() == fresh[split].read_bytes(), f"{shipped} is stale"


def test_module_entry_point_writes_the_files(tmp_path):
    command = [sys.executable, "-m", "tuneforge.tasks.sentiment", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True)
    fresh = write_task_files(tmp_path / "direct")
    for split in ("train", "eval"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == fresh[split].read_bytes()


# name -> (labels that must carry it, test on the text, minimum count per label in held-out; train needs 4x)
PHENOMENA = {
    "negation": (("positive", "negative"), negated, 10),
    "sarcasm": (("negative",), lambda t: bool(SARCASM.search(t)), 10),
    "mixed, resolved": (("positive", "negative"), lambda t: bool(re.search(r"\bbut\b", t, re.I)), 8),
    "emoji": (LABELS, lambda t: bool(EMOJI.search(t)), 15),
    "slang": (("positive", "negative"), lambda t: bool(SLANG.search(t)), 15),
    "hashtag": (LABELS, lambda t: bool(re.search(r"#\w", t)), 5),
    "mention": (LABELS, lambda t: bool(re.search(r"@\w", t)), 5),
    "question": (("neutral",), lambda t: "?" in t, 20),
    "all lowercase": (LABELS, lambda t: t == t.lower(), 15),
    "capitalised": (LABELS, lambda t: t[:1].isupper(), 10),
    "loaded word, still neutral": (("neutral",), lambda t: bool(LOADED.search(t)), 5),
}


@pytest.mark.parametrize("name", PHENOMENA)
def test_each_phenomenon_is_in_both_splits(splits, name):
    labels, present, minimum = PHENOMENA[name]
    for split, rows in splits.items():
        for label in labels:
            count = sum(present(row["text"]) for row in rows if row["label"] == label)
            needed = minimum * (4 if split == "train" else 1)
            assert count >= needed, (name, split, label, count)


def test_sarcasm_markers_only_on_negative_comments(splits):
    for rows in splits.values():
        for row in rows:
            if re.search(r"/s\b|yeah right|oh great, another|🙄", row["text"], re.I):
                assert row["label"] == "negative", row


def test_shouting_and_typos_occur():
    rows = generate(960, seed=0)
    assert any(len(row["text"]) > 30 and row["text"] == row["text"].upper() for row in rows)
    typo_words = re.compile(r"\b(rly|bc|prolly|u|tho|tonite|fav|mins|wasnt|didnt|cant|im|ive|ill|wut)\b", re.I)
    assert sum(bool(typo_words.search(row["text"])) for row in rows) >= 30


def test_topics_vary(splits):
    texts = " ".join(row["text"].lower() for row in splits["eval"])
    for word in ("phone", "flight", "fries", "episode", "driver", "game", "team"):
        assert word in texts, word


def test_describe_is_one_line_naming_the_labels():
    text = describe()
    assert "\n" not in text
    assert all(label in text for label in LABELS)

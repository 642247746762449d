"""The bundled FAQ-retrieval task: deterministic, held-out clean, every positive retrievable, hard negatives hard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.tasks import faq_retrieval
from tuneforge.tasks.faq_retrieval import describe, generate_splits, write_task_files

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "examples" / "faq_retrieval"
FILES = ("train", "eval", "corpus", "raw_text")
STOP = {
    "the",
    "a",
    "an",
    "to",
    "my",
    "on",
    "in",
    "of",
    "is",
    "and",
    "i",
    "it",
    "what",
    "how",
    "do",
    "does",
    "for",
    "at",
    "from",
    "you",
    "your",
    "its",
    "can",
    "with",
    "or",
    "be",
    "this",
    "that",
    "me",
    "we",
    "are",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def normalised(text: str) -> str:
    """Lowercased words and numbers: what a held-out question must differ from training in."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def words(text: str) -> set[str]:
    return set(normalised(text).split())


def jaccard(a: str, b: str) -> float:
    return len(words(a) & words(b)) / len(words(a) | words(b))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return generate_splits()


@pytest.fixture(scope="module")
def answers() -> dict[str, dict]:
    """answer text -> {"intent", "detail", ...}."""
    return {a["text"]: a for a in faq_retrieval._answers()}


def test_same_seed_same_rows_and_bytes(tmp_path):
    assert generate_splits() == generate_splits()
    a = write_task_files(tmp_path / "a", seed=3)
    b = write_task_files(tmp_path / "b", seed=3)
    assert list(a) == list(FILES)
    for split in FILES:
        assert a[split].read_bytes() == b[split].read_bytes()


def test_different_seeds_differ_in_questions_not_in_corpus():
    a, b = generate_splits(seed=0), generate_splits(seed=1)
    assert sorted(r["text"] for r in a["corpus"]) == sorted(r["text"] for r in b["corpus"])
    shared = {r["anchor"] for r in a["train"]} & {r["anchor"] for r in b["train"]}
    assert len(shared) < 0.5 * len(a["train"])
    assert {r["anchor"] for r in a["eval"]} != {r["anchor"] for r in b["eval"]}


def test_sizes(splits):
    assert 1500 <= len(splits["train"]) <= 2500
    assert 300 <= len(splits["eval"]) <= 400
    assert 120 <= len(splits["corpus"]) <= 200
    assert len(splits["raw_text"]) == len(splits["train"]) + len(splits["corpus"])


def test_held_out_questions_never_repeat_training_questions(splits):
    train = {normalised(r["anchor"]) for r in splits["train"]}
    held = [normalised(r["anchor"]) for r in splits["eval"]]
    assert len(train) == len(splits["train"])  # training questions are distinct too
    assert len(set(held)) == len(held)
    assert not train & set(held)
    assert not {r["anchor"] for r in splits["eval"]} & {r["text"] for r in splits["raw_text"]}


def test_corpus_is_every_answer_once_and_holds_every_positive(splits, answers):
    corpus = [r["text"] for r in splits["corpus"]]
    assert len(set(corpus)) == len(corpus)
    assert len({normalised(t) for t in corpus}) == len(corpus)  # not even up to case and punctuation
    assert set(corpus) == set(answers)
    for split in ("train", "eval"):
        assert {r["positive"] for r in splits[split]} <= set(corpus)
    assert {r["positive"] for r in splits["eval"]} == set(corpus)  # every answer is asked about in held-out


def test_hard_negatives_are_in_the_corpus_and_are_near_duplicate_siblings(splits, answers):
    rows = [r for r in splits["train"] if "negative" in r]
    assert abs(len(rows) / len(splits["train"]) - 0.5) < 0.02
    trained = {r["positive"] for r in splits["train"]}
    for row in rows:
        assert row["negative"] != row["positive"]
        assert row["negative"] in answers
        assert row["negative"] in trained  # never an answer kept out of training
        pos, neg = answers[row["positive"]], answers[row["negative"]]
        assert pos["intent"] == neg["intent"] and pos["detail"] != neg["detail"]
    mean = sum(jaccard(r["positive"], r["negative"]) for r in rows) / len(rows)
    assert mean > 0.35, mean


def test_many_answers_have_a_near_duplicate(splits):
    corpus = [r["text"] for r in splits["corpus"]]
    nearest = [max(jaccard(a, b) for b in corpus if b != a) for a in corpus]
    assert sum(n >= 0.5 for n in nearest) >= len(corpus) / 3


def test_some_held_out_answers_have_no_training_question(splits, answers):
    trained = {r["positive"] for r in splits["train"]}
    unseen = [r for r in splits["eval"] if r["positive"] not in trained]
    assert 0.1 * len(splits["eval"]) <= len(unseen) <= 0.35 * len(splits["eval"])
    # the usual FAQ setting for the rest: most held-out questions target answers with training questions
    assert len(unseen) < 0.5 * len(splits["eval"])
    # unseen answers are new details of known intents
    trained_intents = {answers[t]["intent"] for t in trained}
    assert {answers[r["positive"]]["intent"] for r in unseen} <= trained_intents


def test_every_question_names_its_decisive_detail(splits, answers):
    for row in splits["train"] + splits["eval"]:
        aliases = faq_retrieval._aliases(answers[row["positive"]]["detail"])
        assert any(alias.lower() in row["anchor"].lower() for alias in aliases), row


def test_questions_and_answers_are_short_and_share_few_words(splits):
    for row in splits["train"] + splits["eval"]:
        assert 6 <= len(row["anchor"].split()) <= 25, row["anchor"]
        assert row["anchor"] == row["anchor"].strip() and "\n" not in row["anchor"]
    for row in splits["corpus"]:
        assert len(row["text"].split()) <= 60, row["text"]
    shares = []
    for row in splits["eval"]:
        content = words(row["anchor"]) - STOP
        shares.append(len(content & words(row["positive"])) / max(1, len(content)))
    assert sum(shares) / len(shares) < 0.35  # lexical overlap alone does not find the answer


def test_questions_vary_in_surface(splits):
    questions = [r["anchor"] for r in splits["train"]]
    assert sum(q == q.lower() for q in questions) > 0.3 * len(questions)
    assert sum(q[:1].isupper() for q in questions) > 0.3 * len(questions)
    typos = re.compile(r"\b(batery|firmwear|warrenty|invertor|wat|thru|rly|whats|wont|cant|doesnt|im)\b", re.I)
    assert sum(bool(typos.search(q)) for q in questions) >= 30
    first_words = Counter(normalised(q).split()[0] for q in questions)
    assert first_words.most_common(1)[0][1] < 0.2 * len(questions), first_words.most_common(3)


def test_raw_text_is_answers_and_training_questions(splits):
    raw = Counter(r["text"] for r in splits["raw_text"])
    expected = Counter([r["text"] for r in splits["corpus"]] + [r["anchor"] for r in splits["train"]])
    assert raw == expected


def test_written_files_are_utf8_jsonl_with_the_right_keys(tmp_path):
    paths = write_task_files(tmp_path)
    keys = {
        "train": ({"anchor", "positive"}, {"anchor", "positive", "negative"}),
        "eval": ({"anchor", "positive"},),
        "corpus": ({"text"},),
        "raw_text": ({"text"},),
    }
    for split, path in paths.items():
        raw = path.read_text(encoding="utf-8")
        assert raw.endswith("\n") and "\\u" not in raw  # ensure_ascii=False
        for line in raw.splitlines():
            assert set(json.loads(line)) in keys[split]
    assert "°C" in paths["corpus"].read_text(encoding="utf-8")


def test_shipped_examples_are_what_the_task_writes(tmp_path):
    """examples/faq_retrieval/ is generated, not hand-edited: regenerate it with
    `python -m tuneforge.tasks.faq_retrieval examples/faq_retrieval` whenever the task changes."""
    fresh = write_task_files(tmp_path)
    for split in FILES:
        shipped = SHIPPED / f"{split}.jsonl"
        assert shipped.read_bytes() == fresh[split].read_bytes(), f"{shipped} is stale"
    assert sum((SHIPPED / f"{split}.jsonl").stat().st_size for split in FILES) < 1_500_000


def test_module_entry_point_writes_the_files(tmp_path):
    command = [sys.executable, "-m", "tuneforge.tasks.faq_retrieval", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True)
    fresh = write_task_files(tmp_path / "direct")
    for split in FILES:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == fresh[split].read_bytes()


def test_describe_is_one_line():
    text = describe()
    assert "\n" not in text and "recall" in text and "VoltNest" in text

"""The bundled clinical-notes task: deterministic, held-out clean, learnable by copying."""

from __future__ import annotations

import json
import re

from tuneforge.tasks import clinical_notes
from tuneforge.tasks.clinical_notes import TASK_KEYS, describe, generate_examples, write_task_files

SEX_WORDS = {"female": ("f", "female", "woman", "lady"), "male": ("m", "male", "man", "gentleman")}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def notes_of(rows):
    prefix = clinical_notes.INSTRUCTION
    return [row["messages"][0]["content"].removeprefix(prefix) for row in rows]


def test_same_seed_writes_identical_files(tmp_path):
    a = write_task_files(tmp_path / "a", n_train=60, n_eval=10, seed=3)
    b = write_task_files(tmp_path / "b", n_train=60, n_eval=10, seed=3)
    for split in ("train", "eval"):
        assert a[split].read_bytes() == b[split].read_bytes()
    assert len(read_jsonl(a["train"])) == 60
    assert len(read_jsonl(a["eval"])) == 10


def test_different_seeds_differ():
    a = [ex["note"] for ex in generate_examples(50, seed=0)]
    b = [ex["note"] for ex in generate_examples(50, seed=1)]
    assert len(set(a) & set(b)) < 5


def test_held_out_notes_never_appear_in_train(tmp_path):
    paths = write_task_files(tmp_path, n_train=400, n_eval=40, seed=0)
    train, held_out = read_jsonl(paths["train"]), read_jsonl(paths["eval"])
    assert set(notes_of(train)).isdisjoint(notes_of(held_out))
    assert len(set(notes_of(held_out))) == 40


def test_chat_format(tmp_path):
    paths = write_task_files(tmp_path, n_train=5, n_eval=5, seed=0)
    for row in read_jsonl(paths["train"]) + read_jsonl(paths["eval"]):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"].startswith(clinical_notes.INSTRUCTION)


def test_completion_is_compact_json_with_exactly_the_task_keys():
    for ex in generate_examples(200, seed=0):
        parsed = json.loads(ex["completion"])
        assert tuple(parsed) == TASK_KEYS
        assert parsed == ex["report"]
        assert "\n" not in ex["completion"]
        assert ex["prompt"].endswith(ex["note"])
        assert isinstance(parsed["age"], int) and isinstance(parsed["dose_mg"], (int, float))
        assert parsed["sex"] in ("female", "male")


def test_every_value_is_recoverable_from_the_note():
    for ex in generate_examples(300, seed=7):
        note, report = ex["note"], ex["report"]
        lowered = note.lower()
        assert re.search(rf"\b{report['age']}", note), note
        for key in ("complaint", "diagnosis", "medication"):
            assert report[key] in lowered, (key, note)
        dose = f"{report['dose_mg']:g}"
        assert re.search(rf"\b{re.escape(dose)} ?(mg|milligrams)\b", note), note
        words = set(re.findall(r"[a-z]+", lowered)) | set(re.findall(r"\d+([fm])\b", lowered))
        assert words & set(SEX_WORDS[report["sex"]]), note
        other = "male" if report["sex"] == "female" else "female"
        assert not words & set(SEX_WORDS[other]), note  # exactly one reading of the sex


def test_notes_vary_in_wording_and_style():
    examples = generate_examples(200, seed=0)
    notes = [ex["note"] for ex in examples]
    assert len(set(notes)) >= 0.8 * len(notes)
    styles = {
        "terse": r" c/o ",
        "soap": r"^S: ",
        "full sentence": r"^An? \d",
        "pt is a": r"^(Pt|Patient) is an? ",
        "medication first": r"^(Started|Prescribed|Gave) ",
    }
    for name, pattern in styles.items():
        share = sum(bool(re.search(pattern, n)) for n in notes) / len(notes)
        assert share >= 0.08, (name, share)
    diagnosis_first = sum(ex["note"].lower().startswith(ex["report"]["diagnosis"]) for ex in examples)
    assert diagnosis_first >= 0.08 * len(examples)
    assert len({ex["report"]["diagnosis"] for ex in examples}) >= 25
    assert sum(" mg" in n for n in notes) and sum(re.search(r"\dmg", n) is not None for n in notes)


def test_describe_names_the_keys():
    text = describe()
    assert all(key in text for key in TASK_KEYS)

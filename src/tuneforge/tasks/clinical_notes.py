"""Demo task: turn a clinician's free-text note into a structured patient report.

Each example is a short synthetic note ("54yo F c/o chest pain x3d. Dx: angina.
Rx: nitroglycerin 0.4mg PO.") and the one-line JSON report it implies::

    {"age":54,"sex":"female","complaint":"chest pain","diagnosis":"angina",
     "medication":"nitroglycerin","dose_mg":0.4}

(wrapped here; the real completion is one line.)

The notes vary in style (full sentences, terse abbreviations, SOAP, diagnosis or
medication first), synonyms, dose phrasing and irrelevant details (vitals,
allergies, duration), but every value is copied from the note or comes from a
closed-set normalisation ("F"/"woman"/"lady" -> "female", "54yo"/"54-year-old"
-> 54, "0.4mg" -> 0.4). Notes and reports are short on purpose: the quickstart
LoRA-tunes a 135M model on a CPU, so the whole train split is ~50k tokens.

Everything is drawn from a seeded ``random.Random``: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASK_KEYS: tuple[str, ...] = ("age", "sex", "complaint", "diagnosis", "medication", "dose_mg")
INSTRUCTION = "Extract the patient report as JSON with keys " + ", ".join(TASK_KEYS) + ".\nNote: "

# (complaint, diagnosis, medication, doses in mg): pairings a clinician would recognise.
_CASES: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    ("chest pain", "angina", "nitroglycerin", (0.4,)),
    ("cough", "community-acquired pneumonia", "amoxicillin", (500, 875, 1000)),
    ("sore throat", "strep pharyngitis", "penicillin", (250, 500)),
    ("burning urination", "urinary tract infection", "nitrofurantoin", (100,)),
    ("headache", "migraine", "sumatriptan", (50, 100)),
    ("wheezing", "asthma exacerbation", "prednisone", (40, 50)),
    ("joint pain", "gout", "colchicine", (0.6, 1.2)),
    ("heartburn", "gastroesophageal reflux", "omeprazole", (20, 40)),
    ("palpitations", "atrial fibrillation", "metoprolol", (25, 50)),
    ("fatigue", "iron deficiency anemia", "ferrous sulfate", (325,)),
    ("excessive thirst", "type 2 diabetes", "metformin", (500, 850, 1000)),
    ("low back pain", "lumbar strain", "ibuprofen", (400, 600, 800)),
    ("ear pain", "otitis media", "amoxicillin", (500,)),
    ("itchy rash", "contact dermatitis", "hydroxyzine", (10, 25)),
    ("shortness of breath", "heart failure", "furosemide", (20, 40)),
    ("dizziness", "benign positional vertigo", "meclizine", (12.5, 25)),
    ("low mood", "major depression", "sertraline", (50, 100)),
    ("constant worry", "generalized anxiety disorder", "escitalopram", (5, 10)),
    ("vomiting", "gastroenteritis", "ondansetron", (4, 8)),
    ("facial pain", "acute sinusitis", "doxycycline", (100,)),
    ("leg swelling", "deep vein thrombosis", "apixaban", (5, 10)),
    ("morning headaches", "hypertension", "lisinopril", (10, 20)),
    ("abdominal pain", "peptic ulcer", "pantoprazole", (40,)),
    ("flank pain", "kidney stone", "tamsulosin", (0.4,)),
    ("fever", "influenza", "oseltamivir", (75,)),
    ("hand tremor", "essential tremor", "propranolol", (20, 40)),
    ("seizure", "epilepsy", "levetiracetam", (500, 1000)),
    ("knee pain", "osteoarthritis", "naproxen", (250, 500)),
    ("painful rash", "shingles", "valacyclovir", (1000,)),
    ("productive cough", "acute bronchitis", "azithromycin", (250, 500)),
    ("morning stiffness", "rheumatoid arthritis", "methotrexate", (7.5, 15)),
    ("abdominal cramps", "irritable bowel syndrome", "dicyclomine", (10, 20)),
    ("neck spasms", "cervical strain", "cyclobenzaprine", (5, 10)),
    ("hives", "allergic urticaria", "cetirizine", (10,)),
    ("nasal congestion", "allergic rhinitis", "loratadine", (10,)),
    ("trouble sleeping", "insomnia disorder", "trazodone", (50,)),
)

# How a note may say the sex; the report always says "female" or "male".
_SEX_WORDS = {
    "female": {"full": ("woman", "female", "lady"), "terse": ("F", "female")},
    "male": {"full": ("man", "male", "gentleman"), "terse": ("M", "male")},
}

_PRESENTS = ("presents with", "complains of", "reports", "comes in with", "is seen for")
_ASSESSED = ("Assessed as", "Diagnosed with", "Likely", "Findings consistent with", "Impression:")
_STARTED = ("started on", "prescribed", "given", "plan", "begin")
_FREQUENCY = ("", "", " daily", " BID", " PO", " PO daily", " TID", " at night", " once")


def _fmt(dose: float) -> str:
    return f"{dose:g}"  # 0.4, 12.5, 500: never "500.0"


def _dose(rng: random.Random, dose: float) -> str:
    unit = rng.choice((" mg", " mg", "mg", " milligrams"))
    return _fmt(dose) + unit + rng.choice(_FREQUENCY)


def _duration(rng: random.Random, terse: bool) -> str:
    if rng.random() < 0.5:
        return ""
    n = rng.randint(2, 7)
    if terse:
        return rng.choice((f" x{n}d", f" x{n} days"))
    return rng.choice((f" for {n} days", " since yesterday", " for a few days"))


def _extra(rng: random.Random) -> str:
    """An irrelevant detail, or nothing (kept rare: every token costs CPU time)."""
    if rng.random() < 0.55:
        return ""
    return rng.choice(
        (
            f"BP {rng.randint(105, 165)}/{rng.randint(62, 98)}. ",
            f"HR {rng.randint(58, 118)}. ",
            f"T {rng.randint(365, 392) / 10:g}C. ",
            f"SpO2 {rng.randint(91, 99)}%. ",
            "Afebrile. ",
            "NKDA. ",
            "No known allergies. ",
            "Nonsmoker. ",
            "Vitals stable. ",
            "Pt reports poor appetite. ",
        )
    )


def _subject_full(rng: random.Random, age: int, sex: str) -> str:
    word = rng.choice(_SEX_WORDS[sex]["full"])
    return rng.choice((f"{age}-year-old {word}", f"{age} year old {word}", f"{word} aged {age}"))


def _subject_terse(rng: random.Random, age: int, sex: str) -> str:
    word = rng.choice(_SEX_WORDS[sex]["terse"])
    if len(word) == 1:
        return rng.choice((f"{age}yo {word}", f"{age} y/o {word}", f"{age}{word}", f"{word}, {age}yo"))
    return rng.choice((f"{age}yo {word}", f"{age} y/o {word}"))


def _article(phrase: str) -> str:
    vowel_sound = phrase[0] in "aeiou8" or phrase.startswith(("18-", "18 "))  # "an 18-year-old"
    return ("an " if vowel_sound else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _note(rng: random.Random, age: int, sex: str, complaint: str, diagnosis: str, med: str, dose: float) -> str:
    style = rng.randrange(6)
    extra = _extra(rng)
    if style == 0:  # full sentences
        subject = _article(_subject_full(rng, age, sex))
        return (
            f"{_cap(subject)} {rng.choice(_PRESENTS)} {complaint}{_duration(rng, False)}. {extra}"
            f"{rng.choice(_ASSESSED)} {diagnosis}; {rng.choice(_STARTED)} {med} {_dose(rng, dose)}."
        )
    if style == 1:  # terse abbreviations
        return (
            f"{_subject_terse(rng, age, sex)} c/o {complaint}{_duration(rng, True)}. {extra}"
            f"{rng.choice(('Dx:', 'Dx', 'A:', 'Imp:'))} {diagnosis}. "
            f"{rng.choice(('Rx:', 'Rx', 'Plan:', 'Start'))} {med} {_dose(rng, dose)}."
        )
    if style == 2:  # SOAP
        objective = extra.strip() or "Exam unremarkable."
        return (
            f"S: {_subject_terse(rng, age, sex)}, {complaint}{_duration(rng, True)}. O: {objective} "
            f"A: {diagnosis}. P: {med} {_dose(rng, dose)}."
        )
    if style == 3:  # diagnosis first
        subject = _article(_subject_full(rng, age, sex))
        return (
            f"{_cap(diagnosis)} in {subject} {rng.choice(('presenting with', 'with', 'complaining of'))} "
            f"{complaint}{_duration(rng, False)}. {extra}"
            f"{rng.choice(('Plan:', 'Start', 'Prescribed', 'Treated with'))} {med} {_dose(rng, dose)}."
        )
    if style == 4:  # "pt is a ... who reports"
        subject = _article(_subject_full(rng, age, sex))
        pt, verb = (rng.choice(("Pt", "Patient")), rng.choice(("reports", "complains of", "describes")))
        return (
            f"{pt} is {subject} who {verb} {complaint}{_duration(rng, False)}. {extra}"
            f"{rng.choice(('Impression:', 'Assessment:', 'Dx:'))} {diagnosis}. "
            f"{rng.choice(('Plan:', 'Started', 'Rx:'))} {med} {_dose(rng, dose)}."
        )
    # medication first
    terse = rng.random() < 0.5
    who = _subject_terse(rng, age, sex) if terse else _article(_subject_full(rng, age, sex))
    verb = rng.choice(("c/o", "with", "presenting with"))
    note = (
        f"{rng.choice(('Started', 'Prescribed', 'Gave'))} {med} {_dose(rng, dose)} for {diagnosis} "
        f"in {who} {verb} {complaint}{_duration(rng, terse)}. {extra}"
    )
    return note.rstrip()


def _example(rng: random.Random) -> dict:
    complaint, diagnosis, med, doses = rng.choice(_CASES)
    dose = rng.choice(doses)
    age = rng.randint(18, 89)
    sex = rng.choice(("female", "male"))
    note = _note(rng, age, sex, complaint, diagnosis, med, dose)
    dose_value = int(dose) if float(dose).is_integer() else dose
    report = dict(zip(TASK_KEYS, (age, sex, complaint, diagnosis, med, dose_value)))
    completion = json.dumps(report, separators=(",", ":"))  # compact: ~11 tokens fewer than ", "/": "
    return {"note": note, "report": report, "prompt": INSTRUCTION + note, "completion": completion}


def _generate(rng: random.Random, n: int, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """``n`` examples with distinct notes, none of them in ``exclude``."""
    out: list[dict] = []
    seen = set(exclude)
    for _ in range(50 * n + 100):  # guard: the space is vast, but never loop forever
        if len(out) == n:
            return out
        example = _example(rng)
        if example["note"] not in seen:
            seen.add(example["note"])
            out.append(example)
    raise RuntimeError(f"could only draw {len(out)} distinct notes of the {n} asked for")


def generate_examples(n: int, seed: int) -> list[dict]:
    """``n`` examples with distinct notes: ``{"note", "report", "prompt", "completion"}``."""
    return _generate(random.Random(seed), n)


def _chat(example: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": example["prompt"]},
            {"role": "assistant", "content": example["completion"]},
        ]
    }


def write_task_files(out_dir: Path, *, n_train: int = 400, n_eval: int = 40, seed: int = 0) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` (chat format) under ``out_dir``.

    The held-out split comes from its own random stream and never repeats a
    training note.
    """
    train = generate_examples(n_train, seed)
    train_notes = frozenset(ex["note"] for ex in train)
    held_out = _generate(random.Random(f"held-out:{seed}"), n_eval, exclude=train_notes)
    assert train_notes.isdisjoint(ex["note"] for ex in held_out)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train.jsonl", "eval": out_dir / "eval.jsonl"}
    for split, examples in (("train", train), ("eval", held_out)):
        lines = (json.dumps(_chat(ex), ensure_ascii=False) + "\n" for ex in examples)
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


def describe() -> str:
    example = generate_examples(1, seed=0)[0]
    return (
        "clinical-notes: turn a clinician's free-text note into a structured patient report.\n"
        f"Keys: {', '.join(TASK_KEYS)}. Metric: JSON field accuracy on the held-out split.\n"
        f"Example note: {example['note']}\n"
        f"Target: {example['completion']}"
    )

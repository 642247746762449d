"""A realistic-length chat dataset built offline from the Python standard library.

Each conversation asks what a standard-library function or class does and
answers with its docstring (``inspect.getdoc``), cut at a paragraph boundary
to at most ``MAX_ANSWER_CHARS`` characters (≈ 400 tokens with SmolLM2's
tokenizer). Answers run from a few dozen to a few hundred tokens, like real
SFT data, so padding and packing behave as they would in practice.

Deterministic for a given Python version: candidate names are sorted, the
selection and the question wording come from a seeded ``random.Random``.
Docstrings change between Python releases, so record the version with results.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
from pathlib import Path

MODULES = (
    "base64",
    "bisect",
    "calendar",
    "collections",
    "contextlib",
    "csv",
    "dataclasses",
    "difflib",
    "fnmatch",
    "functools",
    "glob",
    "heapq",
    "itertools",
    "json",
    "os.path",
    "pprint",
    "random",
    "re",
    "shutil",
    "statistics",
    "string",
    "tempfile",
    "textwrap",
    "urllib.parse",
)
MIN_ANSWER_CHARS = 80  # skip one-liners like "Return x." (a handful of tokens)
MAX_ANSWER_CHARS = 1600  # ≈ 400 SmolLM2 tokens of English prose
QUESTIONS = (
    "What does `{name}` do?",
    "Explain `{name}` from the Python standard library.",
    "How do I use `{name}` in Python?",
    "Can you describe the behaviour of `{name}`?",
    "I found `{name}` in some code. What is it for?",
)


def _trim(doc: str) -> str:
    """Whole paragraphs up to MAX_ANSWER_CHARS (the first paragraph is cut at a line if it alone is too long)."""
    out: list[str] = []
    size = 0
    for paragraph in doc.split("\n\n"):
        if size + len(paragraph) > MAX_ANSWER_CHARS:
            if not out:
                lines = []
                for line in paragraph.splitlines():
                    if size + len(line) > MAX_ANSWER_CHARS:
                        break
                    lines.append(line)
                    size += len(line) + 1
                out.append("\n".join(lines))
            break
        out.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(out).strip()


def candidates() -> list[tuple[str, str]]:
    """(qualified name, answer) for every public function / class with a usable docstring, sorted by name."""
    seen_docs: set[str] = set()
    out = []
    for module_name in sorted(MODULES):
        module = importlib.import_module(module_name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            answer = _trim(doc)
            # Aliases and inherited docstrings (e.g. exception classes) would repeat answers.
            if len(answer) < MIN_ANSWER_CHARS or answer in seen_docs:
                continue
            seen_docs.add(answer)
            out.append((f"{module_name}.{attr}", answer))
    return out


def build(num_examples: int, seed: int = 0) -> list[dict]:
    """``num_examples`` conversations ``{"messages": [user, assistant]}``, deterministically chosen."""
    pool = candidates()
    if num_examples > len(pool):
        raise ValueError(f"only {len(pool)} documented names are available; ask for fewer examples")
    rng = random.Random(seed)
    chosen = rng.sample(pool, num_examples)
    return [
        {
            "messages": [
                {"role": "user", "content": rng.choice(QUESTIONS).format(name=name)},
                {"role": "assistant", "content": answer},
            ]
        }
        for name, answer in chosen
    ]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path

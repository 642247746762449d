"""The docs name tests, test files and shipped configs that exist, and call a test an xfail only if it is one.

docs/DISTRIBUTED.md once described `test_fsdp2_lora_on_cpu_matches_ddp` as a strict
xfail for a bug that had been fixed; the test passed and the doc still said "wrong
until fixed". These checks read README.md and docs/*.md as text, so they run in
well under a second.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def known_tests() -> dict[str, bool]:
    """Every test function in tests/ → whether it carries a pytest.mark.xfail decorator."""
    found = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found[node.name] = found.get(node.name, False) or any(
                    "xfail" in ast.unparse(d) for d in node.decorator_list
                )
    return found


def paragraphs(path: Path) -> list[str]:
    return re.split(r"\n\s*\n", path.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_tests_and_files_exist(doc):
    functions = known_tests()
    text = doc.read_text()
    missing = [
        name
        for name in set(re.findall(r"\btest_\w+", text))
        if name not in functions and not (ROOT / "tests" / f"{name}.py").exists()
    ]
    missing += [
        path
        for path in set(re.findall(r"\b(?:tests|configs)/[\w/.-]+\.(?:py|yaml)\b", text))
        if not (ROOT / path).exists()
    ]
    assert not missing, f"{doc.name} names what does not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_a_test_called_xfail_is_marked_xfail(doc):
    functions = known_tests()
    wrong = [
        name
        for paragraph in paragraphs(doc)
        if "xfail" in paragraph
        for name in re.findall(r"\btest_\w+", paragraph)
        if name in functions and not functions[name]
    ]
    assert not wrong, f"{doc.name} calls {wrong} an xfail, but the test is a plain test (it passes)"

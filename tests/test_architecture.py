"""The structure docs/ARCHITECTURE.md promises, checked on the source itself: no import cycles, no
private names across packages, no method named outside methods/, small files, a short skeleton."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tuneforge"
sys.path.insert(0, str(ROOT / "tools"))

from import_graph import _resolve, cycles, import_graph, module_name  # noqa: E402

METHOD_NAMES = {"cpt", "sft", "classify", "contrastive", "dpo", "reward", "ppo"}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield module_name(path), path, ast.parse(path.read_text(encoding="utf-8"))


def test_no_import_cycles():
    """Every import counts, at module level or inside a function (tools/import_graph.py lists them)."""
    assert cycles(import_graph()) == []


def test_no_private_names_across_packages():
    """A name starting with _ is used only inside its own package (tuneforge.<package>)."""
    found = []
    for name, path, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _resolve(name, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and base.split(".")[:2] != name.split(".")[:2]:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} imports {base}.{alias.name}")
    assert found == []


def test_no_module_outside_methods_names_a_method():
    """Method knowledge lives in methods/<name>/ behind the interface; registry.py is the one map from
    a method's name to its modules. Scans every folder: string constants and imports."""
    found = []
    for name, path, tree in _modules():
        rel = path.relative_to(SRC)
        if rel.parts[0] == "methods" or rel.as_posix() == "registry.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in METHOD_NAMES:
                found.append(f"{rel}:{node.lineno} names {node.value!r}")
            if isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node.level, node.module)
                if base.startswith("tuneforge.methods."):
                    found.append(f"{rel}:{node.lineno} imports {base}")
            if isinstance(node, ast.Import):
                found += [f"{rel}:{node.lineno} imports {a.name}" for a in node.names if ".methods." in a.name]
    assert found == []


def test_no_source_file_over_600_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_the_run_skeleton_is_one_short_function():
    tree = ast.parse((SRC / "runner.py").read_text())
    (skeleton,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_from_config"]
    assert skeleton.end_lineno - skeleton.lineno + 1 <= 80
    # Its steps are the named ones in run/, which continual stages call too.
    session = (SRC / "continual" / "session.py").read_text()
    for step in ("prepare_training", "restore_checkpoint", "train("):
        assert step in session, step

"""Config validation never imports torch, transformers or peft (issue #23, item 3).

`import tuneforge.config`, `import tuneforge.registry`, loading any shipped config and
`tuneforge validate --schema-only` must work where those libraries cannot be imported: each
check runs in a fresh interpreter whose import system refuses them (a meta-path finder that
raises ImportError), so a torch import anywhere on the path fails the test with its traceback.

Imports point down: the config package imports nothing from ``continual/`` (which imports it),
and no tuneforge module takes part in a cycle of module-level imports.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "src" / "tuneforge"
HEAVY = ("torch", "transformers", "peft")
BUILT_IN = {"cpt", "sft", "classify", "contrastive", "dpo", "reward", "ppo"}
ONE_CONFIG_PER_METHOD = {  # a shipped config for every built-in method
    "quickstart.yaml": "sft",
    "cpt_text.yaml": "cpt",
    "classify_sentiment.yaml": "classify",
    "contrastive_faq.yaml": "contrastive",
    "sentiment_control/reward.yaml": "reward",
    "sentiment_control/dpo.yaml": "dpo",
    "sentiment_control/ppo.yaml": "ppo",
}

BLOCK = f"""
import sys

HEAVY = {HEAVY!r}


class RefuseHeavy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{{name}} imported during config validation")
        return None


sys.meta_path.insert(0, RefuseHeavy())
"""


def run_without_heavy(code: str) -> dict:
    """Run ``code`` from the repository root with torch / transformers / peft unimportable; its last stdout
    line is JSON (returned). The check that none of them got loaded some other way is appended."""
    script = (
        BLOCK
        + textwrap.dedent(code)
        + textwrap.dedent(f"""
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not loaded, loaded
    """)
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_blocker_blocks():
    """The harness itself: importing torch under it fails (else every test below proves nothing)."""
    result = run_without_heavy("""
        import json
        refused = []
        for name in ("torch", "transformers", "peft", "torch.nn"):
            try:
                __import__(name)
            except ImportError:
                refused.append(name)
        print(json.dumps(refused))
    """)
    assert result == ["torch", "transformers", "peft", "torch.nn"]


def test_config_and_registry_import_without_torch():
    result = run_without_heavy("""
        import json
        import tuneforge.config
        import tuneforge.registry as registry
        from tuneforge.config.schema import RunBase

        names = registry.method_names()
        classes = {name: registry.config_class(name) for name in names}
        print(json.dumps({"names": list(names),
                          "run_configs": sorted(n for n, c in classes.items() if issubclass(c, RunBase)),
                          "tags": {n: c.model_fields["method"].annotation.__args__[0] for n, c in classes.items()}}))
    """)
    assert set(result["names"]) == BUILT_IN
    assert set(result["run_configs"]) == BUILT_IN
    assert result["tags"] == {name: name for name in BUILT_IN}  # each class is the one for its method: value


def test_shipped_configs_load_without_torch():
    """One shipped config per method loads and validates; a misspelt key is still named, with a suggestion."""
    assert set(ONE_CONFIG_PER_METHOD.values()) == BUILT_IN
    result = run_without_heavy(f"""
        import json
        from tuneforge.config import ConfigError, load_config

        methods = {{}}
        for path in {sorted(ONE_CONFIG_PER_METHOD)!r}:
            config = load_config("configs/" + path)
            methods[path] = config.method
        continual = load_config("configs/continual_evolving_topics.yaml")
        try:
            load_config("configs/quickstart.yaml", ["trainig.epochs=2"])
            misspelt = None
        except ConfigError as exc:
            misspelt = exc.problems
        print(json.dumps({{"methods": methods, "stages": len(continual.stages), "misspelt": misspelt}}))
    """)
    assert result["methods"] == ONE_CONFIG_PER_METHOD
    assert result["stages"] > 1
    assert result["misspelt"] == ["trainig: unknown key (did you mean `training`?)."]


def test_validate_schema_only_without_torch():
    """`tuneforge validate --schema-only` passes the shipped configs and names a missing data file."""
    result = run_without_heavy("""
        import contextlib
        import io
        import json
        from tuneforge.cli import main

        def validate(*args):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["validate", *args, "--schema-only"])
            return code, " ".join((out.getvalue() + err.getvalue()).split())

        print(json.dumps({
            "quickstart": validate("configs/quickstart.yaml"),
            "dpo": validate("configs/sentiment_control/dpo.yaml"),
            "continual": validate("configs/continual_evolving_topics.yaml"),
            "missing": validate("configs/quickstart.yaml", "data.eval=nowhere/eval.jsonl"),
        }))
    """)
    for name in ("quickstart", "dpo", "continual"):
        code, output = result[name]
        assert code == 0, output
        assert "✓ schema" in output and "✓ files" in output and "valid (schema only" in output
    assert "✓ files 2 local data file(s) found" in result["quickstart"][1]
    code, output = result["missing"]
    assert code == 1
    assert "✗ data.eval: nowhere/eval.jsonl: file not found" in output
    assert "valid" not in output


def test_schema_only_checks_every_stage_and_general_text(tmp_path, monkeypatch):
    """In-process (torch may be loaded here): a continual config's missing files are named by stage."""
    import yaml

    from tuneforge.checks import check_files
    from tuneforge.config import load_config

    monkeypatch.chdir(REPO_ROOT)
    raw = yaml.safe_load((REPO_ROOT / "configs/continual_evolving_topics.yaml").read_text())
    assert len(raw["stages"]) > 1
    assert check_files(load_config(data=raw)).errors == []
    raw["stages"][0]["data"]["eval"] = f"{tmp_path}/gone.jsonl"
    raw["continual"]["general_text"] = f"{tmp_path}/none.txt"
    config = load_config(data=raw)
    errors = check_files(config).errors
    first = config.stages[0].name
    assert errors == [
        f"stages[0] ({first}).data.eval: {tmp_path}/gone.jsonl: file not found (working directory {REPO_ROOT})",
        f"continual.general_text: {tmp_path}/none.txt: file not found (working directory {REPO_ROOT})",
    ]


# ----------------------------------------------------------------------------- imports point down


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    """Absolute names of the tuneforge modules ``path`` imports (``from X import y``: X and X.y);
    module-level only skips imports inside functions / classes and under ``if TYPE_CHECKING``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                nodes.append(node)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                    visit(node.orelse)
                else:
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    if module_level_only:
        visit(tree.body)
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        found.add(module)
        found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "tuneforge" or m.startswith("tuneforge.")}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_config_package_imports_nothing_from_continual():
    """continual/ imports config/ (stage configs, dump_config); the reverse, even inside a function, would
    make a cycle. The stages: / continual: sections live in config/continual.py for that reason."""
    offending = {
        name: sorted(
            m
            for m in _imports(path, module_level_only=False)
            if m == "tuneforge.continual" or m.startswith("tuneforge.continual.")
        )
        for name, path in _modules().items()
        if name.startswith("tuneforge.config")
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_no_module_level_import_cycle():
    """Importing ``a.b.c`` also runs ``a`` and ``a.b``, so those count as imported too (but a module's own
    parent packages do not: they are always mid-import when it runs)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path, module_level_only=True):
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    edges.add(prefix)
        graph[name] = edges

    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
    assert graph["tuneforge.config.schema"] >= {"tuneforge.config.continual", "tuneforge.adapters.config"}

"""Every shipped config under configs/ loads, and passes the full `validate` checks on its own data.

New configs are picked up by the glob. Paths in the configs are relative to the
repository root, so each test runs from there. The tokenizer is the real
embedded one (converted from the bundled GGUF once, then cached).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuneforge.checks import check_config
from tuneforge.config import load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def tokenizer_for():
    """The tokenizer of a config's model (the embedded SmolLM2 or MiniLM), loaded once per model."""
    from tuneforge.models.load import load_tokenizer

    loaded: dict = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_tokenizer(name)
        return loaded[name]

    return get


def test_configs_are_shipped():
    names = {path.name for path in CONFIGS}
    assert {"quickstart.yaml", "cpt_text.yaml", "sft_full.yaml", "sft_lora_chat.yaml",
            "instruct_natural_instructions.yaml", "classify_sentiment.yaml", "contrastive_faq.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_passes_checks(path, tokenizer_for, monkeypatch):
    """As a user on a fresh checkout runs `tuneforge validate configs/X.yaml`: from the
    repository root, no overrides, nothing written first."""
    monkeypatch.chdir(REPO_ROOT)
    config = load_config(path.relative_to(REPO_ROOT))
    report = check_config(config, tokenizer=tokenizer_for(config.model.name))
    assert report.errors == []
    assert report.facts["examples"] > 0
    if "loss_tokens" in report.facts:  # token-level methods (cpt, sft); classify counts examples
        assert report.facts["loss_tokens"] > 0
    if config.eval is not None:
        # A config that asks for evaluation must hold data out for it (every stage of a continual config).
        from tuneforge.continual.stages import stage_data

        sections = [stage_data(config, k) for k in range(len(config.stages))] if config.stages else [config.data]
        assert all(data.eval is not None or data.eval_fraction > 0 for data in sections)


def test_shipped_quickstart_data_is_what_the_task_writes(tmp_path):
    """examples/clinical_notes/ is generated, not hand-edited: regenerate it with
    `write_task_files(Path("examples/clinical_notes"))` whenever the task changes."""
    from tuneforge.tasks.clinical_notes import write_task_files

    fresh = write_task_files(tmp_path)
    for split in ("train", "eval"):
        shipped = REPO_ROOT / "examples" / "clinical_notes" / f"{split}.jsonl"
        assert shipped.read_bytes() == fresh[split].read_bytes(), f"{shipped} is stale"
    config = load_config(REPO_ROOT / "configs" / "quickstart.yaml")
    assert config.data.train == "examples/clinical_notes/train.jsonl"
    assert config.data.eval == "examples/clinical_notes/eval.jsonl"


def test_packaged_quickstart_config_is_the_shipped_one():
    """`tuneforge quickstart` loads the copy inside the package; it must not drift."""
    from tuneforge.quickstart import quickstart_config_path

    assert quickstart_config_path().read_bytes() == (REPO_ROOT / "configs" / "quickstart.yaml").read_bytes()


def test_validate_suggests_the_misspelt_key(tmp_path, capsys):
    from tuneforge.cli import main

    text = (REPO_ROOT / "configs" / "sft_full.yaml").read_text()
    assert "  learning_rate:" in text
    bad = tmp_path / "typo.yaml"
    bad.write_text(text.replace("  learning_rate:", "  learnig_rate:", 1))
    code = main(["validate", str(bad)])
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())  # rich wraps long lines
    assert code == 1
    assert "learnig_rate" in output
    assert "did you mean `learning_rate`" in output


def test_validate_passes_on_a_shipped_config(tmp_path, capsys, monkeypatch):
    """The CLI path end to end on a copy of a shipped config (no typo): exit code 0."""
    from tuneforge.cli import main

    monkeypatch.chdir(REPO_ROOT)
    copy = tmp_path / "sft_lora_chat.yaml"
    shutil.copy(REPO_ROOT / "configs" / "sft_lora_chat.yaml", copy)
    code = main(["validate", str(copy)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "valid" in output

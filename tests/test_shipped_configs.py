"""Every shipped config under configs/ loads, and passes the full `validate` checks on its own data.

New configs are picked up by the recursive glob (configs/accelerate/ holds launch
setups, tested in test_launch_setups.py). Paths in the configs are relative to
the repository root, so each test runs from there. The tokenizer is the real
embedded one (converted from the bundled GGUF once, then cached).

A config that chains runs (configs/sentiment_control/) names folders under runs/
that an earlier step writes; on a fresh checkout it must fail only with the
message that names that step, and the step named must really write the folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tuneforge.checks import check_config
from tuneforge.config import load_config
from tuneforge.models.load import ModelNotFoundError

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_SETUPS = REPO_ROOT / "configs" / "accelerate"
CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.yaml") if LAUNCH_SETUPS not in p.parents)
EARLIER_STEP = re.compile(
    r"it is written by an earlier step: run `tuneforge train [^`]+`"
    r"( and `tuneforge merge [^`]+`)? first$"
)


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
    assert {
        "quickstart.yaml",
        "cpt_text.yaml",
        "sft_full.yaml",
        "sft_lora_chat.yaml",
        "instruct_natural_instructions.yaml",
        "classify_sentiment.yaml",
        "contrastive_faq.yaml",
    } <= names
    chain = {p.name for p in CONFIGS if p.parent.name == "sentiment_control"}
    assert chain == {"classifier.yaml", "sft.yaml", "reward.yaml", "dpo.yaml", "ppo.yaml"}


def assert_names_the_step_that_writes(message: str, folder: str) -> None:
    """``message`` says "run `tuneforge train C` [and `tuneforge merge RUN --output folder`] first", and
    config C (loaded from the repository root) writes ``folder``: as its run folder or a folder in it,
    or, with the merge, RUN is C's run folder and the merge writes exactly ``folder``."""
    assert EARLIER_STEP.search(message), message
    commands = re.findall(r"`(tuneforge [^`]+)`", message)
    config_path = commands[0].split()[2]
    producer = load_config(config_path)
    run_dir = Path(producer.output_dir) / (producer.name or Path(config_path).stem)
    if len(commands) == 1:
        assert Path(folder) == run_dir or run_dir in Path(folder).parents, (message, run_dir)
    else:
        assert producer.adapter is not None, "merge folds an adapter; a full fine-tune has none"
        assert commands[1].split() == ["tuneforge", "merge", str(run_dir), "--output", folder]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / "configs")))
def test_shipped_config_passes_checks(path, tokenizer_for, monkeypatch):
    """As a user on a fresh checkout runs `tuneforge validate configs/X.yaml`: from the
    repository root, no overrides, nothing written first. A config whose model (or reward model)
    an earlier step writes fails only with the message that names that step."""
    monkeypatch.chdir(REPO_ROOT)
    config = load_config(path.relative_to(REPO_ROOT))
    try:
        tokenizer = tokenizer_for(config.model.name)
    except ModelNotFoundError as exc:
        assert_names_the_step_that_writes(str(exc), config.model.name)
        return
    report = check_config(config, tokenizer=tokenizer)
    for error in report.errors:  # after `train` + `merge` of the SFT stage: the PPO stage's reward model
        missing = re.match(r"reward\.sources\[\d+\]\.model: (\S+): no such folder; ", error)
        assert missing, report.errors
        assert_names_the_step_that_writes(error, missing.group(1))
    if report.errors:
        return
    assert report.facts["examples"] > 0
    if "loss_tokens" in report.facts:  # token-level methods (cpt, sft); classify counts examples
        assert report.facts["loss_tokens"] > 0
    if config.eval is not None:
        # A config that asks for evaluation must hold data out for it (every stage of a continual config).
        from tuneforge.continual.stages import stage_data

        sections = [stage_data(config, k) for k in range(len(config.stages))] if config.stages else [config.data]
        assert all(data.eval is not None or data.eval_fraction > 0 for data in sections)


SFT_MERGE = (
    "run `tuneforge train configs/sentiment_control/sft.yaml` and `tuneforge merge "
    "runs/sentiment_control/sc-sft --output runs/sentiment_control/sc-sft-merged` first"
)


@pytest.mark.parametrize("stage", ["reward", "dpo", "ppo"])
def test_validate_names_the_commands_that_make_a_chained_stage_model(stage, tmp_path, monkeypatch, capsys):
    """`tuneforge validate configs/sentiment_control/{reward,dpo,ppo}.yaml` on a fresh checkout (no runs/):
    the merged SFT policy they start from is missing, and the message names the two commands that write
    it, not "not a model folder". Run from a copy so that a local runs/ cannot hide the message."""
    from tuneforge.cli import main

    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    code = main(["validate", f"configs/sentiment_control/{stage}.yaml"])
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())  # rich wraps long lines
    assert code != 0
    assert (
        f"model.name: runs/sentiment_control/sc-sft-merged not found; it is written by an earlier step: "
        f"{SFT_MERGE}" in output
    )
    assert "not a model folder" not in output


def test_ppo_reward_model_names_the_reward_run(tmp_path, monkeypatch):
    """With the merged SFT policy in place, the PPO stage's missing reward model names the reward stage."""
    from tuneforge.methods.ppo.rewards import check_sources

    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    config = load_config("configs/sentiment_control/ppo.yaml")
    assert check_sources(config.reward.sources) == [
        "reward.sources[0].model: runs/sentiment_control/sc-reward: no such folder; it is written by an earlier "
        "step: run `tuneforge train configs/sentiment_control/reward.yaml` first"
    ]


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

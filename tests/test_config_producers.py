"""A model folder that an earlier step writes: the error names that step (config/producers.py).

Each test works in its own folder with a small configs/ tree, so only what is
written here can be a producer.
"""

from __future__ import annotations

import pytest
import yaml

from tuneforge.config.producers import producing_commands
from tuneforge.models.load import ModelNotFoundError, resolve_model


def write_config(root, relative: str, **fields) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"method": "sft", "data": {"format": "chat", "train": "train.jsonl"}, **fields}))


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """configs/chain/first.yaml writes out/chain/base (LoRA); full.yaml writes out/chain/full (no adapter);
    stem.yaml has no name, so its run folder is out/chain/stem. The run folders are outside runs/, so a
    hint can only come from the configs."""
    write_config(tmp_path, "configs/chain/first.yaml", name="base", output_dir="out/chain", adapter={"type": "lora"})
    write_config(tmp_path, "configs/chain/full.yaml", name="full", output_dir="out/chain")
    write_config(tmp_path, "configs/chain/stem.yaml", output_dir="out/chain", adapter={"type": "lora"})
    (tmp_path / "configs" / "accelerate").mkdir()
    (tmp_path / "configs" / "accelerate" / "fsdp.yaml").write_text("distributed_type: FSDP\n")
    (tmp_path / "configs" / "broken.yaml").write_text("method: [unclosed\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def message(name: str) -> str:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(name)
    return str(caught.value)


def test_a_run_folder_names_the_config_that_trains_it(chain):
    assert message("out/chain/base") == (
        "model.name: out/chain/base not found; it is written by an earlier step: "
        "run `tuneforge train configs/chain/first.yaml` first"
    )
    # a folder inside the run (its model/ or adapter/), and the same folder spelt another way
    assert "run `tuneforge train configs/chain/first.yaml` first" in message("out/chain/base/model")
    assert "run `tuneforge train configs/chain/first.yaml` first" in message(str(chain / "out/chain/../chain/base"))


def test_the_run_folder_name_defaults_to_the_config_file_stem(chain):
    assert producing_commands("out/chain/stem") == ["tuneforge train configs/chain/stem.yaml"]


def test_a_merged_folder_names_train_then_merge(chain):
    assert producing_commands("out/chain/base-merged") == [
        "tuneforge train configs/chain/first.yaml",
        "tuneforge merge out/chain/base --output out/chain/base-merged",
    ]
    assert message("out/chain/base-merged").endswith(
        "run `tuneforge train configs/chain/first.yaml` and "
        "`tuneforge merge out/chain/base --output out/chain/base-merged` first"
    )


def test_a_full_fine_tune_has_nothing_to_merge(chain):
    """full.yaml trains no adapter, so out/chain/full-merged is nobody's output: the plain message stays."""
    assert producing_commands("out/chain/full-merged") == []
    assert message("out/chain/full-merged") == (
        "model.name: out/chain/full-merged is not a model folder, a .gguf file or a hub id"
    )


def test_a_folder_under_runs_with_no_producer_says_a_run_writes_it(chain):
    text = message("runs/elsewhere/policy")
    assert text.startswith("model.name: runs/elsewhere/policy not found; it is under a runs/ folder")
    assert "no config under configs/ names it as its output" in text


def test_no_configs_folder_keeps_the_plain_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert producing_commands("out/chain/base") == []
    assert message("out/chain/base") == "model.name: out/chain/base is not a model folder, a .gguf file or a hub id"


def test_an_existing_folder_is_not_second_guessed(chain):
    """A folder that exists but is not a model keeps its own message even when a config writes it."""
    (chain / "out" / "chain" / "base").mkdir(parents=True)
    assert "has no config.json" in message("out/chain/base")


def test_check_config_reports_the_step_as_an_error_line(chain):
    """Called without `validate`'s tokenizer load in front (as a library), the checks list the message as
    one error instead of raising."""
    from tuneforge.checks import check_config
    from tuneforge.config import load_config

    config = load_config(
        data={
            "method": "sft",
            "model": {"name": "out/chain/base-merged"},
            "data": {"format": "chat", "train": "train.jsonl"},
        }
    )
    assert check_config(config, tokenizer=None).errors == [
        "model.name: out/chain/base-merged not found; it is written by an earlier step: run `tuneforge train "
        "configs/chain/first.yaml` and `tuneforge merge out/chain/base --output out/chain/base-merged` first"
    ]

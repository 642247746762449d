"""The CLI end to end on a tiny model: train, eval, generate, and error exits."""

import json

import pytest
import yaml
from conftest import chat_rows, write_jsonl

from tuneforge.cli import main


@pytest.fixture
def trained_run(tmp_path, tiny_model_dir, isolated_cache):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16, seed=1))
    evals = write_jsonl(tmp_path / "eval.jsonl", chat_rows(3, seed=2))
    config = {
        "method": "sft",
        "name": "cli",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_model_dir)},
        "adapter": {"type": "lora", "r": 4, "alpha": 8},
        "data": {"format": "chat", "train": str(train), "eval": str(evals), "max_length": 128},
        "training": {"max_steps": 2, "batch_size": 4},
    }
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return tmp_path, path


def test_train_refuses_to_overwrite_then_resume_message(trained_run, capsys):
    _tmp_path, path = trained_run
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already holds an earlier run" in err and "--resume" in err


def test_eval_scores_an_adapter_and_writes_json(trained_run, tiny_model_dir):
    tmp_path, _ = trained_run
    out = tmp_path / "scores.json"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(tmp_path / "runs/cli/adapter"),
            "--data",
            str(tmp_path / "eval.jsonl"),
            "--format",
            "chat",
            "--scorers",
            "exact_match",
            "contains",
            "--max-new-tokens",
            "4",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["metrics"]) >= {"exact_match", "contains", "eval_loss", "eval_perplexity"}
    assert len(result["samples"]) == 3


def test_generate_uses_adapter_base_from_its_config(trained_run, capsys):
    tmp_path, _ = trained_run
    # No --model: the base comes from adapter_config.json, the tokenizer from the adapter folder.
    assert (
        main(["generate", "--adapter", str(tmp_path / "runs/cli/adapter"), "reverse apple1", "--max-new-tokens", "3"])
        == 0
    )
    assert isinstance(capsys.readouterr().out, str)


def test_validate_bad_data_row_exits_nonzero_with_file_line(tmp_path, tiny_model_dir, capsys, isolated_cache):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(chat_rows(1)[0]) + "\n" + '{"messages": [{"role": "bot", "content": "x"}]}\n')
    config = {"method": "sft", "model": {"name": str(tiny_model_dir)}, "data": {"format": "chat", "train": str(data)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert f"{data}:2" in captured.err + captured.out


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "file not found" in capsys.readouterr().err

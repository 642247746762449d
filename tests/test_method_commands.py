"""The CLI names no method: a method's own commands (predict, score, embed) come from the registry, and
`tuneforge eval` scores held-out text through the method interface (``registry.text_scoring_method``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from conftest import write_jsonl

from tuneforge.cli import main
from tuneforge.config.schema import RunBase
from tuneforge.interface import CAUSAL_LM, Method
from tuneforge.registry import register_method, unregister_method


class ToyConfig(RunBase):
    method: Literal["toy-commands"]


@dataclass(frozen=True)
class ToyCommands(Method):
    """Only what registration needs: the commands are the point here."""

    name: str = "toy-commands"
    config_class: type = ToyConfig
    model_kinds: tuple = (CAUSAL_LM,)
    peft_task_type: str = "CAUSAL_LM"
    count_name: str = "examples"


def add_parser(sub) -> None:
    """This module is the toy method's command module (``register_method(..., commands=__name__)``)."""
    p = sub.add_parser("toy-hello", help="greet")
    p.add_argument("--who", required=True)
    p.set_defaults(func=lambda args: print(f"hello {args.who}") or 7)


@pytest.fixture
def toy_commands():
    register_method(ToyCommands(), commands=__name__)
    yield
    unregister_method("toy-commands")


def test_a_registered_method_brings_its_own_command(toy_commands, capsys):
    assert main(["toy-hello", "--who", "you"]) == 7
    assert capsys.readouterr().out == "hello you\n"


def test_an_unregistered_method_takes_its_command_with_it(capsys):
    register_method(ToyCommands(), commands=__name__)
    unregister_method("toy-commands")
    with pytest.raises(SystemExit) as stop:
        main(["toy-hello", "--who", "you"])
    assert stop.value.code == 2
    assert "invalid choice: 'toy-hello'" in capsys.readouterr().err


def test_the_built_in_method_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for verb in ("predict", "score", "embed"):
        assert verb in listed


def test_eval_loss_is_the_next_token_loss_of_the_rows(tiny_model_dir, tmp_path, isolated_cache):
    """One text row: `tuneforge eval`'s eval_loss (the text-scoring method's loss module) equals the mean
    next-token cross-entropy that transformers computes over the same tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.config.schema import DataConfig
    from tuneforge.data import load_splits

    data = write_jsonl(tmp_path / "text.jsonl", [{"text": "the river runs past the stone mill"}])
    out = tmp_path / "scores.json"
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--format", "text"]
    assert main([*args, "--scorers", "exact_match", "--output", str(out)]) == 0
    loss = json.loads(out.read_text())["metrics"]["eval_loss"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = DataConfig(format="text", train=str(data), eval=str(data), max_length=1024, packing=False)
    (row,) = load_splits(cfg, tokenizer).eval
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([row.input_ids]), labels=torch.tensor([row.labels])).loss
    assert loss == pytest.approx(float(expected), rel=1e-4)

"""The method seam: a method defined only here trains through the unchanged runner; the shared
checks (model family, output folder) and the divergence watch work for every method."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from conftest import chat_rows, write_jsonl
from safetensors.torch import load_file, save_file

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.config.schema import RunBase, Section
from tuneforge.interface import CAUSAL_LM, Batch, Method, MethodData
from tuneforge.methods import register_method, unregister_method
from tuneforge.runner import train_from_config
from tuneforge.training.divergence import DivergenceError, DivergenceWatch

SRC = Path(__file__).resolve().parent.parent / "src" / "tuneforge"


# ------------------------------------------------------------------ a toy method, defined only here


class ToyData(Section):
    points: int = 64


class ToyConfig(RunBase):
    method: Literal["toy-regression"]
    data: ToyData = ToyData()


@dataclass
class Point:
    x: list[float]
    y: float
    input_ids: tuple = (0, 0, 0, 0)  # rows report their length for batching and logs


class Regressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)


class SquaredError(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return ((self.model(x) - y) ** 2).sum(), y.new_tensor(y.numel())


@dataclass(frozen=True)
class ToyRegression(Method):
    """Fits y = w·x with squared error: nothing about it is a language model."""

    name: str = "toy-regression"
    config_class: type = ToyConfig
    model_kinds: tuple = (CAUSAL_LM,)
    peft_task_type: str = "FEATURE_EXTRACTION"
    count_name: str = "points"

    def check(self, config, tokenizer):
        return [], [], {"data": f"{config.data.points} points"}

    def load_data(self, config, tokenizer):
        g = torch.Generator().manual_seed(0)
        xs = torch.randn(config.data.points + 16, 4, generator=g)
        ys = xs @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        points = [Point(x.tolist(), float(y)) for x, y in zip(xs, ys)]
        return MethodData(train=points[:-16], eval=points[-16:])

    def build_model(self, config, data, *, dtype):
        return Regressor().to(dtype)

    def loss_module(self, config, model, data):
        return SquaredError(model)

    def collate(self, rows, tokenizer):
        return Batch(
            inputs={"x": torch.tensor([r.x for r in rows]), "y": torch.tensor([r.y for r in rows])},
            count=len(rows),
            tokens=4 * len(rows),
        )

    def chance_loss(self, config, model, data):
        return None

    def evaluate(self, model, ctx):
        from tuneforge.training.loop import heldout_mean_loss

        loss = heldout_mean_loss(
            SquaredError(model), ctx.data.eval, lambda r: self.collate(r, None), 8, ctx.accelerator
        )
        return {"metrics": {"eval_mse": round(loss, 6)}, "samples": []}

    def periodic_metrics(self, loss):
        return {"eval_mse": loss}

    def save(self, config, model, output_dir, tokenizer, *, state_dict=None):
        output_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in (state_dict or model.state_dict()).items()},
            str(output_dir / "regressor.safetensors"),
        )

    def load_output(self, config, output_dir, *, dtype):
        model = Regressor()
        model.load_state_dict(load_file(str(output_dir / "regressor.safetensors")))
        return model

    # Optional members: what the planner and the inference loaders ask of a method.

    def plan_profile(self, config):
        from tuneforge.planning.profile import PlanProfile

        return PlanProfile(sequences_per_item=1)

    def plan_extras(self, config, inputs):
        from tuneforge.planning.memory import Part
        from tuneforge.planning.profile import PlanExtras

        return PlanExtras(parts=[Part("lookup table", 4096, "the toy's own extra")], forward_tokens=TOY_FORWARDS[0])

    def inference_loader(self, adapter_folder):
        if not (adapter_folder / "regressor.safetensors").exists():
            return None

        def load(name, *, trust_remote_code=False):
            return self.load_output(None, Path(name), dtype=torch.float32)

        return load


TOY_FORWARDS = [0.0]  # forward-only token passes per step the toy declares (a test changes it)


@pytest.fixture
def toy_method():
    register_method(ToyRegression())
    yield
    unregister_method("toy-regression")


def test_a_method_defined_in_a_test_trains_through_the_unchanged_runner(tmp_path, tiny_model_dir, toy_method):
    config = load_config(
        data={
            "method": "toy-regression",
            "name": "toy",
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(tiny_model_dir)},
            "training": {"epochs": 20, "batch_size": 8, "learning_rate": 0.05, "save_every": 40},
            "eval": {},
        }
    )
    result = train_from_config(config)
    summary = result.summary
    assert summary["after"]["eval_mse"] < 0.1 * summary["before"]["eval_mse"]
    assert summary["train"]["points"] == 20 * 64 and summary["run"]["method"] == "toy-regression"
    run = result.run_dir
    assert (run / "model" / "regressor.safetensors").exists() and (run / "report.html").exists()
    assert "toy-regression" in (run / "report.html").read_text()
    assert (run / "checkpoints").exists()
    # --resume works for it too (no checkpoint code knows the method).
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 160 and metrics[-1]["loss"] < metrics[0]["loss"]


def test_a_toy_method_gets_its_plan_and_inference_loader_through_the_interface(tmp_path, tiny_model_dir, toy_method):
    from tuneforge.planning import build_plan
    from tuneforge.registry import inference_loader_for

    config = load_config(
        data={
            "method": "toy-regression",
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(tiny_model_dir)},
            "training": {"epochs": 20, "batch_size": 8},
        }
    )
    plan = build_plan(config)
    assert plan.method == "toy-regression" and plan.step.steps == 20 * 64 // 8  # the toy's own rows, counted
    assert {p.name: p.bytes for p in plan.parts}["lookup table"] == 4096  # its extras reach the plan
    TOY_FORWARDS[0] = 10_000.0
    try:
        heavier = build_plan(config)
    finally:
        TOY_FORWARDS[0] = 0.0
    assert heavier.flops_per_step > plan.flops_per_step and heavier.step_seconds > plan.step_seconds

    folder = tmp_path / "output"
    model = Regressor()
    ToyRegression().save(config, model, folder, None)
    loaded = inference_loader_for(folder)(str(folder))  # asked of every method; the toy claims its folder
    assert isinstance(loaded, Regressor) and torch.equal(loaded.linear.weight, model.linear.weight)


def test_unknown_method_suggests_a_known_one():
    from tuneforge.config import ConfigError

    with pytest.raises(ConfigError, match="did you mean `classify`"):
        load_config(data={"method": "clasify", "data": {"train": "x"}})


def test_runner_loop_and_checkpoints_import_no_method():
    """The skeleton is method-agnostic: no import of a method module (only the registry)."""
    for path in (
        SRC / "runner.py",
        SRC / "training" / "loop.py",
        SRC / "training" / "checkpoint.py",
        SRC / "eval" / "report.py",
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "methods" in node.module:
                assert node.module.rstrip(".").endswith("methods"), (path.name, node.module)


def test_every_method_has_its_folder():
    from tuneforge.methods import get_method, method_names

    for name in method_names():
        method = get_method(name)
        folder = SRC / "methods" / name
        assert (folder / "config.py").exists() and (folder / "recipe.py").exists(), name
        assert method.config_class.model_fields["method"].annotation.__args__ == (name,)


# ------------------------------------------------------------------ shared checks: one line, no traceback


def _tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizerFast(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])}
    ).save_pretrained(folder)
    BertModel(
        BertConfig(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(folder)
    return folder


def test_an_encoder_with_sft_gets_one_line(tmp_path, capsys):
    bert = _tiny_bert(tmp_path)
    train = write_jsonl(tmp_path / "c.jsonl", chat_rows(4))
    (tmp_path / "c.yaml").write_text(f"method: sft\nmodel: {{name: {bert}}}\ndata: {{format: chat, train: {train}}}\n")
    capsys.readouterr()  # drop what building the tiny model printed
    assert main(["validate", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert (
        "is an encoder (model_type: bert); method 'sft' needs a causal language model; "
        "methods that take an encoder: classify" in " ".join(err.split())
    )
    assert "Traceback" not in err


def test_output_dir_pointing_at_a_file(tmp_path, tiny_model_dir, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    train = write_jsonl(tmp_path / "c.jsonl", chat_rows(8))
    config = tmp_path / "c.yaml"
    config.write_text(
        f"method: sft\noutput_dir: {blocker}\nmodel: {{name: {tiny_model_dir}}}\n"
        f"data: {{format: chat, train: {train}, max_length: 128}}\n"
    )
    capsys.readouterr()
    for command in (["validate", str(config)], ["train", str(config)]):
        assert main(command) in (1, 2)
        err = " ".join(capsys.readouterr().err.split())
        assert f"output_dir: {blocker} is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------ divergence


def test_divergence_watch_rules():
    watch = DivergenceWatch(chance_loss=10.8, mode="stop")
    for step, loss in enumerate([2.5, 2.3, 2.2, 2.4, 2.1, 2.0], 1):  # healthy: nothing
        watch.observe(step, loss)
    with pytest.raises(DivergenceError, match="step 9") as info:
        for step, loss in enumerate([10.4, 10.6, 10.8], 7):  # back to the level of a uniform guess
            watch.observe(step, loss)
    assert "ln K = 10.80" in str(info.value) and "last good checkpoint" in str(info.value)
    # One bad batch is not a divergence.
    spiky = DivergenceWatch(chance_loss=None, mode="stop")
    for step, loss in enumerate([1.0, 0.9, 0.8, 3.5, 0.8, 0.7, 4.0, 0.7, 2.5, 2.6, 2.7], 1):
        spiky.observe(step, loss)
    # A run that starts at chance (a fresh classification head) is not flagged for staying there.
    fresh = DivergenceWatch(chance_loss=1.0986, mode="stop")
    for step in range(1, 10):
        fresh.observe(step, 1.0986)
    warn = DivergenceWatch(chance_loss=None, mode="warn")
    for step, loss in enumerate([1.0, 5.0, 6.0, 7.0, 8.0], 1):  # > 3 × 1.0 and > 1.0 + 2
        warn.observe(step, loss)
    assert warn.warning and "step 4" in warn.warning


def test_learning_rate_far_too_high_stops_the_run(tmp_path, tiny_model_dir, isolated_cache):
    """lr 3 without clipping blows the tiny model's loss up to hundreds without any NaN."""
    train = write_jsonl(tmp_path / "c.jsonl", chat_rows(64))
    raw = {
        "method": "sft",
        "name": "hot",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_model_dir)},
        "data": {"format": "chat", "train": str(train), "max_length": 128},
        "training": {
            "max_steps": 30,
            "batch_size": 4,
            "learning_rate": 3.0,
            "max_grad_norm": None,
            "save_every": 1,
            "keep_checkpoints": 10,
            "warmup_steps": 4,
            "scheduler": "constant",
        },
    }
    with pytest.raises(DivergenceError) as info:
        train_from_config(load_config(data=raw))
    message = str(info.value)
    assert "learning_rate=3 is too high" in message and "gradient clipping is off" in message
    from tuneforge.training.checkpoint import latest_checkpoint

    first_bad = info.value.first_bad_step
    assert info.value.step == first_bad + 2  # three bad steps in a row
    # Checkpoint s holds the weights that gave step s + 1's loss: resume only from before the first bad loss.
    assert latest_checkpoint(tmp_path / "runs" / "hot").name == f"step-{first_bad - 2:06d}"
    aside = sorted(p.name for p in (tmp_path / "runs" / "hot" / "checkpoints").glob("diverged-*"))
    assert aside == [f"diverged-step-{first_bad - 1:06d}"]  # none written while the losses were bad
    assert not (tmp_path / "runs" / "hot" / "model").exists()
    # warn: the run finishes and says so in its summary.
    raw.update(name="hot-warn", training={**raw["training"], "on_divergence": "warn", "max_steps": 8})
    summary = train_from_config(load_config(data=raw)).summary
    assert "diverged" in summary["train"]["divergence_warning"]

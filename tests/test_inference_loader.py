"""Loading the base under an adapter folder goes through the method interface: each method's
``inference_loader`` is asked (``registry.inference_loader_for``), a causal LM is the fallback; and the
adapter checks ask the method (``plan_profile``, ``check``) instead of naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest
from conftest import write_jsonl

from tuneforge.adapters.inference import base_loader_for
from tuneforge.config.schema import RunBase
from tuneforge.interface import CAUSAL_LM, Method
from tuneforge.models.load import load_causal_lm
from tuneforge.registry import get_method, inference_loader_for, register_method, unregister_method


class ToyConfig(RunBase):
    method: Literal["toy-loader"]


def load_toy_base(name: str, *, trust_remote_code: bool = False):
    return ("toy base", name)


@dataclass(frozen=True)
class ToyLoader(Method):
    """Claims the adapter folders it wrote (a ``toy.json`` beside the adapter)."""

    name: str = "toy-loader"
    config_class: type = ToyConfig
    model_kinds: tuple = (CAUSAL_LM,)
    peft_task_type: str = "CAUSAL_LM"
    count_name: str = "examples"

    def inference_loader(self, adapter_folder):
        return load_toy_base if (adapter_folder / "toy.json").exists() else None


@pytest.fixture
def toy_loader():
    register_method(ToyLoader())
    yield
    unregister_method("toy-loader")


def _adapter_folder(path, **files):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM"}))
    for name, content in files.items():
        (path / name).write_text(json.dumps(content))
    return path


def test_a_registered_method_loads_the_base_of_its_own_folders(toy_loader, tmp_path):
    mine = _adapter_folder(tmp_path / "mine", **{"toy.json": {}})
    other = _adapter_folder(tmp_path / "other")
    assert inference_loader_for(mine) is load_toy_base
    assert base_loader_for(mine)("base-name") == ("toy base", "base-name")
    assert base_loader_for(other) is load_causal_lm


def test_without_a_claim_or_a_folder_the_base_is_a_causal_lm(tmp_path):
    assert inference_loader_for(_adapter_folder(tmp_path / "plain")) is load_causal_lm
    assert base_loader_for(None) is load_causal_lm


def test_embedding_adapters_load_an_encoder(tmp_path):
    from tuneforge.methods.contrastive.model import load_encoder

    by_settings = _adapter_folder(tmp_path / "a", **{"tuneforge_embedding.json": {"pooling": "mean"}})
    by_task = tmp_path / "b"
    by_task.mkdir()
    (by_task / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION"}))
    assert inference_loader_for(by_settings) is load_encoder
    assert inference_loader_for(by_task) is load_encoder


def test_classifier_adapters_load_a_base_with_the_recorded_label_head(tmp_path, tiny_model_dir):
    folder = _adapter_folder(tmp_path / "cls", **{"classifier.json": {"labels": ["neg", "neu", "pos"]}})
    model = base_loader_for(folder)(str(tiny_model_dir))
    assert model.config.num_labels == 3
    assert [model.config.id2label[i] for i in range(3)] == ["neg", "neu", "pos"]


def test_the_adapter_dry_run_sizes_the_head_by_the_methods_plan_profile(tiny_model_dir):
    """validate's trainable-parameter count builds the head the method declares (PlanProfile.head_outputs):
    reward's one score against classify's two assumed labels, one hidden-size row of weights apart."""
    from transformers import AutoConfig

    from tuneforge.adapters.checks import dry_run_counts
    from tuneforge.config import load_config

    model_config = AutoConfig.from_pretrained(tiny_model_dir)
    trainable, configs = {}, {}
    for name in ("reward", "classify"):
        raw = {"method": name, "model": {"name": str(tiny_model_dir)}, "data": {"train": "x.jsonl"}}
        configs[name] = load_config(data={**raw, "adapter": {"type": "lora"}})
        trainable[name], _total = dry_run_counts(configs[name], get_method(name), model_config)
    assert get_method("reward").plan_profile(configs["reward"]).head_outputs == 1
    assert trainable["classify"] - trainable["reward"] == model_config.hidden_size


def test_contrastive_notes_bottleneck_adapters_in_its_own_check(tmp_path, isolated_cache):
    from test_contrastive import _tok, tiny_bert

    from tuneforge.config import load_config

    bert = tiny_bert(tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"anchor": "a"}])
    raw = {"method": "contrastive", "model": {"name": str(bert)}, "data": {"train": str(bad)}, "eval": None}
    method = get_method("contrastive")
    for kind, noted in (("bottleneck", True), ("lora", False)):
        config = load_config(data={**raw, "adapter": {"type": kind}})
        errors, warnings, _facts = method.check(config, _tok(bert))
        assert errors  # the bad row
        assert any("bottleneck adapters wrap modules named 'mlp'" in w for w in warnings) is noted

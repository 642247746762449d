"""Bottleneck adapters (ours): placement, identity init, training, save/load, disable, merge refusal."""

import json

import pytest
import torch
from tiny import tiny_model
from transformers import LlamaForSequenceClassification

from tuneforge.adapters.bottleneck import (
    ADAPTER_FILE,
    WEIGHTS_FILE,
    BottleneckAdapterModel,
    BottleneckMergeError,
    BottleneckWrapped,
    bottleneck_disabled,
    bottleneck_state_dict,
    inject_bottleneck,
    is_bottleneck_folder,
    load_bottleneck_state,
)
from tuneforge.adapters.config import BottleneckConfig

IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])


def cfg(**kw):
    return BottleneckConfig(type="bottleneck", **{"size": 8, **kw})


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("placement", ["series", "parallel"])
def test_identity_init_is_exactly_the_base_model(placement):
    base = logits(tiny_model())
    wrapped = BottleneckAdapterModel(tiny_model(), cfg(placement=placement))
    assert wrapped.wrapped == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert torch.equal(logits(wrapped), base)


@pytest.mark.parametrize("placement", ["series", "parallel"])
def test_random_init_changes_the_output_and_disable_restores_it(placement):
    base = logits(tiny_model())
    wrapped = BottleneckAdapterModel(tiny_model(), cfg(placement=placement, init="random"))
    assert not torch.allclose(logits(wrapped), base)
    with wrapped.disable_adapter():
        assert torch.equal(logits(wrapped), base)
    assert not torch.allclose(logits(wrapped), base)  # back on after the block


def test_series_adapts_the_mlp_output_parallel_the_mlp_input():
    seen = {}
    for placement in ("series", "parallel"):
        model = tiny_model()
        inject_bottleneck(model, cfg(placement=placement, init="random"))
        mlp = model.model.layers[0].mlp
        assert isinstance(mlp, BottleneckWrapped)
        mlp.base_layer.register_forward_hook(
            lambda m, a, out, p=placement: seen.update({(p, "in"): a[0], (p, "out"): out})
        )
        mlp.adapter.register_forward_hook(lambda m, a, out, p=placement: seen.update({(p, "adapter"): a[0]}))
        logits(model)
    assert torch.equal(seen["series", "adapter"], seen["series", "out"])
    assert torch.equal(seen["parallel", "adapter"], seen["parallel", "in"])
    assert not torch.allclose(seen["parallel", "in"], seen["parallel", "out"])


def test_trainable_parameter_count_by_hand():
    d, size, layers = 32, 8, 2
    model = BottleneckAdapterModel(tiny_model(layers=layers, hidden=d), cfg(size=size))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == layers * (d * size + size + size * d + d)
    base_total = sum(p.numel() for p in tiny_model(layers=layers, hidden=d).parameters())  # tied: counted once
    assert total == base_total + trainable
    assert len(bottleneck_state_dict(model)) == layers * 4


@pytest.mark.parametrize("placement", ["series", "parallel"])
def test_training_changes_every_adapter_parameter_and_no_frozen_one(placement):
    model = BottleneckAdapterModel(tiny_model(), cfg(placement=placement))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"base_model." + k for k in bottleneck_state_dict(model)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (n in trainable), n


def test_save_and_load_round_trip(tmp_path):
    model = BottleneckAdapterModel(tiny_model(), cfg(placement="series", init="random", activation="gelu"))
    model.save_pretrained(tmp_path)
    assert is_bottleneck_folder(tmp_path) and not is_bottleneck_folder(tmp_path / "nowhere")
    record = json.loads((tmp_path / ADAPTER_FILE).read_text())
    assert record["type"] == "bottleneck" and record["hidden_size"] == 32 and record["num_layers_wrapped"] == 2
    assert record["config"]["placement"] == "series" and record["format_version"] == 1
    assert "not" in (tmp_path / "README.md").read_text() and (tmp_path / WEIGHTS_FILE).is_file()
    loaded = BottleneckAdapterModel.from_pretrained(tiny_model(), tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = BottleneckAdapterModel.from_pretrained(tiny_model(), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == model.get_nb_trainable_parameters()[0]


def test_save_from_a_gathered_state_dict(tmp_path):
    model = BottleneckAdapterModel(tiny_model(), cfg(init="random"))
    full = {k: v.clone() for k, v in model.state_dict().items()}  # 'base_model.'-prefixed, like a gather
    model.save_pretrained(tmp_path, state_dict=full)
    loaded = BottleneckAdapterModel.from_pretrained(tiny_model(), tmp_path)
    assert torch.equal(logits(loaded), logits(model))


def test_strict_loading_names_the_problem():
    model = tiny_model()
    inject_bottleneck(model, cfg())
    state = {k: v.clone() for k, v in bottleneck_state_dict(model).items()}
    load_bottleneck_state(model, state)
    with pytest.raises(ValueError, match="missing.*model.layers.1.mlp.adapter.up.bias"):
        load_bottleneck_state(model, {k: v for k, v in state.items() if k != "model.layers.1.mlp.adapter.up.bias"})
    with pytest.raises(ValueError, match="unexpected.*extra"):
        load_bottleneck_state(model, {**state, "extra": torch.zeros(1)})
    state["model.layers.0.mlp.adapter.down.weight"] = torch.zeros(4, 32)
    with pytest.raises(ValueError, match="shape mismatch.*down.weight"):
        load_bottleneck_state(model, state)


def test_disabled_context_on_an_injected_model():
    model = tiny_model()
    base = logits(model)
    inject_bottleneck(model, cfg(init="random"))
    with bottleneck_disabled(model):
        assert torch.equal(logits(model), base)
    assert not torch.allclose(logits(model), base)


def test_merge_and_unload_refuses():
    model = BottleneckAdapterModel(tiny_model(), cfg())
    with pytest.raises(BottleneckMergeError, match="merge"):
        model.merge_and_unload()


def test_loading_onto_another_hidden_size_is_refused(tmp_path):
    BottleneckAdapterModel(tiny_model(hidden=32), cfg()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden size 32.*hidden size is 64"):
        BottleneckAdapterModel.from_pretrained(tiny_model(hidden=64), tmp_path)


def test_a_folder_without_the_adapter_file_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"no {ADAPTER_FILE}.*peft"):
        BottleneckAdapterModel.from_pretrained(tiny_model(), tmp_path)


def test_no_matching_target_lists_module_names():
    with pytest.raises(ValueError, match=r"\['ffn'\] matched no module.*model.embed_tokens"):
        inject_bottleneck(tiny_model(), cfg(target_modules=["ffn"]))
    model = tiny_model()
    inject_bottleneck(model, cfg(target_modules=["layers.1.mlp"]))
    assert isinstance(model.model.layers[1].mlp, BottleneckWrapped)
    assert not isinstance(model.model.layers[0].mlp, BottleneckWrapped)


def test_modules_to_save_trains_and_round_trips_the_classification_head(tmp_path):
    def classifier():
        config = tiny_model().config
        config.num_labels = 2
        torch.manual_seed(1)
        return LlamaForSequenceClassification(config).eval()

    model = BottleneckAdapterModel(classifier(), cfg(), modules_to_save=["score"])
    head = model.base_model.score.weight
    assert head.requires_grad
    before = head.detach().clone()
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        model(input_ids=IDS, labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
        opt.zero_grad()
    assert not torch.equal(head, before)
    model.eval()
    model.save_pretrained(tmp_path)
    fresh = classifier()
    assert not torch.equal(fresh.score.weight, head)
    loaded = BottleneckAdapterModel.from_pretrained(fresh, tmp_path)
    assert torch.equal(loaded.base_model.score.weight, head)
    assert torch.equal(logits(loaded), logits(model))


def test_generate_and_peft_like_attributes():
    model = BottleneckAdapterModel(tiny_model(), cfg(init="random"))
    assert model.config.hidden_size == 32 and model.base_model_prefix == "model"
    assert model.get_output_embeddings() is model.get_base_model().lm_head
    out = model.generate(IDS[:1], max_new_tokens=4, do_sample=False, pad_token_id=2)
    assert out.shape == (1, IDS.shape[1] + 4)

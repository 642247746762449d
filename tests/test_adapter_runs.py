"""Adapter types and quantized bases through the real train path on a tiny saved model."""

from __future__ import annotations

import json

import pytest
import torch
from test_runs import make_config

from tuneforge.checks import ChecksFailed
from tuneforge.runner import train_from_config

RUN_CASES = {
    "prefix": {"type": "prefix_tuning", "num_virtual_tokens": 4},
    "prompt_text": {"type": "prompt_tuning", "num_virtual_tokens": 4, "init": "text", "init_text": "Answer:"},
    "bottleneck": {"type": "bottleneck", "placement": "parallel", "size": 8},
    "mam": {"type": "mam", "size": 8, "num_virtual_tokens": 4},
    "adalora": {"type": "adalora", "init_r": 6, "target_r": 2, "tinit": 0.1, "tfinal": 0.2},
    "partial": {"type": "partial", "top_k_layers": 1},
    "pissa": {"type": "lora", "r": 4, "alpha": 8, "init": "pissa"},
}


def _train(tmp_path, model_dir, adapter, name, **extra):
    data = {"packing": False} if adapter["type"] in ("prefix_tuning", "prompt_tuning", "p_tuning", "mam") else {}
    config = make_config(
        tmp_path, model_dir, name=name, adapter=False, extra={"adapter": adapter, "data": data, **extra}
    )
    return train_from_config(config)


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_adapter_type_trains_and_its_output_reloads(case, tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.registry import get_method

    result = _train(tmp_path, tiny_model_dir, RUN_CASES[case], case)
    summary = result.summary
    train = summary["train"]
    assert summary["run"]["adapter"] == RUN_CASES[case]["type"]
    assert 0 < train["trainable_parameters"] < train["total_parameters"]
    assert train["trainable_percent"] == round(100 * train["trainable_parameters"] / train["total_parameters"], 4)
    assert train["optimizer_state_bytes"] == 2 * train["trainable_bytes"]
    expected_folder = "model" if case == "partial" else "adapter"
    assert result.output_dir.name == expected_folder
    config = json.loads((result.run_dir / "summary.json").read_text())
    assert config["train"]["trainable_parameters"] == train["trainable_parameters"]
    # The saved output, reloaded as the runner's own "after" evaluation would, gives the trained logits.
    import yaml

    from tuneforge.config import load_config

    run_config = load_config(data=yaml.safe_load((result.run_dir / "config.yaml").read_text()))
    reloaded = get_method("sft").load_output(run_config, result.output_dir, dtype=torch.float32).eval()
    trained = result.model.eval()
    ids = torch.randint(3, 200, (1, 9))
    with torch.no_grad():
        a = reloaded(input_ids=ids).logits[:, -9:]
        b = trained(input_ids=ids).logits[:, -9:]
    assert torch.allclose(a, b, atol=1e-4), case


def test_adalora_prunes_its_rank_budget(tmp_path, tiny_model_dir, isolated_cache):
    result = _train(
        tmp_path, tiny_model_dir, RUN_CASES["adalora"], "budget", training={"max_steps": 10, "save_every": None}
    )
    peft_config = result.model.peft_config["default"]
    assert peft_config.total_step == 10
    kept = sum(
        int((m.lora_E["default"] != 0).sum())
        for m in result.model.modules()
        if hasattr(m, "lora_E") and "default" in m.lora_E
    )
    layers = sum(1 for m in result.model.modules() if hasattr(m, "lora_E") and "default" in m.lora_E)
    # Budget: target_r per layer on average, down from init_r.
    assert kept <= 2 * layers < 6 * layers


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_base_with_lora_reduces_the_loss(bits, tmp_path, isolated_cache):
    from tiny import tiny_model, tiny_tokenizer

    # bitsandbytes' CPU 4-bit inference kernel needs layers at least one quantisation block (64) wide.
    model_dir = tmp_path / "tiny-64"
    tok = tiny_tokenizer()
    tiny_model(len(tok), hidden=64).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    result = _train(
        tmp_path,
        model_dir,
        {"type": "lora", "r": 4, "alpha": 8},
        f"q{bits}",
        model={"quantize": bits},
        training={"max_steps": 8, "learning_rate": 1e-2, "save_every": None},
    )
    losses = [
        json.loads(line)["loss"]
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert losses[-1] < losses[0]
    assert result.summary["run"]["quantize"] == bits
    quantized = [
        m
        for m in result.model.modules()
        if "bnb" in type(m).__module__ or "Linear8bitLt" in type(m).__name__ or "Linear4bit" in type(m).__name__
    ]
    assert quantized, "the base was not quantized"


@pytest.mark.parametrize(
    "adapter,extra,message",
    [
        ({"type": "prefix_tuning"}, {"data": {"packing": True}}, "set data.packing: false"),
        (None, {"model": {"quantize": "4bit"}}, "add an adapter"),
        ({"type": "partial", "top_k_layers": 1}, {"model": {"quantize": "8bit"}}, "trains the base's own weights"),
        ({"type": "bitfit"}, {}, "no biases"),
        ({"type": "lora", "target_modules": ["qq_proj"]}, {}, "qq_proj"),
        ({"type": "lora", "init": "pissa"}, {"model": {"quantize": "4bit"}}, "rewrites the base weights"),
    ],
)
def test_validation_refuses_what_cannot_work(adapter, extra, message, tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    config = make_config(
        tmp_path, tiny_model_dir, adapter=False, extra={**({"adapter": adapter} if adapter else {}), **extra}
    )
    report = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir)))
    assert any(message in e for e in report.errors), report.errors
    with pytest.raises(ChecksFailed):
        report.raise_if_errors()


def test_validate_reports_the_exact_count_without_weights(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    config = make_config(tmp_path, tiny_model_dir, adapter=False, extra={"adapter": {"type": "ia3"}})
    report = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir)))
    assert not report.errors
    result = train_from_config(config)
    assert report.facts["trainable_parameters"] == result.summary["train"]["trainable_parameters"]


def test_adapter_config_errors_name_the_key_once():
    from tuneforge.config import ConfigError, load_config

    base = {"method": "sft", "data": {"format": "chat", "train": "x.jsonl"}}
    cases = [
        ({"type": "lora", "target_modules": "q_proj"}, "adapter.target_modules: expected a list"),
        ({"type": None}, "adapter.type: missing or empty"),
        ({"type": "lorra"}, "did you mean `lora`"),
        ({"type": "ia3", "r": 4}, "adapter.r: unknown key"),
    ]
    for adapter, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(data={**base, "adapter": adapter})
        assert len(caught.value.problems) == 1 and message in caught.value.problems[0], caught.value.problems


def test_pissa_with_dora_and_adalora_for_classify_are_refused(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    config = make_config(
        tmp_path, tiny_model_dir, adapter=False, extra={"adapter": {"type": "lora", "init": "pissa", "use_dora": True}}
    )
    report = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir)))
    assert any("drop DoRA's magnitudes" in e for e in report.errors), report.errors


def test_adalora_resume_is_refused_with_the_reason(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.training.checkpoint import CheckpointMismatch

    result = _train(tmp_path, tiny_model_dir, RUN_CASES["adalora"], "ada")
    config = make_config(tmp_path, tiny_model_dir, name="ada", adapter=False, extra={"adapter": RUN_CASES["adalora"]})
    with pytest.raises(CheckpointMismatch, match="rank allocator"):
        train_from_config(config, resume=True, run_dir=result.run_dir)


def test_adalora_orthogonality_term_only_while_training():
    from pydantic import TypeAdapter
    from tiny import tiny_model

    from tuneforge.adapters import attach_adapter
    from tuneforge.adapters.config import AdapterConfig
    from tuneforge.methods.causal_lm.loss import CausalLMLoss

    adapted = attach_adapter(
        tiny_model(layers=1),
        TypeAdapter(AdapterConfig).validate_python({"type": "adalora", "init_r": 4, "target_r": 2}),
        total_steps=20,
    )
    loss = CausalLMLoss(adapted.model)
    ids = torch.randint(3, 200, (2, 8))
    positions = torch.arange(8).expand(2, 8)
    loss.train()
    with torch.no_grad():
        trained, _n = loss(input_ids=ids, labels=ids, position_ids=positions)
    loss.eval()
    with torch.no_grad():
        held, _ = loss(input_ids=ids, labels=ids, position_ids=positions)
    assert trained > held  # the regulariser (> 0 at a random init) counts in training only

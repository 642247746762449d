"""Every adapter type through the same checks (in the spirit of peft's own test matrix).

For each ``adapter.type``: what the method promises at its default init (the
base model exactly, or not), that a non-trivial init changes the output, that
training changes every trainable parameter and no frozen one, that the saved
output round-trips, that disabling the adapter restores the base, merging where
the type can merge; then exact parameter counts, on a tiny model by hand and on
the embedded model's shape (built on the meta device) from METHODS.md.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from tiny import tiny_model

from tuneforge.adapters import adapters_disabled, attach_adapter, load_adapter
from tuneforge.adapters.config import MERGEABLE, AdapterConfig
from tuneforge.methods.causal_lm.loss import CausalLMLoss
from tuneforge.models.load import count_parameters

HIDDEN, LAYERS = 32, 2

# Small settings that fit the tiny model (hidden 32, intermediate 64, 4 heads, 2 KV heads of 8).
CASES = {
    "lora": {"type": "lora", "r": 4, "alpha": 8},
    "lora_rslora": {"type": "lora", "r": 4, "alpha": 8, "use_rslora": True},
    "dora": {"type": "lora", "r": 4, "alpha": 8, "use_dora": True},
    "lora_gaussian": {"type": "lora", "r": 4, "alpha": 8, "init": "gaussian"},
    "lora_pissa": {"type": "lora", "r": 4, "alpha": 8, "init": "pissa"},
    "lora_olora": {"type": "lora", "r": 4, "alpha": 8, "init": "olora"},
    "loha": {"type": "loha", "r": 4},
    "lokr": {"type": "lokr", "r": 4},
    "vera": {"type": "vera", "r": 8},
    "adalora": {"type": "adalora", "init_r": 6, "target_r": 4},
    "oft": {"type": "oft", "block_size": 8},
    "ia3": {"type": "ia3"},
    "bottleneck_series": {"type": "bottleneck", "placement": "series", "size": 8},
    "bottleneck_parallel": {"type": "bottleneck", "placement": "parallel", "size": 8},
    "prompt_tuning": {"type": "prompt_tuning", "num_virtual_tokens": 5},
    "prefix_tuning": {"type": "prefix_tuning", "num_virtual_tokens": 5},
    "prefix_tuning_projection": {
        "type": "prefix_tuning",
        "num_virtual_tokens": 5,
        "projection": True,
        "projection_hidden_size": 16,
    },
    "p_tuning": {"type": "p_tuning", "num_virtual_tokens": 5, "encoder_hidden_size": 16},
    "layernorm": {"type": "layernorm"},
    "partial": {"type": "partial", "top_k_layers": 1},
    "mam": {"type": "mam", "size": 8, "num_virtual_tokens": 5},
}
# Types whose default init leaves the model's function unchanged (the method's own promise).
# (gaussian init draws A from a normal, B stays zero.) PiSSA / OLoRA move the principal part of W into A·B and subtract it from W: equal up to float error.
IDENTITY_AT_INIT = {
    "lora",
    "lora_rslora",
    "dora",
    "lora_gaussian",
    "loha",
    "lokr",
    "vera",
    "adalora",
    "oft",
    "ia3",
    "bottleneck_series",
    "bottleneck_parallel",
    "layernorm",
    "partial",
}
NEAR_IDENTITY_AT_INIT = {"lora_pissa", "lora_olora"}
SOFT_PROMPT_CASES = {"prompt_tuning", "prefix_tuning", "prefix_tuning_projection", "p_tuning", "mam"}
TRAINS_BASE_WEIGHTS = {"partial"}  # selective: nothing to disable, the output is a full model


def _cfg(case: str):
    return TypeAdapter(AdapterConfig).validate_python(CASES[case])


def _ids(seed: int = 1, batch: int = 2, length: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 250, (batch, length), generator=g)


def _logits(model, ids) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids).logits
    return out[:, -ids.shape[1] :]  # prompt / p-tuning return logits for their virtual positions too


def _adapted(case: str, seed: int = 0):
    return attach_adapter(tiny_model(layers=LAYERS, hidden=HIDDEN, seed=seed), _cfg(case), total_steps=50)


def _perturb(model, seed: int = 3) -> None:
    """A non-trivial init: move every trainable parameter away from its (often identity) start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_init_and_non_trivial_init(case):
    ids = _ids()
    base_logits = _logits(tiny_model(layers=LAYERS, hidden=HIDDEN), ids)
    adapted = _adapted(case)
    start = _logits(adapted.model, ids)
    if case in IDENTITY_AT_INIT:
        assert torch.allclose(start, base_logits, atol=1e-6, rtol=0), case
    elif case in NEAR_IDENTITY_AT_INIT:
        assert torch.allclose(start, base_logits, atol=1e-4, rtol=0), case
    else:
        assert not torch.allclose(start, base_logits, atol=1e-4), f"{case}: soft prompts change the output"
    _perturb(adapted.model)
    assert not torch.allclose(_logits(adapted.model, ids), base_logits, atol=1e-4), case


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_changes_every_trainable_parameter_and_no_frozen_one(case):
    adapted = _adapted(case)
    model = adapted.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, case
    loss_module = CausalLMLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = _ids(length=10)
    model.train()
    for step in range(3):
        loss, count = loss_module(input_ids=ids, labels=ids, position_ids=torch.arange(10).expand(2, 10))
        (loss / count).backward()
        optimizer.step()
        if adapted.after_optimizer_step:
            adapted.after_optimizer_step(step + 1)
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        assert changed == (name in trainable), f"{case}: {name} {'changed' if changed else 'did not change'}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_load_round_trip_and_disable(case, tmp_path):
    ids = _ids()
    adapted = _adapted(case)
    _perturb(adapted.model)
    trained = _logits(adapted.model, ids)
    base_logits = _logits(tiny_model(layers=LAYERS, hidden=HIDDEN), ids)
    if case in TRAINS_BASE_WEIGHTS:
        adapted.model.save_pretrained(tmp_path, safe_serialization=True)
        adapted.save(tmp_path)
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
        assert (tmp_path / "trained_parameters.json").exists()
    else:
        adapted.saver.save_pretrained(tmp_path, safe_serialization=True)
        adapted.save(tmp_path)
        reloaded = load_adapter(tiny_model(layers=LAYERS, hidden=HIDDEN), tmp_path)
        with adapters_disabled(reloaded):
            assert torch.allclose(_logits(reloaded, ids), base_logits, atol=1e-6, rtol=0), f"{case}: disable"
    assert torch.allclose(_logits(reloaded, ids), trained, atol=1e-5, rtol=0), case


@pytest.mark.parametrize("case", sorted(c for c in CASES if _cfg(c).type in MERGEABLE))
def test_merge_equals_unmerged(case):
    ids = _ids()
    adapted = _adapted(case)
    _perturb(adapted.model, seed=5)
    unmerged = _logits(adapted.model, ids)
    merged = adapted.model.merge_and_unload()
    assert torch.allclose(_logits(merged, ids), unmerged, atol=1e-4, rtol=0), case
    assert not any("lora" in n or "hada" in n or "ia3" in n for n, _ in merged.named_parameters())


@pytest.mark.parametrize("case", sorted(SOFT_PROMPT_CASES))
def test_loss_module_matches_peft_forward_for_soft_prompts(case):
    """CausalLMLoss runs soft prompts through peft's forward and must give peft's own loss."""
    adapted = _adapted(case)
    _perturb(adapted.model)
    model = adapted.model.eval()
    ids = _ids(length=10)
    # peft's prompt-tuning loss also predicts the first real token from the last virtual one;
    # tuneforge's rows never carry a loss on their first token, so mask it for the comparison.
    labels = ids.clone()
    labels[:, 0] = -100
    with torch.no_grad():
        loss, count = CausalLMLoss(model)(input_ids=ids, labels=labels, position_ids=torch.arange(10).expand(2, 10))
        reference = model(input_ids=ids, labels=labels).loss
    assert int(count) == 2 * 9
    assert torch.allclose(loss / count, reference, atol=1e-5), case


# --------------------------------------------------------------------------- counts


def test_counts_on_the_tiny_model_by_hand():
    # hidden 32, intermediate 64, q/o 32→32, k/v 32→16, gate/up 32→64, down 64→32, 2 layers
    per_layer_lora_all = 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 2 + (64 + 32))  # r=4
    counts = {
        "lora": per_layer_lora_all * LAYERS,
        "ia3": (16 + 16 + 64) * LAYERS,  # k out, v out, down in
        "prompt_tuning": 5 * 32,
        "prefix_tuning": 5 * LAYERS * 2 * 16,  # GQA: prefixes are num_kv_heads × head_dim wide
        "bottleneck_parallel": LAYERS * (32 * 8 + 8 + 8 * 32 + 32),
        "layernorm": (2 * LAYERS + 1) * 32,
    }
    for case, expected in counts.items():
        assert count_parameters(_adapted(case).model)[0] == expected, case


def _embedded_shape_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.mark.parametrize(
    "adapter,expected",
    [
        ({"type": "lora", "r": 8, "target_modules": ["q_proj", "v_proj"]}, 460_800),
        ({"type": "lora", "r": 8}, 2_442_240),
        ({"type": "lora", "r": 16}, 4_884_480),
        ({"type": "lora", "r": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": True}, 483_840),
        ({"type": "ia3"}, 57_600),
        ({"type": "prompt_tuning", "num_virtual_tokens": 20}, 11_520),
        ({"type": "prefix_tuning", "num_virtual_tokens": 20}, 230_400),
    ],
)
def test_counts_for_the_embedded_model_shape(adapter, expected):
    """METHODS.md's table for SmolLM2-135M, counted on the meta device (no weights needed)."""
    model = _embedded_shape_model()
    assert count_parameters(model) == (0, 134_515_008) or count_parameters(model)[1] == 134_515_008
    adapted = attach_adapter(model, TypeAdapter(AdapterConfig).validate_python(adapter))
    trainable, total = count_parameters(adapted.model)
    assert trainable == expected
    assert total == 134_515_008 + expected
    if adapted.saver is not None and hasattr(adapted.model, "get_nb_trainable_parameters"):
        assert adapted.model.get_nb_trainable_parameters() == (trainable, total)  # counted as peft does


def test_bitfit_on_a_model_without_biases_is_refused():
    with pytest.raises(ValueError, match="no biases"):
        attach_adapter(tiny_model(layers=1), TypeAdapter(AdapterConfig).validate_python({"type": "bitfit"}))


def test_bitfit_trains_only_biases_where_there_are_some():
    from transformers import LlamaForCausalLM

    config = tiny_model(layers=1).config
    config.attention_bias = True
    model = LlamaForCausalLM(config)
    adapted = attach_adapter(model, TypeAdapter(AdapterConfig).validate_python({"type": "bitfit"}))
    names = [n for n, p in adapted.model.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(".bias") for n in names)
    assert adapted.trained_names == names and not adapted.saves_adapter


def test_partial_selects_the_top_blocks_and_patterns():
    model = tiny_model(layers=3)
    cfg = TypeAdapter(AdapterConfig).validate_python(
        {"type": "partial", "top_k_layers": 1, "patterns": ["model.layers.0.mlp.*"]}
    )
    names = attach_adapter(model, cfg).trained_names
    assert any(n.startswith("model.layers.2.") for n in names)
    assert not any(n.startswith("model.layers.1.") for n in names)
    assert {n for n in names if n.startswith("model.layers.0.")} == {
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    }
    assert "model.norm.weight" in names
    with pytest.raises(ValueError, match="matches no parameter"):
        attach_adapter(
            tiny_model(layers=1),
            TypeAdapter(AdapterConfig).validate_python({"type": "partial", "patterns": ["*.nothing"]}),
        )


@pytest.mark.parametrize("case", sorted(SOFT_PROMPT_CASES))
def test_generation_with_soft_prompts_equals_greedy_full_forwards(case):
    """tuneforge's generate() must give what step-by-step full forwards give (peft's cached path did not)."""
    from tiny import tiny_tokenizer

    from tuneforge.eval.generation import generate

    adapted = _adapted(case)
    _perturb(adapted.model, seed=11)
    model = adapted.model.eval()
    tok = tiny_tokenizer()
    prompts = [[5, 40, 41, 42, 43, 44], [7, 50, 51]]
    got = generate(model, tok, prompts, max_new_tokens=6, batch_size=2, stop_token_ids=[2], progress=False)
    for prompt, text in zip(prompts, got):
        cur, new = torch.tensor([prompt]), []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(input_ids=cur).logits[0, -1].argmax())
                if nxt == 2:
                    break
                new.append(nxt)
                cur = torch.cat([cur, torch.tensor([[nxt]])], 1)
        assert text == tok.decode(new, skip_special_tokens=True), case

"""`method: dpo` on tiny in-process models: values at initialisation, the reference, an independent
computation with plain transformers, learning an easy preference, every variant, full fine-tuning,
resume, and config / data refusals."""

from __future__ import annotations

import json
import math
import os
import random
import signal

import pytest
import torch
from conftest import write_jsonl

from tuneforge.config import ConfigError, load_config
from tuneforge.methods.dpo.recipe import METHOD
from tuneforge.methods.preference.losses import LOSS_NAMES
from tuneforge.runner import train_from_config

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "candle", "mango", "zebra", "olive", "maple"]


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    """An easy preference: every chosen response starts with the same marker, every rejected one does not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w = rng.choice(WORDS) + str(rng.randint(0, 99))
        rows.append({"prompt": f"describe {w}", "chosen": f"ok: {w} is fine", "rejected": f"{w[::-1]} no"})
    return rows


def dpo_config(tmp_path, model_dir, *, adapter=True, name="dpo", loss=None, training=None, n_train=24, **sections):
    raw = {
        "method": "dpo",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", pair_rows(n_train, 1))),
            "eval": str(write_jsonl(tmp_path / "eval.jsonl", pair_rows(8, 2))),
            "max_length": 128,
        },
        "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-3, "seed": 1, **(training or {})},
        "loss": loss or {},
        "eval": {"batch_size": 8, "samples_in_report": 0},
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}
    raw.update(sections)
    return load_config(data=raw)


def prepared(config, *, perturb: bool = False):
    """(tokenizer, data, model with its adapter, loss module) as the runner builds them."""
    from tuneforge.adapters import attach_adapter
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(config.model.name)
    data = METHOD.load_data(config, tokenizer)
    model = METHOD.build_model(config, data, dtype=torch.float32)
    if config.adapter is not None:
        model = attach_adapter(model, config.adapter, task_type=METHOD.peft_task_type).model
        if perturb:  # B ≠ 0: the policy differs from the base
            torch.manual_seed(0)
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(param, std=0.2)
    module = METHOD.loss_module(config, model, data)
    return tokenizer, data, model, module


def batch_of(tokenizer, rows):
    return METHOD.collate(rows, tokenizer).inputs


# ------------------------------------------------------------------ values at initialisation


@pytest.mark.parametrize(
    ("loss", "expected"),
    [("dpo", math.log(2)), ("cdpo", math.log(2)), ("robust", math.log(2)), ("ipo", 25.0), ("hinge", 1.0), ("kto", 0.5)],
)
def test_loss_at_initialisation(tmp_path, tiny_model_dir, loss, expected):
    """LoRA's B = 0: policy = reference (the base with the adapter off), every Δ = 0."""
    tokenizer, data, _, module = prepared(dpo_config(tmp_path, tiny_model_dir, loss={"type": loss}))
    module.train()
    total, count = module(**batch_of(tokenizer, data.train[:6]))
    assert int(count) == 6
    assert float(total.detach()) / 6 == pytest.approx(expected, abs=1e-6)
    metrics = module.step_metrics()
    assert metrics["rewards/accuracies"] == 0.0 and metrics["rewards/margins"] == 0.0
    assert metrics["rewards/chosen"] == 0.0 and metrics["logps/chosen"] < 0
    assert module.step_metrics() == {}  # reset after each call


def test_sft_term_adds_the_chosen_responses_per_token_nll(tmp_path, tiny_model_dir):
    from tuneforge.methods.dpo.logps import frozen_logps

    tokenizer, data, model, module = prepared(dpo_config(tmp_path, tiny_model_dir, loss={"sft_weight": 0.5}))
    module.train()
    batch = batch_of(tokenizer, data.train[:4])
    total, _ = module(**batch)
    metrics = module.step_metrics()
    sums, counts = frozen_logps(model, batch)
    assert metrics["loss/sft"] == pytest.approx(float((-sums[:4] / counts[:4]).mean()), abs=1e-5)
    assert float(total.detach()) / 4 == pytest.approx(math.log(2) + 0.5 * metrics["loss/sft"], abs=1e-5)


def test_kto_takes_pairs_as_desirable_and_undesirable_examples(tmp_path, tiny_model_dir):
    config = dpo_config(tmp_path, tiny_model_dir, loss={"type": "kto"})
    from tuneforge.models.load import load_tokenizer

    data = METHOD.load_data(config, load_tokenizer(config.model.name))
    assert len(data.train) == 48 and data.facts["desirable"] == 24 and data.facts["undesirable"] == 24
    row = data.train[0]
    assert row.kl.input_ids[: len(row.item.prompt_ids)] == row.item.prompt_ids  # own prompt, another response
    assert row.kl.input_ids != row.item.response.input_ids


# ------------------------------------------------------------------ the reference


def test_adapter_disabled_reference_equals_the_base_models_logps(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tuneforge.methods.dpo.logps import base_logps, frozen_logps, response_logps

    tokenizer, data, model, _ = prepared(dpo_config(tmp_path, tiny_model_dir), perturb=True)
    batch = batch_of(tokenizer, data.train[:4])
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected, counts = response_logps(plain, batch)
    got, got_counts = base_logps(model, batch)
    assert torch.equal(counts, got_counts)
    assert torch.allclose(got, expected, atol=1e-5)
    policy, _ = frozen_logps(model, batch)
    assert (policy - expected).abs().max() > 1e-2  # the adapter does change the policy
    model.train()  # the reference runs in eval mode and gives the caller's mode back
    base_logps(model, batch)
    assert model.training


# ------------------------------------------------------------------ the shared-prompt pair layout


def _layout_logps_and_grads(config, attn: str):
    """(summed log-probs (2B,), counts, {lora param: grad}, batch) of the perturbed policy on every training
    pair, batched as the config's ``pair_forward`` says, with the given attention implementation."""
    from tuneforge.methods.dpo.logps import response_logps

    torch.manual_seed(0)  # the same LoRA A for both layouts
    tokenizer, data, model, _ = prepared(config, perturb=True)
    model.get_base_model().config._attn_implementation = attn
    batch = batch_of(tokenizer, data.train)
    sums, counts = response_logps(model, batch)
    (sums * torch.linspace(0.5, 1.5, sums.numel())).sum().backward()  # a gradient that weighs every sequence
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sums.detach(), counts, grads, batch


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-masked", "eager"])
def test_shared_prompt_layout_equals_separate_rows(tmp_path, tiny_model_dir, attn, monkeypatch):
    """One row per pair (prompt once) gives the log-probs and gradients of two full rows, whichever way the
    row attends (sdpa on CPU: two calls per row, dpo/attention.py; sdpa-masked: the dense segment mask, what
    CUDA runs; eager: the additive mask): pairs of different lengths, so rows carry padding, and the rejected
    response's first token predicted from the prompt's last position."""
    import tuneforge.methods.dpo.logps as logps

    used, expect_pair_attention = [], attn == "sdpa"
    if attn == "sdpa-masked":
        monkeypatch.setattr(logps, "PAIR_ATTENTION_DEVICES", ())
        attn = "sdpa"
    else:
        switch = logps.pair_attention_for
        monkeypatch.setattr(logps, "pair_attention_for", lambda config: used.append(1) or switch(config))
    rows = [
        {"prompt": "describe the weather in three words please", "chosen": "sunny and warm", "rejected": "x"},
        {"prompt": "hi", "chosen": "a", "rejected": "a much longer answer that needs several tokens"},
        {"prompt": "name a fruit", "chosen": "mango, ripe and sweet", "rejected": "stone"},
    ]
    train = write_jsonl(tmp_path / "layout.jsonl", rows)
    got = {}
    for layout in ("separate", "shared_prompt"):
        config = dpo_config(
            tmp_path,
            tiny_model_dir,
            pair_forward=layout,
            eval=None,
            data={"train": str(train), "eval_fraction": 0.0, "max_length": 128},
        )
        got[layout] = _layout_logps_and_grads(config, attn)
    (sep, sep_n, sep_g, sep_batch), (sha, sha_n, sha_g, sha_batch) = (got["separate"], got["shared_prompt"])
    assert "segment_ids" in sha_batch and "segment_ids" not in sep_batch
    assert sha_batch["input_ids"].numel() < sep_batch["input_ids"].numel()  # the prompt once
    assert torch.equal(sep_n, sha_n)
    assert torch.allclose(sha, sep, atol=1e-5), (sha - sep).abs().max()
    assert sep_g.keys() == sha_g.keys() and len(sep_g) > 0
    for name in sep_g:
        assert torch.allclose(sha_g[name], sep_g[name], atol=1e-5, rtol=1e-4), name
    assert bool(used) == expect_pair_attention


def test_pair_attention_refuses_a_forward_that_never_used_it():
    """A model whose layers do not read the switched config would attend causally (the rejected response seeing
    the chosen one): that is an error, not a silent wrong answer. The config's implementation comes back."""
    from types import SimpleNamespace

    from tuneforge.methods.dpo.attention import pair_attention_for

    config = SimpleNamespace(_attn_implementation="sdpa", model_type="toy")
    with pytest.raises(RuntimeError, match="toy: its attention layers did not use"), pair_attention_for(config):
        assert config._attn_implementation != "sdpa"
    assert config._attn_implementation == "sdpa"


def test_pair_attention_equals_the_masked_dense_attention():
    """dpo/attention.py against SDPA with the dense segment mask, grouped-query heads, rows with padding, an
    empty prompt and an empty rejected span, gradients included."""
    import torch.nn.functional as F

    from tuneforge.methods.dpo.attention import pair_attention
    from tuneforge.methods.dpo.logps import shared_prompt_mask

    torch.manual_seed(0)
    spans = [(3, 2, 4), (0, 3, 2), (2, 5, 0), (4, 1, 1)]
    t, heads, kv_heads, dim = 10, 4, 2, 8
    seg = torch.full((len(spans), t), -1)
    for b, (p, c, r) in enumerate(spans):
        seg[b, :p], seg[b, p : p + c], seg[b, p + c : p + c + r] = 0, 1, 2
    q = torch.randn(len(spans), heads, t, dim, requires_grad=True)
    k = torch.randn(len(spans), kv_heads, t, dim, requires_grad=True)
    v = torch.randn(len(spans), kv_heads, t, dim, requires_grad=True)
    module = torch.nn.Module().eval()
    got, _ = pair_attention(module, q, k, v, None, scaling=0.3, pair_spans=spans)  # (B, T, H, D)
    want = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=shared_prompt_mask(seg), scale=0.3
    ).transpose(1, 2)
    real = (seg >= 0)[:, :, None, None]  # padding positions are never read; compare real ones
    assert torch.allclose(got * real, want * real, atol=1e-6)
    weights = torch.randn_like(want) * real
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((want * weights).sum(), (q, k, v))
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_pair_forward_auto_picks_the_shared_prompt_where_it_applies(tmp_path, tiny_model_dir):
    from types import SimpleNamespace

    from tuneforge.methods.dpo.config import shares_prompt

    config = dpo_config(tmp_path, tiny_model_dir)
    plain = SimpleNamespace(_attn_implementation="sdpa")
    assert shares_prompt(config, plain)
    assert not shares_prompt(config, SimpleNamespace(_attn_implementation="flash_attention_2"))
    assert not shares_prompt(config, SimpleNamespace(_attn_implementation="sdpa", sliding_window=4096))
    assert shares_prompt(
        config, SimpleNamespace(_attn_implementation="sdpa", sliding_window=4096, use_sliding_window=False)
    )  # Qwen2: configured, off
    assert not shares_prompt(dpo_config(tmp_path, tiny_model_dir, loss={"type": "kto"}), plain)
    soft = dpo_config(tmp_path, tiny_model_dir, adapter=False)
    soft = soft.model_copy(
        update={
            "adapter": load_config(
                data={"method": "dpo", "data": {"train": "x"}, "adapter": {"type": "prompt_tuning"}}
            ).adapter
        }
    )
    assert not shares_prompt(soft, plain)
    assert not shares_prompt(dpo_config(tmp_path, tiny_model_dir, pair_forward="separate"), plain)


def _plain_logps(model, rows, which: str) -> torch.Tensor:
    """Summed (or, for `which` ending in "mean", averaged) response log-probs, one unpadded sequence at a
    time, with the model's own forward and a log-softmax over its full logits."""
    out = []
    for row in rows:
        for seq in (row.pair.chosen, row.pair.rejected):
            ids = torch.tensor([seq.input_ids])
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, :-1]
            logp = torch.log_softmax(logits.float(), -1)
            start = len(row.pair.prompt_ids)  # the response starts here; it is predicted from start - 1 on
            targets = torch.tensor(seq.input_ids[start:])
            picked = logp[start - 1 :].gather(-1, targets[:, None]).squeeze(-1)
            out.append(picked.mean() if which == "mean" else picked.sum())
    return torch.stack(out).view(-1, 2)  # (B, 2): chosen, rejected


@pytest.mark.parametrize(
    ("loss", "layout"), [("dpo", "shared_prompt"), ("dpo", "separate"), ("ipo", "shared_prompt"), ("simpo", "separate")]
)
def test_loss_matches_an_independent_computation_with_plain_transformers(tmp_path, tiny_model_dir, loss, layout):
    """Policy (a peft model) and reference (the base, loaded again) called separately, log-probs by hand."""
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = dpo_config(tmp_path, tiny_model_dir, loss={"type": loss}, pair_forward=layout)
    tokenizer, data, model, module = prepared(config, perturb=True)
    rows = data.train[:5]
    module.eval()  # same numbers as training mode here (no dropout); eval keeps the metrics untouched
    batch = batch_of(tokenizer, rows)
    assert ("segment_ids" in batch) == (layout == "shared_prompt")
    with torch.no_grad():
        total, count = module(**batch)

    adapter = tmp_path / "perturbed"
    model.save_pretrained(adapter)
    policy_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    reference_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    which = "mean" if loss in ("ipo", "simpo") else "sum"
    pol = _plain_logps(policy_model, rows, which)
    if loss == "simpo":  # reference-free, β = 2, γ = 0.5 on mean token log-probs
        by_hand = -F.logsigmoid(2.0 * (pol[:, 0] - pol[:, 1]) - 0.5)
    else:
        ref = _plain_logps(reference_model, rows, which)
        h = (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])
        by_hand = -F.logsigmoid(0.1 * h) if loss == "dpo" else (h - 1 / (2 * 0.1)) ** 2
    assert int(count) == len(rows)
    assert float(total) / len(rows) == pytest.approx(float(by_hand.mean()), rel=1e-5, abs=1e-6)
    assert abs(float(by_hand.mean()) - {"dpo": math.log(2), "ipo": 25.0, "simpo": 0.0}[loss]) > 1e-3


def test_precomputed_reference_equals_the_live_frozen_copy(tmp_path, tiny_model_dir):
    from tuneforge.methods.dpo.reference import build_reference

    config = dpo_config(tmp_path, tiny_model_dir, adapter=False, loss={"reference": "precomputed"})
    tokenizer, data, model, module = prepared(config)
    assert all(row.ref is not None for row in data.train + data.eval)
    frozen = build_reference("frozen_copy", model, [], pad_id=tokenizer.pad_token_id, batch_size=4)
    # One optimizer step on the policy: the copy (and the stored numbers) must not follow it.
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    module.train()
    total, _ = module(**batch_of(tokenizer, data.train[:4]))
    total.backward()
    optimizer.step()
    rows = data.train[:6] + data.eval[:2]
    batch = batch_of(tokenizer, rows)
    live, _ = frozen(batch)
    assert torch.allclose(batch["ref_logps"], live, atol=1e-5)
    moved, _ = module(**batch)
    assert float(moved.detach()) != pytest.approx(math.log(2) * len(rows), abs=1e-4)


# ------------------------------------------------------------------ runs


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def test_lora_run_learns_the_preference_and_logs_rewards(tmp_path, tiny_model_dir, isolated_cache):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = dpo_config(
        tmp_path,
        tiny_model_dir,
        n_train=48,
        loss={"beta": 0.5},
        training={"max_steps": 12, "batch_size": 8, "learning_rate": 1e-2},
        eval={"batch_size": 8, "samples_in_report": 2, "max_new_tokens": 6},
    )
    result = train_from_config(config)
    summary = result.summary
    assert summary["before"]["rewards/accuracies"] == 0.0 and summary["before"]["rewards/margins"] == 0.0
    assert summary["before"]["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert summary["after"]["rewards/accuracies"] >= 0.75 and summary["after"]["rewards/margins"] > 0
    assert summary["after"]["eval_loss"] < math.log(2)
    assert summary["train"]["examples"] == 12 * 8
    steps = [m for m in _metrics(result.run_dir) if "loss" in m]
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # step 1 runs with policy = reference
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "loss/preference",
    ):
        assert key in steps[-1], key
    assert steps[-1]["rewards/accuracies"] > 0.5
    samples = json.loads((result.run_dir / "before.json").read_text())["samples"]
    assert len(samples) == 2 and samples[0]["prompt"]
    # The adapter loads in plain peft and gives the trained model's logits.
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.output_dir).eval()
    ids = torch.tensor([[5, 17, 60, 90, 33, 2]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_variant_trains_a_few_steps(tmp_path, tiny_model_dir, isolated_cache, loss):
    extra = {"sft_weight": 0.5} if loss == "dpo" else {}
    result = train_from_config(
        dpo_config(
            tmp_path,
            tiny_model_dir,
            name=loss,
            loss={"type": loss, **extra},
            training={"max_steps": 2, "batch_size": 2},
        )
    )
    steps = [m for m in _metrics(result.run_dir) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(math.isfinite(m["loss"]) and "rewards/accuracies" in m for m in steps)
    assert math.isfinite(result.summary["after"]["eval_loss"])
    if loss == "dpo":
        assert "loss/sft" in steps[0]
    if loss == "orpo":
        assert "nll" in steps[0] and "log_odds_ratio" in steps[0]


def test_full_finetune_precomputed_reference_equals_a_frozen_copy(tmp_path, tiny_model_dir, isolated_cache):
    """auto = precomputed for full fine-tuning; a run with a live frozen copy gives the same losses and weights."""
    from transformers import AutoModelForCausalLM

    from tuneforge.methods.dpo.config import reference_kind

    runs = {}
    for reference in ("auto", "frozen_copy"):
        config = dpo_config(
            tmp_path,
            tiny_model_dir,
            adapter=False,
            name=reference,
            loss={"reference": reference},
            training={"max_steps": 3, "learning_rate": 1e-3},
        )
        runs[reference] = train_from_config(config)
    assert reference_kind(load_config(data={"method": "dpo", "data": {"train": "x"}})) == "precomputed"
    auto, copied = runs["auto"], runs["frozen_copy"]
    assert auto.output_dir.name == "model"
    steps = {name: [m for m in _metrics(run.run_dir) if "loss" in m] for name, run in runs.items()}
    assert steps["auto"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # step 1: policy = reference
    for a, b in zip(steps["auto"], steps["frozen_copy"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-5)
    assert steps["auto"][-1]["rewards/margins"] != 0
    for key, value in auto.summary["after"].items():
        assert value == pytest.approx(copied.summary["after"][key], abs=1e-5), key
    for (name, a), (_, b) in zip(auto.model.named_parameters(), copied.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    reloaded = AutoModelForCausalLM.from_pretrained(auto.output_dir).eval()  # plain transformers loads it
    ids = torch.tensor([[5, 17, 60, 90, 33, 2]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, auto.model.eval()(input_ids=ids).logits, atol=1e-5)


def test_resume_mid_run_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, isolated_cache):
    """Full fine-tuning with precomputed reference log-probs: the resumed run must compute them from the
    model before training again, not from the checkpoint's weights."""
    from tuneforge.methods.dpo import loss as loss_module
    from tuneforge.training.loop import TrainingInterrupted

    def config(name):
        return dpo_config(
            tmp_path,
            tiny_model_dir,
            adapter=False,
            name=name,
            training={"max_steps": 4, "learning_rate": 1e-3, "save_every": 1},
        )

    reference = train_from_config(config("whole"))
    original = loss_module.PreferenceLoss.forward
    calls = {"n": 0}

    def forward_with_signal(self, *args, **kwargs):
        calls["n"] += self.training
        if self.training and calls["n"] == 3:  # step 3's forward
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    loss_module.PreferenceLoss.forward = forward_with_signal
    try:
        with pytest.raises(TrainingInterrupted):
            train_from_config(config("cut"))
    finally:
        loss_module.PreferenceLoss.forward = original
    resumed = train_from_config(config("cut"), resume=True)
    for (name, a), (_, b) in zip(reference.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    whole = {m["step"]: m["loss"] for m in _metrics(reference.run_dir) if "loss" in m}
    cut = {m["step"]: m["loss"] for m in _metrics(resumed.run_dir) if "loss" in m}
    assert whole.keys() == cut.keys() and all(whole[k] == pytest.approx(cut[k], abs=1e-6) for k in whole)


# ------------------------------------------------------------------ refusals


def test_config_refuses_options_that_do_not_fit(tmp_path):
    base = {"method": "dpo", "data": {"train": "x.jsonl"}}

    def problem(**sections):
        with pytest.raises(ConfigError) as info:
            load_config(data={**base, **sections})
        (line,) = info.value.problems
        return line

    assert problem(loss={"reference": "adapter_disabled"}).startswith(
        "loss.reference: adapter_disabled needs an adapter"
    )
    assert "adapter.type bitfit" in problem(adapter={"type": "bitfit"}, loss={"reference": "adapter_disabled"})
    assert "residual" in problem(adapter={"type": "lora", "init": "pissa"}, loss={"reference": "adapter_disabled"})
    assert problem(loss={"type": "dpo", "gamma": 1.0}) == "loss.gamma: only used by loss.type simpo, not dpo; remove it"
    assert problem(loss={"type": "orpo", "beta": 0.2}).startswith("loss.beta: orpo has no β")
    assert problem(loss={"type": "simpo", "reference": "frozen_copy"}).startswith("loss.reference: simpo is reference")
    assert problem(loss={"type": "robust", "label_smoothing": 0.5}).startswith("loss.label_smoothing: robust")
    assert "kto trains single responses" in problem(loss={"type": "kto"}, pair_forward="shared_prompt")
    assert "virtual tokens" in problem(adapter={"type": "prompt_tuning"}, pair_forward="shared_prompt")
    assert "flash_attention_2" in problem(
        model={"attn_implementation": "flash_attention_2"}, pair_forward="shared_prompt"
    )
    # Defaults: β 0.1, simpo 2.0; a dumped config (every key spelt out) reloads.
    from tuneforge.config import dump_config

    assert load_config(data={**base, "loss": {"type": "simpo"}}).loss.options() == {"beta": 2.0, "gamma": 0.5}
    config = load_config(data={**base, "loss": {"type": "kto"}})
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_validate_refuses_thumbs_for_a_paired_loss_in_one_line(tmp_path, tiny_model_dir, capsys):
    from tuneforge.cli import main

    thumbs = write_jsonl(
        tmp_path / "thumbs.jsonl",
        [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "r", "completion": "b", "label": False}],
    )
    path = tmp_path / "c.yaml"
    path.write_text(f"method: dpo\nmodel: {{name: {tiny_model_dir}}}\ndata: {{train: {thumbs}}}\neval: null\n")
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{thumbs}: thumbs up / down rate single responses and hold no pairs; train them with loss.type: kto" in err
    assert "Traceback" not in err
    path.write_text(path.read_text() + "loss: {type: kto}\n")
    assert main(["validate", str(path)]) == 0, capsys.readouterr()


def test_rankings_become_all_their_pairs_and_kto_refuses_them(tmp_path, tiny_model_dir):
    from tuneforge.data.types import DataError
    from tuneforge.models.load import load_tokenizer

    ranked = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "q", "responses": ["best", "mid", "low", "worst"]}])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "r", "chosen": "yes", "rejected": "no"}])
    config = dpo_config(tmp_path, tiny_model_dir, eval=None)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"train": [str(ranked), str(pairs)], "eval": None})}
    )
    tokenizer = load_tokenizer(config.model.name)
    data = METHOD.load_data(config, tokenizer)
    assert len(data.train) == 7  # C(4,2) = 6 from the ranking, 1 pair
    kto = config.model_copy(update={"loss": config.loss.model_copy(update={"type": "kto"})})
    with pytest.raises(DataError) as info:
        METHOD.load_data(kto, tokenizer)
    (line,) = info.value.problems
    assert line.startswith(f"{ranked}:1: a ranking has no thumbs-up / down label")

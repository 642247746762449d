"""method: ppo on tiny in-process models: the sanity values at the start of an update, the reference,
reward sources, whole runs (reward goes up; grpo / rloo without a value head), resume == uninterrupted,
and the config refusals. The arithmetic itself is tests/test_ppo_math.py."""

from __future__ import annotations

import copy
import json
import os
import signal

import pytest
import torch
from conftest import write_jsonl
from tiny import tiny_model, tiny_tokenizer

from tuneforge.config import ConfigError, load_config
from tuneforge.methods.ppo.data import render
from tuneforge.methods.ppo.rollout import Reference, forward_policy, micro_batch, sample_rollout
from tuneforge.methods.ppo.update import PpoLoss, UpdateSettings, experience, plan
from tuneforge.methods.ppo.value_head import ValueHead
from tuneforge.runner import train_from_config
from tuneforge.training.loop import TrainingInterrupted

WORDS = ["hi", "yes", "cat", "dog", "sun", "tree", "blue", "red"]
LETTERS = (
    "def letters(prompts, responses):\n"
    "    return [sum(c in 'abcdefghijklmnopqrstuvwxyz' for c in r) / max(len(r), 1) for r in responses]\n"
)


# ------------------------------------------------------------------ pieces, in process


def _prompts(tok, n: int = 4):
    return [render(tok, f"say {w}", chat=False, system_prompt=None, max_prompt_length=32)[0] for w in WORDS[:n]]


@pytest.fixture
def accelerator():
    from tuneforge.training.engine import make_accelerator

    return make_accelerator(mixed_precision="no", cpu=True)


def _lora(model, init_b: bool = False):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    if init_b:  # a non-trivial adapter: the policy differs from the base
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
    return peft_model


def _rollout(model, tok, group_size: int = 2):
    torch.manual_seed(0)
    return sample_rollout(
        model, tok, _prompts(tok), group_size=group_size, max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0
    )


def test_first_minibatch_ratio_is_exactly_1_and_clip_fraction_0(accelerator):
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    rollout = _rollout(model, tok)
    loss = PpoLoss(model, ValueHead(32)).train()
    settings = UpdateSettings(ppo_epochs=2, minibatch_size=4, micro_batch_size=2, group_size=2)
    epochs = plan(8, settings, torch.Generator().manual_seed(0))
    scores = torch.linspace(-1, 1, 8)
    tensors, _ = experience(
        loss,
        Reference(model, copy.deepcopy(model)),
        rollout,
        scores,
        first_epoch=epochs[0],
        settings=settings,
        kl_coef=0.05,
        accelerator=accelerator,
    )
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    for rows in epochs[0][0]:  # the first minibatch of the first epoch
        inputs = micro_batch(rollout, rows, tensors)
        total, n = loss(**inputs)
        assert torch.equal(loss.last_ratio, torch.ones_like(loss.last_ratio)) and n > 0
        (total / n).backward()
    first = loss.step_metrics()
    assert first["clip_fraction"] == 0 and first["approx_kl"] == 0
    # Not vacuous: after a step, the same rows no longer give ratio 1.
    optimizer.step()
    loss(**micro_batch(rollout, epochs[0][0][0], tensors))
    assert not torch.equal(loss.last_ratio, torch.ones_like(loss.last_ratio))


def test_k1_kl_is_0_when_the_policy_is_the_reference(accelerator):
    tok = tiny_tokenizer()
    for policy, frozen in (
        (_lora(tiny_model(len(tok))), None),  # LoRA at init: B = 0
        (tiny_model(len(tok)), tiny_model(len(tok))),
    ):  # a frozen copy of the same weights
        rollout = _rollout(policy, tok)
        settings = UpdateSettings(ppo_epochs=1, micro_batch_size=3, group_size=2)
        loss = PpoLoss(policy, ValueHead(32)).train()
        epochs = plan(8, settings, torch.Generator().manual_seed(1))
        _tensors, stats = experience(
            loss,
            Reference(policy, frozen),
            rollout,
            torch.ones(8),
            first_epoch=epochs[0],
            settings=settings,
            kl_coef=0.05,
            accelerator=accelerator,
        )
        assert stats["kl"] == 0.0 and stats["objective"] == stats["score"] == 1.0


def test_the_adapter_disabled_reference_equals_the_base_models_logprobs():
    tok = tiny_tokenizer()
    base = tiny_model(len(tok))
    untouched = copy.deepcopy(base)
    policy = _lora(base, init_b=True)
    rollout = _rollout(policy, tok)
    inputs = micro_batch(rollout, list(range(8)), {})
    args = (inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], inputs["response_mask"].shape[1])
    with torch.no_grad():
        expected = forward_policy(untouched, *args, temperature=1.0).logp
        own = forward_policy(policy, *args, temperature=1.0).logp
    reference = Reference(policy).logp(inputs, temperature=1.0)
    mask = inputs["response_mask"]
    assert torch.allclose(reference[mask], expected[mask], atol=1e-6, rtol=0)
    assert not torch.allclose(own[mask], expected[mask], atol=1e-3)  # the adapter does change the policy


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_group_advantages_are_relative_within_each_prompts_responses(accelerator, advantage):
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    rollout = _rollout(model, tok, group_size=4)  # 4 prompts × 4 responses
    settings = UpdateSettings(ppo_epochs=1, micro_batch_size=8, group_size=4, advantage=advantage)
    loss = PpoLoss(model, None).train()
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 1.0, 2.0, 3.0, 5.0, 1.0, 1.0, 1.0])
    epochs = plan(16, settings, torch.Generator().manual_seed(0))
    tensors, _ = experience(
        loss,
        Reference(model, copy.deepcopy(model)),
        rollout,
        scores,
        first_epoch=epochs[0],
        settings=settings,
        kl_coef=0.05,
        accelerator=accelerator,
    )
    mask = rollout.response_mask
    first = tensors["advantages"][torch.arange(16), mask.float().argmax(-1)].view(4, 4)  # one value per response
    assert torch.allclose(first.sum(-1), torch.zeros(4), atol=1e-5)  # both baselines centre each group
    assert torch.all(first[1] == 0)  # equal rewards in a group: nothing to learn
    assert first[0, 0] > 0 > first[0, 1] and "values_old" not in tensors
    # every response token of a sequence carries the sequence's advantage
    assert torch.equal(tensors["advantages"] != 0, mask & (first.view(16, 1) != 0))


# ------------------------------------------------------------------ reward sources


def test_a_reward_model_source_loads_a_one_label_classifier_folder(tmp_path):
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from tuneforge.methods.ppo.config import RewardSource
    from tuneforge.methods.ppo.rewards import Rewards, check_sources

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=2,
    )
    folder = tmp_path / "runs" / "rm" / "model"
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    two = tmp_path / "two-labels"
    LlamaForSequenceClassification(LlamaConfig(**{**config.to_dict(), "num_labels": 2})).save_pretrained(two)

    source = RewardSource(model=str(tmp_path / "runs" / "rm"))  # the run folder resolves to its model/
    assert check_sources([source]) == []
    problems = check_sources([RewardSource(model=str(two))])
    assert len(problems) == 1 and "a reward model has one output, this one has 2 labels" in problems[0]

    model = tiny_model(len(tok))
    rollout = _rollout(model, tok)
    sequences = [rollout.sequence_ids(i) for i in range(8)]
    total, parts = Rewards([source], tokenizer=tok).score(
        rollout.prompts, rollout.responses, sequences, torch.device("cpu")
    )
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = torch.stack([plain(input_ids=torch.tensor([s])).logits[0, 0] for s in sequences])
    assert torch.allclose(total, expected, atol=1e-5) and list(parts) == ["rm"]


def test_adapter_reward_models_and_classifier_labels_score_as_plain_peft_and_transformers(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    from tuneforge.methods.ppo.config import RewardSource
    from tuneforge.methods.ppo.rewards import Rewards, check_sources

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=2,
    )
    torch.manual_seed(1)
    base_dir, adapter_dir, clf_dir = (tmp_path / "base", tmp_path / "rm" / "adapter", tmp_path / "clf")
    LlamaForSequenceClassification(LlamaConfig(**{**config.to_dict(), "num_labels": 1})).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="SEQ_CLS", init_lora_weights=False)
    peft_model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base_dir), lora)
    peft_model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    (adapter_dir / "classifier.json").write_text(
        json.dumps({"labels": ["reward"], "base_model": str(base_dir), "pad_token_id": 2})
    )
    LlamaForSequenceClassification(
        LlamaConfig(**{**config.to_dict(), "num_labels": 2, "id2label": {0: "neg", 1: "pos"}})
    ).save_pretrained(clf_dir)
    tok.save_pretrained(clf_dir)
    sources = [
        RewardSource(model=str(tmp_path / "rm")),
        RewardSource(classifier=str(clf_dir), label="pos", score="logprob", weight=0.5),
    ]
    assert check_sources(sources) == []
    wrong = check_sources([RewardSource(classifier=str(clf_dir), label="positive")])
    assert wrong == ["reward.sources[0].label: 'positive' is not one of the classifier's labels (neg, pos)"]

    rollout = _rollout(tiny_model(len(tok)), tok)
    sequences = [rollout.sequence_ids(i) for i in range(8)]
    total, parts = Rewards(sources, tokenizer=tok).score(
        rollout.prompts, rollout.responses, sequences, torch.device("cpu")
    )
    plain_rm = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(base_dir), adapter_dir
    ).eval()
    plain_clf = AutoModelForSequenceClassification.from_pretrained(clf_dir).eval()
    with torch.no_grad():
        rm = torch.stack([plain_rm(input_ids=torch.tensor([s])).logits[0, 0] for s in sequences])
        texts = [p.text + r for p, r in zip(rollout.prompts, rollout.responses)]  # a continued plain prompt
        clf = torch.stack(
            [
                plain_clf(input_ids=torch.tensor([tok(t, split_special_tokens=True)["input_ids"]]))
                .logits[0]
                .log_softmax(-1)[1]
                for t in texts
            ]
        )
    assert torch.allclose(parts["rm"], rm, atol=1e-5) and torch.allclose(parts["clf:pos"], clf, atol=1e-5)
    assert torch.allclose(total, rm + 0.5 * clf, atol=1e-5)


def test_a_reward_function_must_return_one_finite_number_per_response(tmp_path):
    from tuneforge.methods.ppo.config import RewardSource
    from tuneforge.methods.ppo.rewards import RewardError, Rewards, check_sources

    (tmp_path / "r.py").write_text("def short(prompts, responses):\n    return [1.0] * (len(responses) - 1)\n")
    tok = tiny_tokenizer()
    rows = _prompts(tok, 2)
    with pytest.raises(RewardError, match="returned 1 values for 2 responses"):
        Rewards([RewardSource(function=f"{tmp_path}/r.py:short")], tokenizer=tok).score(
            rows, ["a", "b"], [[], []], torch.device("cpu")
        )
    problems = check_sources([RewardSource(function=f"{tmp_path}/r.py:shrt")])
    assert len(problems) == 1 and problems[0].startswith("reward.sources[0].function: ")
    assert "callables there: short" in problems[0]


# ------------------------------------------------------------------ whole runs


def ppo_config(tmp_path, model_dir, *, name="run", **sections):
    (tmp_path / "rewards.py").write_text(LETTERS)
    prompts = [{"prompt": f"say {w}"} for w in WORDS] * 2
    raw = {
        "method": "ppo",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_jsonl(tmp_path / "p.jsonl", prompts)),
            "eval": str(write_jsonl(tmp_path / "e.jsonl", prompts[:8])),
            "template": "plain",
        },
        "generation": {"max_new_tokens": 10},
        "reward": {"sources": [{"function": f"{tmp_path / 'rewards.py'}:letters"}]},
        "ppo": {"rollout_batch_size": 16, "minibatch_size": 8},
        "training": {
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "scheduler": "constant",
            "num_threads": 1,
            "seed": 3,
        },
        "eval": {"batch_size": 8, "samples_in_report": 2},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(data=raw)


def test_a_few_ppo_steps_raise_the_mean_reward(tmp_path, tiny_model_dir, isolated_cache):
    from transformers import AutoModelForCausalLM

    first = {}
    original = PpoLoss.forward

    def watch_first(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not first:
            first.update(ratio=self.last_ratio.clone(), **dict(self._sums.items()))
        return out

    PpoLoss.forward = watch_first
    try:
        result = train_from_config(
            ppo_config(
                tmp_path,
                tiny_model_dir,
                training={"max_steps": 12, "eval_every": 6},
                ppo={"rollout_batch_size": 32, "minibatch_size": 16},
            )
        )
    finally:
        PpoLoss.forward = original
    before, after = result.summary["before"], result.summary["after"]
    assert before["kl"] == 0 and after["kl"] > 0
    # Letters are ~10 % of a random byte model's output; seeds 3–6 reach 0.24–0.32 here.
    assert after["reward"] > before["reward"] + 0.08, (before, after)
    assert torch.equal(first["ratio"], torch.ones_like(first["ratio"])) and first["clip_fraction"] == 0
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in records if "loss" in m]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    held_out = [m for m in records if "eval_reward" in m]  # training.eval_every
    assert [m["step"] for m in held_out] == [6, 12] and held_out[-1]["eval_reward"] == after["reward"]
    assert sum(m["score"] for m in metrics[-3:]) / 3 > metrics[0]["score"]  # the training score rose too
    for key in (
        "score",
        "kl",
        "entropy",
        "clip_fraction",
        "approx_kl",
        "value_loss",
        "kl_coef",
        "response_length",
        "time_generation_s",
        "time_scoring_s",
        "time_training_s",
        "score/letters",
    ):
        assert key in metrics[0], key
    assert metrics[0]["kl"] == 0  # the first rollout comes from the reference itself
    # The output is a standard causal-LM folder, with the value head beside the weights.
    assert (result.output_dir / "value_head.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert torch.allclose(reloaded.model.embed_tokens.weight, result.model.model.embed_tokens.weight)


@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_group_relative_runs_need_no_value_head(tmp_path, tiny_model_dir, isolated_cache, advantage):
    config = ppo_config(
        tmp_path,
        tiny_model_dir,
        ppo={"advantage": advantage, "group_size": 4, "rollout_batch_size": 4},
        training={"max_steps": 2, "save_every": 1},
        eval=None,
        reward={"missing_eos_penalty": 1.0},
    )
    result = train_from_config(config)
    from safetensors.torch import load_file

    saved = load_file(str(result.run_dir / "checkpoints" / "step-000001" / "trainable.safetensors"))
    assert not any("value_head" in k for k in saved) and not (result.output_dir / "value_head.safetensors").exists()
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and "value_loss" not in metrics[0] and metrics[0]["clip_fraction"] < 1
    for m in metrics:  # responses without EOS pay the penalty (the tiny model rarely stops in 10 tokens)
        assert m["score"] == pytest.approx(m["score/letters"] - 1.0 * (1 - m["eos_fraction"]), abs=1e-5)


def test_resume_mid_ppo_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, isolated_cache):
    sections = {
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
        "ppo": {
            "rollout_batch_size": 8,
            "minibatch_size": 4,
            "ppo_epochs": 2,
            "adaptive_kl": {"target": 0.5, "horizon": 50},
        },
        "training": {"max_steps": 4, "save_every": 2, "keep_checkpoints": 5, "batch_size": 2},
        "eval": None,
    }
    ref = train_from_config(ppo_config(tmp_path, tiny_model_dir, name="ref", **sections))

    calls = {"n": 0}
    original = PpoLoss.forward

    def forward_with_signal(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 2 * 2 * 2 + 1:  # step 3's first forward (2 epochs × 2 minibatches × 2 micro-batches)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    config = ppo_config(tmp_path, tiny_model_dir, name="cut", **sections)
    PpoLoss.forward = forward_with_signal
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train_from_config(config)
    finally:
        PpoLoss.forward = original
    assert info.value.checkpoint.name == "step-000003"
    state = json.loads((info.value.checkpoint / "state.json").read_text())
    assert state["kl_coef"] != 0.05 and state["rows_consumed"] == 24  # the adaptive coefficient moved
    resumed = train_from_config(config, resume=True)

    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    read = lambda run: [  # noqa: E731
        json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    for a, b in zip(read(ref), read(resumed), strict=True):
        for key in ("step", "loss", "score", "kl", "kl_coef", "value_loss", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["step"], key)
    from safetensors.torch import load_file

    heads = [load_file(str(run.output_dir / "value_head.safetensors")) for run in (ref, resumed)]
    assert torch.allclose(heads[0]["weight"], heads[1]["weight"], atol=1e-6)  # the value heads too


# ------------------------------------------------------------------ config and data refusals


def test_validate_refuses_a_config_without_a_reward_source_in_one_line(tmp_path, tiny_model_dir, capsys):
    from tuneforge.cli import main

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    (tmp_path / "c.yaml").write_text(f"method: ppo\nmodel: {{name: {tiny_model_dir}}}\ndata: {{train: {prompts}}}\n")
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert "reward.sources: PPO needs at least one reward source" in " ".join(err.split())


def test_config_refusals_name_the_key():
    base = {"method": "ppo", "data": {"train": "p.jsonl"}, "reward": {"sources": [{"function": "m:f"}]}}
    with pytest.raises(ConfigError, match="set group_size: to 2 or more"):
        load_config(data={**base, "ppo": {"advantage": "grpo"}})
    with pytest.raises(ConfigError, match="exactly one of model, function or classifier"):
        load_config(data={**base, "reward": {"sources": [{"model": "a", "function": "m:f"}]}})
    with pytest.raises(ConfigError, match="set label:"):
        load_config(data={**base, "reward": {"sources": [{"classifier": "runs/sentiment"}]}})


def test_prompts_render_like_sft_and_bad_rows_name_file_and_line(tmp_path):
    from tuneforge.data.templates import render_prompt
    from tuneforge.data.types import DataError
    from tuneforge.methods.ppo.config import PromptData
    from tuneforge.methods.ppo.data import load_prompts

    tok = tiny_tokenizer()
    good = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "say hi"}, {"messages": [{"role": "user", "content": "say yes"}]}]
    )
    splits = load_prompts(PromptData(train=str(good)), tok)
    assert splits.chat and splits.train[0].input_ids == render_prompt(tok, [{"role": "user", "content": "say hi"}])
    plain = load_prompts(PromptData(train=str(good), template="plain", max_prompt_length=4), tok)
    assert tok.decode(plain.train[0].input_ids) == "y hi" and plain.truncated == 2  # keeps the prompt's end
    bad = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"prompt": "ok"},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"text": "x"},
        ],
    )
    with pytest.raises(DataError) as info:
        load_prompts(PromptData(train=str(bad)), tok)
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{bad}:2", f"{bad}:3"]
    assert "end with a user turn" in info.value.problems[0]

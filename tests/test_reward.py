"""`method: reward` on tiny in-process models: loss values, rankings, data errors, training, outputs, `score`."""

from __future__ import annotations

import json
import math
import os
import random
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import write_jsonl

from tuneforge.config import load_config
from tuneforge.data.types import Example
from tuneforge.methods.reward.data import Comparison, collate_comparisons
from tuneforge.methods.reward.losses import RewardLoss, comparison_losses
from tuneforge.runner import train_from_config

TOPICS = ["soup", "film", "book", "song", "park", "game", "tea", "bike", "lamp", "desk"]


def pair_rows(n: int, seed: int) -> list[dict]:
    """An easy preference: the chosen response says "great", the rejected "awful"; the score is read
    at the last token (a digit), so the model must look back to the marker word."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic, k = rng.choice(TOPICS), rng.randint(0, 99)
        out.append(
            {"prompt": f"rate the {topic} {k}", "chosen": f"great {topic} {k}", "rejected": f"awful {topic} {k}"}
        )
    return out


def reward_config(tmp_path, model_dir, *, adapter=True, name="rm", training=None, **sections):
    raw = {
        "method": "reward",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", pair_rows(64, 1))),
            "eval": str(write_jsonl(tmp_path / "eval.jsonl", pair_rows(16, 2))),
            "max_length": 128,
        },
        "training": {"max_steps": 20, "batch_size": 8, "learning_rate": 1e-3, "seed": 1, **(training or {})},
        "eval": {"batch_size": 8, "samples_in_report": 2},
    }
    if adapter:  # True: LoRA; or an adapter section
        raw["adapter"] = adapter if isinstance(adapter, dict) else {"type": "lora", "r": 4, "alpha": 8}
    raw.update(sections)
    return load_config(data=raw)


def _model(model_dir):
    from tuneforge.methods.reward.model import build_reward_model

    model_cfg = load_config(
        data={"method": "reward", "model": {"name": str(model_dir)}, "data": {"train": "x.jsonl"}}
    ).model
    return build_reward_model(model_cfg, pad_token_id=2, dtype=torch.float32)


def _seq(ids: list[int]) -> Example:
    return Example(ids, ids)


@torch.no_grad()
def _score_alone(model, ids: list[int]) -> float:
    """One sequence, no padding: what the head reads at its last token."""
    return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


# ------------------------------------------------------------------ loss


def test_equal_scores_give_ln2_through_the_loss_module(tiny_model_dir):
    model = _model(tiny_model_dir)
    assert model.config.num_labels == 1
    torch.nn.init.zeros_(model.score.weight)  # every score 0
    rows = [
        Comparison([5], [_seq([5, 6, 7]), _seq([5, 8])], None, "a"),
        Comparison([9], [_seq([9, 10]), _seq([9, 11, 12, 13]), _seq([9, 14]), _seq([9, 15, 16])], None, "b"),
    ]
    loss_module = RewardLoss(model).train()
    loss, count = loss_module(**collate_comparisons(rows, 2))
    assert int(count) == 2
    assert float(loss.detach()) / 2 == pytest.approx(math.log(2), abs=1e-6)
    # Strict accuracy: a tie is not a win, so equal scores are 0 % right.
    assert loss_module.step_metrics() == {"accuracy": 0.0, "margin": 0.0}
    loss_module.eval()(**collate_comparisons(rows, 2))  # held-out loss: not counted in the step metrics
    assert loss_module.step_metrics() == {}


def test_k_way_loss_is_the_mean_of_its_pairwise_losses_on_real_model_scores(tiny_model_dir):
    model = _model(tiny_model_dir).eval()
    ranking = [[5, 6, 7, 8], [5, 6, 40], [5, 6, 41, 42, 43], [5, 6, 44]]  # best → worst, shared prompt [5, 6]
    pair = [[9, 50, 51], [9, 52]]
    rows = [
        Comparison([5, 6], [_seq(s) for s in ranking], None, "r"),
        Comparison([9], [_seq(s) for s in pair], 0.5, "p"),
    ]
    loss, count = RewardLoss(model, use_margin=True)(**collate_comparisons(rows, 2))
    r = [_score_alone(model, s) for s in ranking]
    c, w = (_score_alone(model, s) for s in pair)
    pairwise = [-F.logsigmoid(torch.tensor(r[i] - r[j])) for i in range(4) for j in range(i + 1, 4)]
    assert len(pairwise) == 6
    by_hand = float(sum(pairwise) / 6) + float(-F.logsigmoid(torch.tensor(c - w - 0.5)))
    assert int(count) == 2
    assert float(loss.detach()) == pytest.approx(by_hand, abs=1e-5)


def test_comparison_losses_by_hand():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, 0.0]])  # row 1 is a pair (third column padding)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    margin = torch.tensor([0.0, 1.0])  # a ranking's margin entry is ignored; the pair's applies
    out = comparison_losses(scores, mask, margin=margin, center_coef=0.01)
    bt = lambda d, m=0.0: -math.log(1 / (1 + math.exp(-(d - m))))  # noqa: E731
    ranking = (bt(1.0) + 0.01 * 9 + bt(2.0) + 0.01 * 4 + bt(1.0) + 0.01 * 1) / 3
    pair = bt(-1.0, 1.0) + 0.01 * 4
    assert out.losses.tolist() == pytest.approx([ranking, pair], abs=1e-6)
    assert out.correct.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert out.margins.tolist() == pytest.approx([1.0, 2.0, 1.0, -1.0])


def test_rankings_become_pairs_and_held_out_prompts_stay_whole(tmp_path, tiny_model_dir):
    from tuneforge.methods import get_method
    from tuneforge.models.load import load_tokenizer

    rankings = write_jsonl(
        tmp_path / "rank.jsonl",
        [{"prompt": "q1", "responses": ["a", "b", "c", "d"]}, {"prompt": "q2", "responses": ["x", "y", "z"]}],
    )
    ratings = write_jsonl(
        tmp_path / "rate.jsonl",
        [{"prompt": f"p{i}", "responses": ["one", "two", "three"], "scores": [3, 2, 1]} for i in range(10)],
    )
    config = load_config(
        data={
            "method": "reward",
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": [str(rankings), str(ratings)], "eval_fraction": 0.3},
        }
    )
    data = get_method("reward").load_data(config, load_tokenizer(str(tiny_model_dir)))
    by_size = sorted(len(c.responses) for c in data.train + data.eval)
    assert by_size == [2] * 30 + [3, 4]  # a 4-way ranking is one comparison of 6 pairs, a 3-way of 3
    assert data.facts["pairs"] + data.facts["eval_pairs"] == 6 + 3 + 30
    assert [c.pairs for c in data.train + data.eval if len(c.responses) == 4] == [6]
    # All three pairs of one rated prompt land on the same side of the split.
    held_rows, train_rows = {c.where for c in data.eval}, {c.where for c in data.train}
    assert data.eval and not held_rows & train_rows


def test_chance_loss_is_ln2_unless_margins_apply(tmp_path, tiny_model_dir):
    from tuneforge.methods import get_method

    method = get_method("reward")
    data = type("D", (), {"train": [Comparison([1], [_seq([1, 2]), _seq([1, 3])], 2.0, "x")]})()
    with_margin = reward_config(tmp_path, tiny_model_dir)
    without = reward_config(tmp_path, tiny_model_dir, loss={"margin": False})
    assert method.chance_loss(with_margin, None, data) is None
    assert method.chance_loss(without, None, data) == pytest.approx(math.log(2))


# ------------------------------------------------------------------ data errors and validate


def test_bad_rows_are_named_by_file_and_line(tmp_path, tiny_model_dir):
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    bad = write_jsonl(tmp_path / "bad.jsonl", [pair_rows(1, 0)[0], {"prompt": "q", "chosen": "a", "rejected": ""}])
    thumbs = write_jsonl(tmp_path / "thumbs.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    config = load_config(
        data={
            "method": "reward",
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(bad), "eval": str(thumbs)},
        }
    )
    errors = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir))).errors
    assert errors[0] == f"{bad}:2: rejected: must not be empty"
    assert errors[1].startswith(f"{thumbs}: thumbs up / down rate single responses")
    config = load_config(
        data={
            "method": "reward",
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(bad), "columns": {"answer": "x"}},
            "eval": None,
        }
    )
    errors = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir))).errors
    assert errors[0].startswith("data.columns.answer: not a feedback field")


def test_validate_prints_pair_counts_and_drops(tmp_path, tiny_model_dir, capsys):
    from tuneforge.cli import main

    rankings = write_jsonl(
        tmp_path / "rank.jsonl",
        [{"prompt": "q1", "responses": ["a", "b", "c", "d"]}, {"prompt": "q2", "responses": ["x", "y", "x"]}],
    )
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(5, 3) + [{"prompt": "q", "chosen": "s", "rejected": "s "}])
    (tmp_path / "rm.yaml").write_text(
        f"method: reward\nmodel: {{name: {tiny_model_dir}}}\n"
        f"data: {{train: [{rankings}, {pairs}], eval: {pairs}, max_length: 128}}\n"
    )
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "rm.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "7 training / 5 held-out comparisons (12 / 5 pairs)" in out
    assert f"{rankings} (rankings): 2 rows → 2 records, 7 pairs; dropped 1 repeated response in a ranking" in out
    assert f"{pairs} (pairs): 6 rows → 5 records, 5 pairs; dropped 1 chosen == rejected" in out
    assert f"1 dropped: chosen == rejected (first at {pairs}:6)" in out


# ------------------------------------------------------------------ whole runs and outputs


def test_full_run_learns_the_preference_and_loads_in_plain_transformers(tmp_path, tiny_model_dir, isolated_cache):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.methods.reward.score import score_file

    result = train_from_config(reward_config(tmp_path, tiny_model_dir, adapter=False))
    before, after = result.summary["before"], result.summary["after"]
    assert after["accuracy"] >= 0.9 and after["accuracy"] > before["accuracy"]
    assert after["eval_loss"] < before["eval_loss"] < 0.75  # starts near ln 2 = 0.693
    assert after["margin"] > 0
    assert result.summary["train"]["comparisons"] == 20 * 8
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"accuracy", "margin"} <= set(metrics[-1])  # the loss module's step metrics are logged
    assert result.summary["data"]["pairs"] == 64

    out = result.output_dir
    assert out.name == "model"
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert plain.config.num_labels == 1 and plain.config.id2label == {0: "reward"}
    ids = torch.tensor([[5, 17, 60, 90, 33], [40, 41, 42, 2, 2]])  # right-padded: pad = eos = 2
    mask = (ids != 2).long()
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids, attention_mask=mask).logits,
            result.model.eval()(input_ids=ids, attention_mask=mask).logits,
        )

    # `score` on the held-out pairs: the evaluation's accuracy, and plain transformers' score of each
    # response as training rendered it.
    rows, summary = score_file(out, str(tmp_path / "eval.jsonl"))
    assert summary["pairs"] == 16 and summary["accuracy"] == pytest.approx(after["accuracy"])
    from tuneforge.methods.preference.data import encode_record
    from tuneforge.methods.preference.feedback import PreferencePair
    from tuneforge.models.load import load_tokenizer

    first = pair_rows(16, 2)[0]
    example, _ = encode_record(
        load_tokenizer(str(out)),
        PreferencePair(first["prompt"], first["chosen"], first["rejected"], "x"),
        chat=True,
        max_length=128,
    )
    assert rows[0]["chosen_score"] == pytest.approx(_score_alone(plain, example.chosen.input_ids), abs=1e-5)
    assert rows[0]["rejected_score"] == pytest.approx(_score_alone(plain, example.rejected.input_ids), abs=1e-5)

    from tuneforge.cli import main  # `predict` would print a one-label softmax (1.0 everywhere): refused

    assert main(["predict", "--model", str(result.run_dir), "--data", str(tmp_path / "eval.jsonl")]) == 2


def test_adapter_run_loads_in_plain_peft_and_scores_the_same_via_score(
    tmp_path, tiny_model_dir, isolated_cache, capsys
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tuneforge.cli import main

    result = train_from_config(
        reward_config(tmp_path, tiny_model_dir, training={"max_steps": 4, "learning_rate": 5e-3})
    )
    out = result.output_dir
    assert out.name == "adapter"
    info = json.loads((out / "classifier.json").read_text())
    assert info["labels"] == ["reward"] and info["chat"] is True and info["max_length"] == 128
    assert "score" in json.loads((out / "adapter_config.json").read_text())["modules_to_save"]

    # Plain transformers + peft: a one-label base, then the adapter (with its head).
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, pad_token_id=info["pad_token_id"]
    )
    plain = PeftModel.from_pretrained(base, out).eval()
    ids = torch.tensor([[5, 17, 60, 90, 33, 2]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits)

    data = write_jsonl(
        tmp_path / "score.jsonl",
        [
            {"prompt": "rate the soup 3", "response": "great soup 3"},
            {
                "messages": [
                    {"role": "user", "content": "rate the soup 3"},
                    {"role": "assistant", "content": "great soup 3"},
                ]
            },
            pair_rows(1, 5)[0],
        ],
    )
    scored = tmp_path / "scored.jsonl"
    capsys.readouterr()
    assert main(["score", "--model", str(result.run_dir), "--data", str(data), "--output", str(scored)]) == 0
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    # A string prompt and the same prompt as one user message render the same way.
    assert rows[0]["score"] == pytest.approx(rows[1]["score"], abs=1e-6)
    from tuneforge.methods.preference.data import render_responses
    from tuneforge.models.load import load_tokenizer

    prompt_ids, (response,) = render_responses(load_tokenizer(str(out)), "rate the soup 3", ["great soup 3"], chat=True)
    assert rows[0]["score"] == pytest.approx(_score_alone(plain, prompt_ids + response), abs=1e-5)
    assert rows[2]["chosen_wins"] == (rows[2]["chosen_score"] > rows[2]["rejected_score"])
    err = " ".join(capsys.readouterr().err.split())
    assert "rows 3, responses 4" in err and "pairs 1" in err


def test_score_names_bad_rows_and_refuses_other_models(tmp_path, tiny_model_dir, capsys):
    from tuneforge.cli import main
    from tuneforge.methods.classify.model import load_classifier, save_classifier
    from tuneforge.models.load import load_tokenizer

    classifier = tmp_path / "cls"
    save_classifier(
        load_classifier(str(tiny_model_dir), ["a", "b", "c"], pad_token_id=2),
        classifier,
        load_tokenizer(str(tiny_model_dir)),
        info={"labels": ["a", "b", "c"]},
    )
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "answer": "x"}])
    capsys.readouterr()
    assert main(["score", "--model", str(classifier), "--data", str(rows)]) == 2
    assert "3 labels, not a reward model" in " ".join(capsys.readouterr().err.split())
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(rows)]) == 2
    assert "give the output of a `method: reward` run" in " ".join(capsys.readouterr().err.split())

    from tuneforge.methods.reward.score import parse_row

    problems: list[str] = []
    assert parse_row({"prompt": "q", "answer": "x"}, "f.jsonl:3", problems) is None
    assert parse_row({"messages": [{"role": "user", "content": "q"}]}, "f.jsonl:4", problems) is None
    assert problems == [
        "f.jsonl:3: response: missing (fields present: prompt, answer); a row to score is {prompt, response}, "
        "{messages} or {prompt, chosen, rejected}",
        "f.jsonl:4: messages: must be a list of messages ending with the assistant's response (the one to score)",
    ]


def test_sigint_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir, isolated_cache):
    from tuneforge.training.loop import TrainingInterrupted

    settings = {
        "max_steps": 4,
        "batch_size": 4,
        "gradient_accumulation_steps": 2,
        "learning_rate": 5e-3,
        "save_every": 1,
        "seed": 3,
    }
    ref = train_from_config(reward_config(tmp_path, tiny_model_dir, name="ref", training=settings))
    config = reward_config(tmp_path, tiny_model_dir, name="cut", training=settings)
    calls = {"n": 0}
    original = RewardLoss.forward

    def forward_with_signal(self, *args, **kwargs):
        calls["n"] += self.training
        if self.training and calls["n"] == 5:  # 2 micro-batches per step: the first one of step 3
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    RewardLoss.forward = forward_with_signal
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train_from_config(config)
    finally:
        RewardLoss.forward = original
    assert info.value.checkpoint.name == "step-000003"
    resumed = train_from_config(config, resume=True)
    for (name, a), (_, b) in zip(ref.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert resumed.summary["after"]["accuracy"] == pytest.approx(ref.summary["after"]["accuracy"])


@pytest.mark.parametrize("adapter", [{"type": "bottleneck", "size": 8}, {"type": "ia3"}])
def test_other_adapter_types_train_and_save_the_head(adapter, tmp_path, tiny_model_dir, isolated_cache):
    """The scalar head trains and is saved with the adapter (ours and peft's), and `score` reloads both."""
    from tuneforge.methods.reward.score import score_file

    result = train_from_config(reward_config(tmp_path, tiny_model_dir, adapter=adapter, training={"max_steps": 3}))
    assert result.output_dir.name == "adapter"
    assert [n for n, p in result.model.named_parameters() if p.requires_grad and "score" in n]
    _, summary = score_file(result.run_dir, str(tmp_path / "eval.jsonl"))
    assert summary["accuracy"] == pytest.approx(result.summary["after"]["accuracy"])

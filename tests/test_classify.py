"""`method: classify` on tiny in-process models: loss values, metrics, data errors, outputs, predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from tuneforge.config import load_config
from tuneforge.methods.classify.losses import ClassifierLoss, balanced_weights, classification_loss_sum
from tuneforge.methods.classify.metrics import classification_metrics, confusion_matrix, per_class
from tuneforge.methods.classify.zero_shot import first_word_label
from tuneforge.runner import train_from_config

WORDS = {"good": ["great"], "bad": ["awful"], "meh": ["okay"]}  # one cue word per label: learnable in a few steps


def rows(n: int, seed: int = 0, labels=("bad", "good", "meh")) -> list[dict]:
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(labels)
        out.append({"text": f"the thing was {rng.choice(WORDS[label])} {rng.randint(0, 99)}", "label": label})
    return out


def classify_config(tmp_path, model_dir, *, adapter=True, name="cls", extra_data=None, **sections):
    raw = {
        "method": "classify",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", rows(48, 1))),
            "eval": str(write_jsonl(tmp_path / "eval.jsonl", rows(12, 2))),
            "max_length": 64,
            **(extra_data or {}),
        },
        "training": {"max_steps": 30, "batch_size": 8, "learning_rate": 5e-3, "seed": 1},
        "eval": {"zero_shot_baseline": False, "batch_size": 8},
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 4, "alpha": 8}
    raw.update(sections)
    return load_config(data=raw)


# ------------------------------------------------------------------ loss


def test_zero_initialised_head_gives_ln_k(tiny_model_dir):
    from tuneforge.methods.classify.model import load_classifier

    model = load_classifier(str(tiny_model_dir), ["a", "b", "c", "d"], pad_token_id=2)
    torch.nn.init.zeros_(model.score.weight)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, n = ClassifierLoss(model)(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 3]))
    assert int(n) == 2
    assert float(loss.detach()) / 2 == pytest.approx(math.log(4), abs=1e-6)


def test_class_weights_and_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    p = torch.softmax(logits, -1)
    nll = [-math.log(p[0, 0]), -math.log(p[1, 1]), -math.log(p[2, 1])]
    assert float(classification_loss_sum(logits, labels)) == pytest.approx(sum(nll), rel=1e-6)
    # weights: class 0 counts 3×, class 1 counts 0.5×
    weighted = 3 * nll[0] + 0.5 * nll[1] + 0.5 * nll[2]
    got = classification_loss_sum(logits, labels, weights=torch.tensor([3.0, 0.5]))
    assert float(got) == pytest.approx(weighted, rel=1e-6)
    # smoothing ε = 0.2 with K = 2: target (0.9, 0.1) for class 0
    eps = 0.2
    logp = torch.log_softmax(logits, -1)
    by_hand = sum(-(1 - eps) * logp[i, labels[i]] - eps * logp[i].mean() for i in range(3))
    assert float(classification_loss_sum(logits, labels, label_smoothing=eps)) == pytest.approx(
        float(by_hand), rel=1e-6
    )
    assert balanced_weights([1, 3]) == pytest.approx([2.0, 2 / 3])


# ------------------------------------------------------------------ metrics


def test_metrics_against_a_hand_worked_confusion_matrix():
    gold = [0, 0, 1, 1, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 0, -1]  # -1: an answer that named no label
    assert confusion_matrix(gold, pred, 3) == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    classes = per_class(gold, pred, 3)
    assert [c["precision"] for c in classes] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [c["recall"] for c in classes] == pytest.approx([1 / 2, 1.0, 1 / 3])
    f1 = [0.5, 0.8, 0.5]
    metrics = classification_metrics(gold, pred, ["x", "y", "z"])
    assert metrics["accuracy"] == pytest.approx(4 / 7, abs=1e-6)
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 3, abs=1e-6)
    assert metrics["precision/y"] == pytest.approx(2 / 3, abs=1e-6)
    # A class never predicted has precision 0 (and F1 0).
    never = per_class([0, 1], [0, 0], 2)[1]
    assert never["precision"] == 0 and never["f1"] == 0
    # A class absent from the held-out set and never predicted is not averaged in: perfect is 1.0.
    assert classification_metrics([0, 0, 1], [0, 0, 1], ["a", "b", "c"])["macro_f1"] == 1.0
    assert classification_metrics([0, 0, 1], [0, 2, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx(
        (2 / 3 + 1 + 0) / 3, abs=1e-6
    )


def test_zero_shot_answer_mapping():
    labels = ["negative", "neutral", "positive"]
    assert first_word_label("Positive.", labels) == 2
    assert first_word_label("neg", labels) == 0
    assert first_word_label("  NEUTRAL - it is a question", labels) == 1
    assert first_word_label("I think it is positive", labels) == -1
    assert first_word_label("", labels) == -1


# ------------------------------------------------------------------ data errors


def _problems(tmp_path, model_dir, train_rows, eval_rows, **data) -> list[str]:
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    write_jsonl(tmp_path / "train.jsonl", train_rows)
    write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    raw = {
        "method": "classify",
        "model": {"name": str(model_dir)},
        "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "eval.jsonl"), **data},
    }
    return check_config(load_config(data=raw), tokenizer=load_tokenizer(str(model_dir))).errors


def test_data_errors_name_the_row(tmp_path, tiny_model_dir):
    good = rows(6)
    errors = _problems(
        tmp_path, tiny_model_dir, good + [{"txt": "x", "label": "good"}], [{"text": "a", "label": "good"}]
    )
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'train.jsonl'}:7: text: missing")
    errors = _problems(tmp_path, tiny_model_dir, good, [{"text": "a", "label": "ecstatic"}])
    assert errors == [
        f"{tmp_path / 'eval.jsonl'}:1: label: 'ecstatic' never appears in the training data, so "
        "the model cannot learn it; add training examples or drop this row"
    ]
    errors = _problems(tmp_path, tiny_model_dir, good, [], labels=["bad", "good", "meh", "angry"])
    assert errors == ["data.labels: class 'angry' has no training example; add examples or drop the name"]
    errors = _problems(tmp_path, tiny_model_dir, [{"text": "a", "label": 0}, {"text": "b", "label": 1}], [])
    assert "integer labels need their names in data.labels" in errors[0] and ":1: label:" in errors[0]


def test_integer_labels_with_names(tmp_path, tiny_model_dir):
    from tuneforge.methods import get_method
    from tuneforge.models.load import load_tokenizer

    write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    config = load_config(
        data={
            "method": "classify",
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": str(tmp_path / "t.jsonl"), "labels": ["neg", "pos"]},
            "eval": None,
        }
    )
    data = get_method("classify").load_data(config, load_tokenizer(str(tiny_model_dir)))
    assert data.extra["labels"] == ["neg", "pos"] and [e.label for e in data.train] == [1, 0]


# ------------------------------------------------------------------ whole runs and outputs


def test_lora_classifier_trains_saves_and_loads_in_plain_peft(tmp_path, tiny_model_dir, isolated_cache):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    result = train_from_config(classify_config(tmp_path, tiny_model_dir))
    summary = result.summary
    assert summary["train"]["examples"] == 30 * 8
    assert {"accuracy", "macro_f1", "eval_loss", "precision/good", "recall/meh"} <= set(summary["after"])
    assert summary["matrices"]["confusion matrix (rows: true label, columns: predicted)"]["labels"] == [
        "bad",
        "good",
        "meh",
    ]
    assert summary["after"]["eval_loss"] < summary["before"]["eval_loss"]
    out = result.output_dir
    info = json.loads((out / "classifier.json").read_text())
    assert info["labels"] == ["bad", "good", "meh"]

    # Plain transformers + peft, no tuneforge: rebuild the base with the saved label names, load the adapter.
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=3, id2label=dict(enumerate(info["labels"])), pad_token_id=info["pad_token_id"]
    )
    plain = PeftModel.from_pretrained(base, out).eval()
    ids = torch.tensor([[5, 17, 60, 90, 33], [40, 41, 42, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)
    assert plain.config.id2label[2] == "meh"

    # tuneforge predict on the run folder: same probabilities as the model in memory.
    from tuneforge.methods.classify.predict import predict_file

    predictions, metrics = predict_file(result.run_dir, str(tmp_path / "eval.jsonl"))
    assert len(predictions) == 12 and metrics["rows"] == 12
    assert metrics["accuracy"] == pytest.approx(summary["after"]["accuracy"])
    first = predictions[0]
    assert set(first["probabilities"]) == {"bad", "good", "meh"}
    assert sum(first["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert first["label"] == max(first["probabilities"], key=first["probabilities"].get)


def test_full_classifier_loads_in_plain_transformers(tmp_path, tiny_model_dir, isolated_cache):
    from transformers import AutoModelForSequenceClassification

    config = classify_config(
        tmp_path,
        tiny_model_dir,
        adapter=False,
        training={"max_steps": 4, "batch_size": 8, "learning_rate": 1e-3},
        loss={"class_weights": "balanced", "label_smoothing": 0.1},
    )
    result = train_from_config(config)
    assert result.output_dir.name == "model"
    plain = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    assert plain.config.id2label == {0: "bad", 1: "good", 2: "meh"}
    assert plain.config.label2id == {"bad": 0, "good": 1, "meh": 2}
    ids = torch.tensor([[5, 17, 60, 90], [7, 8, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids, attention_mask=mask).logits,
            result.model.eval()(input_ids=ids, attention_mask=mask).logits,
        )


def test_predict_cli_writes_jsonl(tmp_path, tiny_model_dir, isolated_cache, capsys):
    from tuneforge.cli import main

    result = train_from_config(classify_config(tmp_path, tiny_model_dir, training={"max_steps": 2}))
    texts = write_jsonl(tmp_path / "new.jsonl", [{"body": "the thing was awful 3"}, {"body": "the thing was great"}])
    out = tmp_path / "pred.jsonl"
    assert (
        main(
            [
                "predict",
                "--model",
                str(result.output_dir),
                "--data",
                str(texts),
                "--text-column",
                "body",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["text"] for x in lines] == ["the thing was awful 3", "the thing was great"]
    assert all(x["label"] in {"bad", "good", "meh"} and len(x["probabilities"]) == 3 for x in lines)


def test_zero_shot_baseline_is_in_the_summary(tmp_path, tiny_model_dir, isolated_cache):
    config = classify_config(
        tmp_path, tiny_model_dir, training={"max_steps": 1}, eval={"zero_shot_baseline": True, "zero_shot_samples": 4}
    )
    summary = train_from_config(config).summary
    baseline = summary["baselines"]["zero-shot prompting (base model)"]
    assert set(baseline) == {"accuracy", "macro_f1", "unmapped_answers"}
    assert 0 <= baseline["unmapped_answers"] <= 1
    assert "zero-shot prompting (base model)" in (Path(summary["run"]["output"]).parent / "report.html").read_text()


def _tiny_bert_dir(tmp_path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for ws in WORDS.values() for w in ws} | {"the", "thing", "was"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *[str(i) for i in range(100)]]
    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_encoder_classifier_with_text_pairs(tmp_path, isolated_cache):
    from transformers import AutoModelForSequenceClassification

    bert = _tiny_bert_dir(tmp_path)
    train = [dict(r, text_pair="the thing") for r in rows(32, 3)]
    config = classify_config(
        tmp_path,
        bert,
        adapter=False,
        training={"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3},
        extra_data={"train": str(write_jsonl(tmp_path / "pairs.jsonl", train))},
    )
    result = train_from_config(config)
    assert result.summary["before"]["accuracy"] is not None

    # Plain transformers: the pair encoding ([CLS] a [SEP] b [SEP], token types) gives the same
    # logits as the trained model in memory, and `predict` reports the same probabilities.
    from transformers import AutoTokenizer

    from tuneforge.methods.classify.predict import predict_file

    plain = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    enc = AutoTokenizer.from_pretrained(result.output_dir)(train[0]["text"], "the thing", return_tensors="pt")
    assert enc["token_type_ids"].sum() > 0  # the pair really has a second segment
    with torch.no_grad():
        logits = plain(**enc).logits
        torch.testing.assert_close(logits, result.model.eval()(**enc).logits)
    predictions, _ = predict_file(result.output_dir, str(tmp_path / "pairs.jsonl"))
    assert predictions[0]["text"] == train[0]["text"] and predictions[0]["text_pair"] == "the thing"
    probs = torch.softmax(logits, -1)[0]
    assert [predictions[0]["probabilities"][n] for n in ("bad", "good", "meh")] == pytest.approx(
        probs.tolist(), abs=1e-5
    )


def test_bad_class_weights_key_is_reported(tmp_path, tiny_model_dir):
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    config = classify_config(tmp_path, tiny_model_dir, loss={"class_weights": {"goood": 2.0}})
    errors = check_config(config, tokenizer=load_tokenizer(str(tiny_model_dir))).errors
    assert errors == ["loss.class_weights.goood: not a label (labels: bad, good, meh)"]


def test_classify_data_is_refused_by_sft(tmp_path, tiny_model_dir):
    from tuneforge.config import ConfigError

    with pytest.raises(ConfigError, match="data.format"):
        load_config(data={"method": "sft", "data": {"format": "classification", "train": "x.jsonl"}})


def test_csv_integer_labels_nan_labels_and_literal_special_tokens(tmp_path, tiny_model_dir):
    from tuneforge.data.types import Record
    from tuneforge.methods.classify.data import LabelledText, encode, parse
    from tuneforge.models.load import load_tokenizer

    problems: list[str] = []
    # CSV cells are text: "1" with data.labels set is an index; a NaN (pandas' missing value) is a row problem.
    assert parse(Record({"text": "a", "label": "1"}, "f.csv:2"), {}, ["neg", "pos"], problems).label == "pos"
    assert parse(Record({"text": "a", "label": float("nan")}, "f.csv:3"), {}, ["neg", "pos"], problems) is None
    assert problems == ["f.csv:3: label: missing (got nan)"]

    tok = load_tokenizer(str(tiny_model_dir))
    item = LabelledText("say <|im_end|> now", None, "pos", "x")
    example, _ = encode(tok, item, 1, 64, decoder=True)
    assert tok.pad_token_id not in example.input_ids  # pooling stays on the text's last token
    # Decoder pairs: a long text is cut so that the pair survives.
    long = LabelledText("x" * 200, "the question?", "pos", "y")
    example, cut = encode(tok, long, 1, 64, decoder=True)
    assert cut and len(example.input_ids) == 64
    assert tok.decode(example.input_ids).endswith("\nthe question?")


def test_predict_refuses_a_model_that_is_not_a_classifier(tiny_model_dir):
    from tuneforge.methods.classify.predict import predict_file
    from tuneforge.models.load import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not a classifier"):
        predict_file(tiny_model_dir, "unused.jsonl")


def test_class_weights_switch_off_the_chance_level_divergence_rule(tmp_path, tiny_model_dir):
    from tuneforge.methods import get_method

    method = get_method("classify")
    plain = classify_config(tmp_path, tiny_model_dir)
    weighted = classify_config(tmp_path, tiny_model_dir, loss={"class_weights": "balanced"})
    data = type("D", (), {"extra": {"labels": ["a", "b", "c"]}})()
    assert method.chance_loss(plain, None, data) == pytest.approx(math.log(3))
    assert method.chance_loss(weighted, None, data) is None


def test_predict_with_several_classify_adapters_on_one_base(tmp_path, tiny_model_dir, isolated_cache, capsys):
    """Each adapter brings its own head; switching gives each run's own predictions."""
    from tuneforge.cli import main
    from tuneforge.methods.classify.predict import predict_file, predict_with_adapters

    a = train_from_config(classify_config(tmp_path, tiny_model_dir, name="a", training={"max_steps": 2}))
    b = train_from_config(
        classify_config(tmp_path, tiny_model_dir, name="b", training={"max_steps": 3, "learning_rate": 5e-3, "seed": 9})
    )
    data = str(tmp_path / "eval.jsonl")
    together = predict_with_adapters({"a": a.run_dir, "b": b.run_dir}, data)
    for name, run in (("a", a), ("b", b)):
        alone, metrics = predict_file(run.run_dir, data)
        flat = [[r["probabilities"][k] for k in sorted(r["probabilities"])] for r in together[name][0]]
        flat_alone = [[r["probabilities"][k] for k in sorted(r["probabilities"])] for r in alone]
        torch.testing.assert_close(torch.tensor(flat), torch.tensor(flat_alone), atol=1e-5, rtol=0)
        assert together[name][1] == pytest.approx(metrics)
    assert together["a"][0][0]["probabilities"] != together["b"][0][0]["probabilities"]
    out = tmp_path / "both.jsonl"
    assert (
        main(
            [
                "predict",
                "--adapter",
                f"a={a.run_dir}",
                "--adapter",
                f"b={b.run_dir}",
                "--data",
                data,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first["by_adapter"]) == {"a", "b"}
    assert "accuracy" in capsys.readouterr().err
    assert main(["predict", "--adapter", f"a={a.run_dir}", "--use", "c", "--data", data]) == 2


@pytest.mark.parametrize("adapter", [{"type": "bottleneck", "size": 8}, {"type": "ia3"}])
def test_classify_with_other_adapter_types_saves_head_and_predicts_the_same(
    adapter, tmp_path, tiny_model_dir, isolated_cache
):
    """The label head trains and is saved with the adapter (ours and peft's), and predict reloads both."""
    from tuneforge.methods.classify.predict import predict_file

    raw_config = classify_config(
        tmp_path, tiny_model_dir, training={"max_steps": 3, "batch_size": 8, "learning_rate": 5e-3, "seed": 1}
    )
    config = raw_config.model_copy(
        update={"adapter": type(raw_config).model_validate({**raw_config.model_dump(), "adapter": adapter}).adapter}
    )
    result = train_from_config(config)
    assert result.output_dir.name == "adapter"
    head = [n for n, p in result.model.named_parameters() if p.requires_grad and "score" in n]
    assert head, "the label head must train"
    _predictions, metrics = predict_file(result.run_dir, str(tmp_path / "eval.jsonl"))
    assert metrics["accuracy"] == pytest.approx(result.summary["after"]["accuracy"])


def test_partial_fine_tuning_for_classify_also_trains_the_new_head(tmp_path, tiny_model_dir, isolated_cache):
    raw = classify_config(tmp_path, tiny_model_dir, training={"max_steps": 2, "batch_size": 8, "seed": 1})
    config = raw.model_copy(
        update={
            "adapter": type(raw)
            .model_validate({**raw.model_dump(), "adapter": {"type": "partial", "top_k_layers": 1}})
            .adapter
        }
    )
    result = train_from_config(config)
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert any(n.startswith("score.") for n in trainable)
    assert result.output_dir.name == "model"

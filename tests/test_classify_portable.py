"""A classify output used without tuneforge, and a classifier as the base of another label set (issue #20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_classify import classify_config

from tuneforge.runner import train_from_config

# Run in a fresh interpreter: plain transformers + peft, nothing from tuneforge. argv: adapter folder,
# base folder, texts (JSON). Prints the probabilities and the label names the loaded model gives.
PLAIN_LOAD = """
import json, sys
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

adapter, base_folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
info = json.load(open(f"{adapter}/classifier.json"))
config = AutoConfig.from_pretrained(f"{adapter}/base_config.json")
base = AutoModelForSequenceClassification.from_pretrained(base_folder, config=config, **info["base_kwargs"])
model = PeftModel.from_pretrained(base, adapter).eval()
tokenizer = AutoTokenizer.from_pretrained(adapter)
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    probs = torch.softmax(model(**batch).logits, -1)
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
assert not any(name.split(".")[0] == "tuneforge" for name in sys.modules), "tuneforge was imported"
print(json.dumps({"probs": probs.tolist(), "labels": labels}))
"""


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.fixture
def tiny_embedded(tiny_model_dir, isolated_cache, monkeypatch):
    """The tiny model registered as an embedded model: tuneforge loads it from its cache folder, as it
    does the converted SmolLM2; that folder is a machine-local path no output should name."""
    import shutil

    from tuneforge.models import embedded

    monkeypatch.setitem(
        embedded.EMBEDDED_MODELS,
        "tiny-embedded",
        embedded.EmbeddedModel(
            "tiny-embedded", "tiny_embedded_pkg", "tiny.Q4_1.gguf", "causal-lm", "a tiny test model"
        ),
    )
    cached = embedded.converted_dir(embedded.EMBEDDED_MODELS["tiny-embedded"])
    shutil.copytree(tiny_model_dir, cached)
    return cached


def test_classify_adapter_loads_with_plain_peft_in_a_fresh_process(tmp_path, tiny_embedded):
    result = train_from_config(
        classify_config(tmp_path, "tiny-embedded", training={"max_steps": 4, "batch_size": 8, "learning_rate": 5e-3})
    )
    out = result.output_dir
    assert out.name == "adapter"

    info = json.loads((out / "classifier.json").read_text())
    assert info["base_model"] == info["model_name"] == "tiny-embedded"
    assert info["base_kwargs"] == {}
    base_config = json.loads((out / "base_config.json").read_text())
    assert base_config["id2label"] == {"0": "bad", "1": "good", "2": "meh"} and base_config["pad_token_id"] == 2
    assert base_config["problem_type"] == "single_label_classification"
    assert base_config["architectures"] == ["LlamaForSequenceClassification"]
    for written in (info, base_config):
        assert not [s for s in _strings(written) if os.path.isabs(s) or str(tmp_path) in s]
    # The embedded name is not a hub id: what to load instead is written down, in the json and the README.
    assert "tiny_embedded_pkg" in info["base_model_note"] and "gguf_file" in info["base_model_note"]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny-embedded"
    assert "score" in adapter_config["modules_to_save"]
    readme = (out / "README.md").read_text()
    assert str(tmp_path) not in readme and 'gguf_file="tiny.Q4_1.gguf"' in readme
    assert "PeftModel.from_pretrained(base, adapter)" in readme and "base_config.json" in readme

    from tuneforge.methods.classify.predict import predict_file

    predictions, _ = predict_file(out, str(tmp_path / "eval.jsonl"))
    texts = [p["text"] for p in predictions]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    run = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(out), str(tiny_embedded), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    plain = json.loads(run.stdout.strip().splitlines()[-1])
    assert plain["labels"] == ["bad", "good", "meh"]
    expected = [[p["probabilities"][name] for name in plain["labels"]] for p in predictions]
    torch.testing.assert_close(torch.tensor(plain["probs"]), torch.tensor(expected), atol=2e-6, rtol=0)
    assert [plain["labels"][max(range(3), key=row.__getitem__)] for row in plain["probs"]] == [
        p["label"] for p in predictions
    ]


def _two_label_classifier(tmp_path: Path) -> Path:
    """A saved 2-label LlamaForSequenceClassification (as a sentiment model off the hub would be)."""
    from tiny import tiny_model, tiny_tokenizer
    from transformers import LlamaForSequenceClassification

    tok = tiny_tokenizer()
    lm = tiny_model(len(tok))
    config = lm.config
    config.num_labels, config.id2label = 2, {0: "negative", 1: "positive"}
    config.label2id = {"negative": 0, "positive": 1}
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(config)
    model.model.load_state_dict(lm.model.state_dict())
    folder = tmp_path / "sentiment-2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_a_classifier_with_another_label_count_is_a_base(tmp_path, isolated_cache, capsys):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.methods.classify.model import load_classifier

    source_dir = _two_label_classifier(tmp_path)
    source = AutoModelForSequenceClassification.from_pretrained(source_dir)
    capsys.readouterr()

    three = load_classifier(str(source_dir), ["bad", "good", "meh"], pad_token_id=2)
    note = capsys.readouterr().err
    assert three.score.weight.shape == (3, 32)
    torch.testing.assert_close(three.model.embed_tokens.weight, source.model.embed_tokens.weight)  # backbone kept
    assert note.count("head") == 1 and "2 labels (negative, positive)" in note
    assert "score.weight (2, 32) → (3, 32)" in " ".join(note.split())

    # Same label count: the head is kept, and nothing to say.
    two = load_classifier(str(source_dir), ["no", "yes"], pad_token_id=2)
    torch.testing.assert_close(two.score.weight, source.score.weight)
    assert "reset" not in capsys.readouterr().err

    # A whole run on it (LoRA: the reset head trains as modules_to_save), and predict on its output.
    result = train_from_config(classify_config(tmp_path, source_dir, training={"max_steps": 3, "batch_size": 8}))
    assert "score.weight (2, 32) → (3, 32)" in " ".join(capsys.readouterr().err.split())
    assert result.summary["after"]["accuracy"] is not None
    info = json.loads((result.output_dir / "classifier.json").read_text())
    assert info["base_kwargs"] == {"ignore_mismatched_sizes": True}  # plain loading of the base needs it too
    assert "config=config, ignore_mismatched_sizes=True)" in (result.output_dir / "README.md").read_text()
    from peft import PeftModel
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(result.output_dir / "base_config.json")
    base = AutoModelForSequenceClassification.from_pretrained(source_dir, config=config, **info["base_kwargs"])
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    ids = torch.tensor([[5, 17, 60, 90, 33], [40, 41, 42, 2, 2]])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids, attention_mask=(ids != 2).long()).logits,
            result.model.eval()(input_ids=ids, attention_mask=(ids != 2).long()).logits,
        )
    capsys.readouterr()

    from tuneforge.methods.classify.predict import predict_file

    _predictions, metrics = predict_file(result.run_dir, str(tmp_path / "eval.jsonl"))
    assert metrics["accuracy"] == pytest.approx(result.summary["after"]["accuracy"])
    assert "reset" not in capsys.readouterr().err  # loading a trained output says nothing about the base's head

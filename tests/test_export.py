"""Export to merged / GGUF / Ollama and verify-export (issue #24): tiny models, CPU, offline.

What is asserted: GGUF logits equal the merged model's within f16 / q8_0 rounding (read back
through transformers' GGUF loader, an independent reader that un-permutes q/k); the template, stop
tokens and system prompt in the GGUF metadata and the Modelfile render the run's training prompt
token for token; verify-export passes on faithful exports and fails on a wrong template; what
cannot be exported is refused with the reason.
"""

from __future__ import annotations

import argparse
import json
import random

import pytest
import torch
import yaml
from conftest import write_jsonl
from tiny import CHATML_TEMPLATE, SPECIALS, tiny_model

from tuneforge.cli import main as tuneforge_main

SYSTEM = 'Say "ok".\nAlways — briefly.'  # quotes, a newline and non-ASCII: the template literal must survive them
IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 1, 60]])


def bpe_tokenizer():
    """tests/tiny.py's byte-level ChatML tokenizer plus one merge ("o k" → "ok"): a GGUF needs merges to read back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    vocab["ok"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("o", "k")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def train_run(root, *, adapter: bool, quantize: str | None = None, steps: int = 30):
    """A tiny SFT run answering "ok" to every note, with a system prompt; returns the run folder."""
    tok = bpe_tokenizer()
    model = tiny_model(len(tok))
    if adapter:  # random embeddings of std 0.02 give near-zero logits LoRA cannot scale up; make them matter
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(25)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    rng = random.Random(0)

    def rows(n):
        return [
            {
                "messages": [
                    {"role": "user", "content": f"note {rng.randint(0, 99)}"},
                    {"role": "assistant", "content": "ok"},
                ]
            }
            for _ in range(n)
        ]

    config = {
        "method": "sft",
        "name": "tiny",
        "output_dir": str(root / "runs"),
        "model": {"name": str(root / "base")},
        "data": {
            "format": "chat",
            "train": str(write_jsonl(root / "train.jsonl", rows(48))),
            "eval": str(write_jsonl(root / "eval.jsonl", rows(4))),
            "max_length": 128,
            "system_prompt": SYSTEM,
        },
        "training": {"epochs": 50, "max_steps": steps, "batch_size": 8, "learning_rate": 0.02 if adapter else 0.01},
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 8},
    }
    if adapter:
        config["adapter"] = {"type": "lora", "r": 8, "alpha": 16}
    if quantize:
        config["model"]["quantize"] = quantize
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    assert tuneforge_main(["train", str(root / "run.yaml")]) == 0
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("lora"), adapter=True)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run = train_run(tmp_path_factory.mktemp("full"), adapter=False)
    assert json.loads((run / "summary.json").read_text())["after"]["exact_match"] == 1.0  # it learned to answer
    return run


def cli(*argv: str) -> int:
    """The export commands through their own add_parser, as cli.py will register them."""
    from tuneforge.export.command import add_parser

    parser = argparse.ArgumentParser(prog="tuneforge")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def gguf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


# ---------------------------------------------------------------------------- weights


@pytest.mark.parametrize(("quant", "atol"), [("f16", 5e-3), ("q8_0", 2e-2)])
def test_gguf_logits_equal_the_merged_models(lora_run, tmp_path, quant, atol):
    from tuneforge.export.source import load_merged_model, resolve_source

    out = tmp_path / quant
    assert cli("export", str(lora_run), "--format", "gguf", "--quant", quant, "--output", str(out)) == 0
    merged, note = load_merged_model(resolve_source(lora_run))
    assert note is None
    expected = logits(merged)
    got = logits(gguf_model(out / f"tiny.{quant}.gguf"))
    scale = expected.abs().max()
    # Stated tolerance, relative to the largest logit: f16 keeps ~11 bits per weight (measured 0.26% here,
    # the x25 embeddings make logits large), q8_0 8 bits per 32-value block (measured 0.7%).
    assert (got - expected).abs().max() <= atol * scale
    assert torch.equal(got.argmax(-1), expected.argmax(-1))  # greedy decoding picks the same tokens
    from transformers import AutoModelForCausalLM

    plain_base = AutoModelForCausalLM.from_pretrained(lora_run.parent.parent / "base").eval()
    # the LoRA moved the logits far more than the export's rounding: the check can tell them apart
    assert (logits(plain_base) - expected).abs().max() > 10 * atol * scale


@pytest.mark.parametrize("shape", ["llama", "mistral", "qwen2"])
def test_gguf_writer_round_trips_each_shape(tmp_path, shape):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.export.gguf_write import write_gguf

    tok = bpe_tokenizer()
    config = AutoConfig.for_model(
        shape,
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: k rows permute per kv head
        max_position_embeddings=256,
        tie_word_embeddings=shape == "qwen2",
        pad_token_id=2,
        eos_token_id=2,
        bos_token_id=1,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    if shape == "qwen2":  # its q/k/v biases are zero at init: make them count
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_()
    path = tmp_path / "m.f16.gguf"
    facts = write_gguf(model, tok, path, quant="f16", chat_template=CHATML_TEMPLATE, eot_token_id=2, name="t")
    assert facts.architecture == ("qwen2" if shape == "qwen2" else "llama")
    expected = logits(model)
    assert (logits(gguf_model(path)) - expected).abs().max() <= 2e-3 * expected.abs().max()


def test_a_qlora_run_merges_into_the_dequantized_base(tmp_path):
    """W = dequant(Q(W0)) + dW equals what the run computed; merging into the fp32 base (what `merge` does) does not."""
    pytest.importorskip("bitsandbytes")
    from tuneforge.config.loader import validate_dict
    from tuneforge.export.source import load_merged_model, resolve_source
    from tuneforge.registry import get_method

    run = train_run(tmp_path, adapter=True, quantize="4bit", steps=4)
    source = resolve_source(run)
    merged, note = load_merged_model(source)
    assert note is not None and "dequantized" in note
    trained = get_method("sft").load_output(validate_dict(source.config), source.folder, dtype=torch.float32).eval()
    expected = logits(trained)  # the run's own forward: NF4 base + LoRA, unmerged
    assert (logits(merged) - expected).abs().max() <= 1e-5 * expected.abs().max()  # float rounding only
    source.quantize = None  # the full-precision base instead: NF4 rounding is now missing from the weights
    naive, _ = load_merged_model(source)
    assert (logits(naive) - expected).abs().max() > 100 * 1e-5 * expected.abs().max()


# ---------------------------------------------------------------------------- prompt format


def test_gguf_and_modelfile_carry_the_runs_template_and_stops(lora_run, tmp_path):
    import gguf

    from tuneforge.data.run_prompt import render_run_prompt
    from tuneforge.export.ollama import parse_modelfile
    from tuneforge.export.source import resolve_source
    from tuneforge.export.template import render_chat, render_go_template
    from tuneforge.models.load import load_tokenizer

    out = tmp_path / "ollama"
    assert cli("export", str(lora_run), "--format", "ollama", "--output", str(out)) == 0
    source = resolve_source(lora_run)
    tok = load_tokenizer(str(source.folder))
    messages = [{"role": "user", "content": "note 7"}]
    trained = tok.decode(render_run_prompt(tok, messages, source.rendering))
    assert SYSTEM in trained  # the run's system prompt is part of what it trained on

    fields = gguf.GGUFReader(str(out / "tiny.f16.gguf")).fields
    template = fields["tokenizer.chat_template"].contents()
    assert render_chat(template, messages, bos_token="<|im_start|>", eos_token="<|im_end|>") == trained
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tok.convert_tokens_to_ids("<|im_end|>")

    modelfile = parse_modelfile(out / "Modelfile")
    assert modelfile.model == "./tiny.f16.gguf"
    assert modelfile.system == SYSTEM
    assert modelfile.stops == ["<|im_end|>"]
    assert render_go_template(modelfile.template, system=modelfile.system, prompt="note 7") == trained
    # no SYSTEM: the template's own default, as the Jinja template renders a conversation without one
    assert render_go_template(modelfile.template, system=None, prompt="note 7") == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    record = json.loads((out / "tuneforge_export.json").read_text())
    assert record["stop_token_ids"] == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_merged_folder_renders_and_stops_as_trained(full_run, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from tuneforge.data.run_prompt import render_run_prompt
    from tuneforge.export.source import resolve_source
    from tuneforge.models.load import load_tokenizer

    out = tmp_path / "merged"
    assert cli("export", str(full_run), "--format", "merged", "--output", str(out)) == 0
    messages = [{"role": "user", "content": "note 3"}]
    source = resolve_source(full_run)
    trained = render_run_prompt(load_tokenizer(str(source.folder)), messages, source.rendering)
    plain = AutoTokenizer.from_pretrained(out).apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert list(plain["input_ids"]) == trained  # plain transformers, no tuneforge: the training prompt
    assert GenerationConfig.from_pretrained(out).eos_token_id == 2  # <|im_end|>: the trained end of turn


# ---------------------------------------------------------------------------- verify-export


@pytest.mark.parametrize(
    ("fmt", "runtime"),
    [
        ("merged", "auto"),
        ("gguf", "transformers"),  # the fallback: transformers reading the GGUF
        ("ollama", "transformers"),
        ("gguf", "llama-cpp"),  # llama-cpp-python, when installed (pip install 'tuneforge[gguf]')
        ("ollama", "llama-cpp"),
    ],
)
def test_verify_export_passes_a_faithful_export(full_run, tmp_path, fmt, runtime, capsys):
    from tuneforge.export.runtimes import has_llama_cpp
    from tuneforge.export.verify import verify_export

    if runtime == "llama-cpp" and not has_llama_cpp():
        pytest.skip("llama-cpp-python is not installed (optional extra 'gguf')")
    out = tmp_path / fmt
    assert cli("export", str(full_run), "--format", fmt, "--output", str(out)) == 0
    outcome = verify_export(out, full_run, runtime=runtime)
    record = outcome.record
    assert record["runtime"].startswith(
        {"llama-cpp": "llama-cpp-python", "transformers": "transformers"}.get(runtime, "")
    )
    assert outcome.passed, outcome.failures
    assert record["prompt_parity"] == 1.0 and record["stop_rate"] == 1.0
    assert record["metrics"]["exact_match"]["export"] == record["metrics"]["exact_match"]["run"] == 1.0
    assert record["agreement"] == 1.0


def test_verify_export_catches_a_wrong_template(full_run, tmp_path, capsys):
    out = tmp_path / "ollama"
    assert cli("export", str(full_run), "--format", "ollama", "--output", str(out)) == 0
    modelfile = out / "Modelfile"
    # A hand-written "ChatML" template that forgets the system turn: the classic export bug
    text = modelfile.read_text()
    start, end = text.index('TEMPLATE """') + len('TEMPLATE """'), text.index('"""', text.index('TEMPLATE """') + 12)
    wrong = "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
    modelfile.write_text(text[:start] + wrong + text[end:])
    assert cli("verify-export", str(out), "--run", str(full_run)) == 1
    err = capsys.readouterr().err
    assert "4/4 prompts differ from the run's training prompts" in err


def test_verify_export_catches_a_merged_folder_without_the_runs_template(full_run, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = tmp_path / "merged"
    assert cli("export", str(full_run), "--format", "merged", "--output", str(out)) == 0
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = CHATML_TEMPLATE  # the base's template: the run's system prompt is gone
    tok.save_pretrained(out)
    assert cli("verify-export", str(out), "--run", str(full_run)) == 1
    assert "prompts differ from the run's training prompts" in capsys.readouterr().err


def test_verify_export_records_into_the_report(full_run, tmp_path):
    from tuneforge.eval.export_report import END, START

    out = tmp_path / "merged"
    assert cli("export", str(full_run), "--format", "merged", "--output", str(out)) == 0
    for _ in range(2):  # a second verification replaces the section, never duplicates it
        assert cli("verify-export", str(out), "--run", str(full_run)) == 0
    page = (full_run / "report.html").read_text()
    assert page.count(START) == 1 and page.count(END) == 1
    section = page[page.index(START) : page.index(END)]
    assert "<h2>Export</h2>" in section and "merged" in section and "pass" in section
    saved = json.loads((full_run / "exports" / "merged.json").read_text())
    assert saved["passed"] and saved["samples"] == 4


# ---------------------------------------------------------------------------- refusals


def test_unsupported_exports_are_refused_with_the_reason(lora_run, tmp_path, capsys):
    assert cli("export", str(lora_run), "--format", "gguf", "--quant", "q4_k_m", "--output", str(tmp_path / "a")) == 2
    assert "llama-quantize" in capsys.readouterr().err
    assert cli("export", str(lora_run), "--format", "merged", "--quant", "q8_0", "--output", str(tmp_path / "b")) == 2
    assert "f32, f16 or bf16" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_soft_prompts_and_classifiers_are_refused(lora_run, tmp_path, capsys):
    import shutil

    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "soft"
    shutil.copytree(lora_run, run, ignore=shutil.ignore_patterns("adapter", "exports"))
    base = AutoModelForCausalLM.from_pretrained(lora_run.parent.parent / "base")
    get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)).save_pretrained(
        run / "adapter"
    )
    assert cli("export", str(run), "--format", "gguf", "--output", str(tmp_path / "g")) == 2
    assert "virtual tokens" in capsys.readouterr().err

    config = yaml.safe_load((lora_run / "config.yaml").read_text())
    config["method"] = "classify"
    classify = tmp_path / "classify"
    shutil.copytree(lora_run, classify, ignore=shutil.ignore_patterns("exports"))
    (classify / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli("export", str(classify), "--format", "ollama", "--output", str(tmp_path / "o")) == 2
    assert "text generators only" in capsys.readouterr().err


# ---------------------------------------------------------------------------- template pieces


def test_default_system_prompt_survives_the_template_literal():
    from tuneforge.data.templates import PromptRendering
    from tuneforge.export.template import render_chat, run_chat_template

    tok = bpe_tokenizer()
    template = run_chat_template(tok, PromptRendering(system_prompt=SYSTEM))
    messages = [{"role": "user", "content": "hi"}]
    expected = tok.apply_chat_template(
        [{"role": "system", "content": SYSTEM}] + messages, tokenize=False, add_generation_prompt=True
    )
    assert render_chat(template, messages) == expected
    own = [{"role": "system", "content": "mine"}] + messages  # a conversation's own system message wins
    assert render_chat(template, own) == tok.apply_chat_template(own, tokenize=False, add_generation_prompt=True)


def test_turn_end_of_the_plain_template_is_eos():
    from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE
    from tuneforge.export.template import turn_end

    end = turn_end(bpe_tokenizer(), PLAIN_CHAT_TEMPLATE)
    assert end.stop_text == "<|im_end|>" and end.stop_id == 2 and end.text == "<|im_end|>\n\n"


def test_go_template_subset():
    from tuneforge.export import ExportRefused
    from tuneforge.export.template import render_go_template

    template = "{{- if .System }}S:{{ .System }}\n{{ else }}none\n{{ end -}}\n  U:{{ .Prompt }}\nA:{{ .Response }}END"
    assert render_go_template(template, system="x", prompt="p") == "S:x\nU:p\nA:"
    assert render_go_template(template, system="", prompt="p") == "none\nU:p\nA:"
    with pytest.raises(ExportRefused, match="range .Messages"):
        render_go_template("{{ range .Messages }}{{ end }}", system=None, prompt="p")


def test_the_tuneforge_command_has_export_and_verify_export(capsys):
    from tuneforge.cli import main

    for command, flag in (("export", "--format"), ("verify-export", "--run")):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0 and flag in capsys.readouterr().out

"""Small user-facing fixes, each pinned to the exact message or value a user sees:
non-UTF-8 data files, a misspelt embedded model name, several acceptable answers
per sample, and library deprecation noise during LoRA runs."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch

from tuneforge.data import DataError, read_records
from tuneforge.data.types import GenerationSample
from tuneforge.eval import generation
from tuneforge.eval.scorers import best_reference, exact_match
from tuneforge.models.embedded import EMBEDDED_MODELS
from tuneforge.models.load import ModelNotFoundError, load_tokenizer, resolve_model

# --------------------------------------------------------------------------- non-UTF-8 data files

GOOD = '{"text": "café"}\n{"text": "naïve"}\n'.encode()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".txt"])
def test_non_utf8_file_names_the_byte_and_its_offset(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    path.write_bytes(GOOD + b'{"text": "\xff"}\n')
    offset = len(GOOD) + len(b'{"text": "')
    with pytest.raises(DataError) as info:
        list(read_records(str(path)))
    assert info.value.problems == [f"{path}: not UTF-8 text (byte 0xff at offset {offset})"]
    assert "UTF-8" in info.value.hint


def test_non_utf8_offset_counts_the_bom_and_is_collected_by_validate(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [r.data["text"] for r in read_records(str(path))] == ["café", "naïve"]  # BOM still dropped
    path.write_bytes(b"\xef\xbb\xbf" + GOOD + b'{"text": "caf\xe9"}\n')  # latin-1 é
    problems: list[str] = []
    list(read_records(str(path), problems=problems))  # validate's way: collect, do not raise
    offset = 3 + len(GOOD) + len(b'{"text": "caf')
    assert problems == [f"{path}: not UTF-8 text (byte 0xe9 at offset {offset})"]


def test_non_utf8_offset_is_absolute_past_the_reader_buffer(tmp_path):
    """A multi-byte character cut at the end of the file, far past any read buffer."""
    line = '{"text": "é"}\n'.encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(line * 100_000 + b"\xe2\x82")
    with pytest.raises(DataError) as info:
        list(read_records(str(path)))
    assert info.value.problems == [f"{path}: not UTF-8 text (byte 0xe2 at offset {len(line) * 100_000})"]


# --------------------------------------------------------------------------- misspelt embedded model


@pytest.fixture
def no_network(monkeypatch):
    """Online as far as tuneforge can tell, but any hub or socket access fails the test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("tried the network / the hub")

    import transformers

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", forbidden)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", forbidden)


def test_misspelt_embedded_name_suggests_it_before_any_network(no_network):
    expected = (
        "model.name: 'smollm2-135m-instuct' is not an embedded model, local folder or .gguf file; "
        "did you mean `smollm2-135m-instruct`? (`tuneforge models` lists the embedded models)"
    )
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("smollm2-135m-instuct")
    assert str(info.value) == expected
    with pytest.raises(ModelNotFoundError) as info:
        load_tokenizer("smollm2-135m-instuct")  # the path every command takes
    assert str(info.value) == expected


def test_every_embedded_name_is_guarded_against_typos(no_network):
    for name in EMBEDDED_MODELS:
        typo = name[:-1]  # drop the last character
        with pytest.raises(ModelNotFoundError, match=f"did you mean `{name}`"):
            resolve_model(typo)


def test_names_not_close_to_an_embedded_one_are_still_hub_ids(no_network, monkeypatch):
    # org/name is a hub id even when the name part is an embedded model's.
    assert resolve_model("someorg/smollm2-135m-instruct") == "someorg/smollm2-135m-instruct"
    assert resolve_model("gpt2") == "gpt2"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("gpt2")
    assert str(info.value).startswith(
        "model.name: 'gpt2' is not an embedded model or a local path, and HF_HUB_OFFLINE=1 forbids downloading it"
    )


# --------------------------------------------------------------------------- several acceptable answers


def _score(monkeypatch, samples, predictions, scorers):
    """evaluate_generation with the decoding replaced: scoring is what is under test."""
    monkeypatch.setattr(generation, "generate", lambda *args, **kwargs: list(predictions))
    return generation.evaluate_generation(None, None, samples, scorers, max_new_tokens=4, batch_size=1)


def _ni_sample(references: list[str]) -> GenerationSample:
    # What the natural_instructions format builds: reference = first output, references = all.
    return GenerationSample(prompt_ids=[1], prompt="Review: great", reference=references[0], references=references)


TEXT_SCORERS = ["exact_match", "normalized_match", "contains"]


def test_a_match_with_the_second_output_counts(monkeypatch):
    result = _score(monkeypatch, [_ni_sample(["Positive", "Good review"])], ["Good review"], TEXT_SCORERS)
    assert result.scores == {"exact_match": 1.0, "normalized_match": 1.0, "contains": 1.0}
    assert result.samples[0].reference == "Positive"  # the report still names the primary answer


def test_matching_no_output_scores_zero(monkeypatch):
    result = _score(monkeypatch, [_ni_sample(["Positive", "Good review"])], ["Negative"], TEXT_SCORERS)
    assert result.scores == {"exact_match": 0.0, "normalized_match": 0.0, "contains": 0.0}


def test_samples_without_references_use_the_reference(monkeypatch):
    sample = GenerationSample(prompt_ids=[1], prompt="p", reference="yes")
    assert _score(monkeypatch, [sample, sample], ["yes", "no"], ["exact_match"]).scores == {"exact_match": 0.5}


def test_json_field_accuracy_uses_the_best_matching_output(monkeypatch):
    sample = _ni_sample(['{"label": "pos", "score": 1}', '{"label": "good", "score": 1}'])
    result = _score(monkeypatch, [sample], ['{"label": "good", "score": 2}'], ["json_field_accuracy"])
    assert result.scores == {"json_field_accuracy": 0.5}
    # Field errors are counted against that same best output: only "score" is wrong.
    assert result.field_errors == {"score": {"wrong": 1, "total": 1}, "label": {"wrong": 0, "total": 1}}


def test_every_output_is_checked_before_generating(monkeypatch):
    sample = _ni_sample(['{"a": 1}', "not json"])
    sample.where = "task.json:7"

    def must_not_generate(*args, **kwargs):
        raise AssertionError("generated before checking the references")

    monkeypatch.setattr(generation, "generate", must_not_generate)
    with pytest.raises(ValueError, match="task.json:7: scorer 'json_field_accuracy'"):
        generation.evaluate_generation(None, None, [sample], ["json_field_accuracy"], max_new_tokens=4, batch_size=1)


def test_best_reference_prefers_the_primary_answer_on_ties():
    assert best_reference(exact_match, "x", ["a", "b"]) == (0.0, "a")
    assert best_reference(exact_match, "b", ["a", "b", "b "]) == (1.0, "b")


# --------------------------------------------------------------------------- library deprecation noise


def _lora_step(gradient_checkpointing: bool) -> None:
    from tiny import tiny_model

    from tuneforge.adapters import attach_adapter
    from tuneforge.adapters.config import LoraConfig

    model = attach_adapter(tiny_model(layers=1), LoraConfig(r=2, alpha=4)).model
    if gradient_checkpointing:
        # What runner.py does, through the new name where transformers has it: the deprecated
        # alias is tuneforge's own call, not library noise (see quiet.py).
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(3, 200, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()


def _library_deprecations(log) -> list[str]:
    return [
        f"{w.category.__name__}: {w.message} ({w.filename})"
        for w in log
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
        and any(lib in w.filename for lib in ("transformers", "peft"))
    ]


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_lora_step_prints_no_library_deprecation(gradient_checkpointing):
    from tuneforge.quiet import silence_library_noise

    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")  # show everything, then install our filters on top
        silence_library_noise()
        _lora_step(gradient_checkpointing)
    assert _library_deprecations(log) == []


def test_the_noise_is_real_without_the_filter_before_peft_0_22():
    """peft < 0.22 reads the deprecated ``is_gradient_checkpointing`` on every get_peft_model (the lock
    still installs 0.21 on Python 3.10); 0.22 reads ``is_activation_checkpointing``. When no supported
    peft triggers it any more, quiet.py's filter can go."""
    import peft
    from packaging.version import Version

    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        _lora_step(False)
    noisy = any("is_gradient_checkpointing" in line for line in _library_deprecations(log))
    assert noisy == (Version(peft.__version__) < Version("0.22.0")), peft.__version__


def test_only_that_warning_is_silenced():
    from tuneforge.quiet import silence_library_noise

    message = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        silence_library_noise()
        # Same text from tuneforge's own code, and another transformers deprecation: both shown.
        warnings.warn_explicit(message, FutureWarning, "tuneforge/runner.py", 1, module="tuneforge.runner")
        warnings.warn_explicit(
            "`gradient_checkpointing_enable` is deprecated and will be removed in v6.",
            FutureWarning,
            "transformers/modeling_utils.py",
            1,
            module="transformers.modeling_utils",
        )
        warnings.warn_explicit(
            message, FutureWarning, "transformers/modeling_utils.py", 1, module="transformers.modeling_utils"
        )
    assert [(str(w.message), w.filename) for w in log] == [
        (message, "tuneforge/runner.py"),
        ("`gradient_checkpointing_enable` is deprecated and will be removed in v6.", "transformers/modeling_utils.py"),
    ]


# ---------------------------------------------------------------------------
# The same bad inputs through the command line, as a new user meets them: one message, no traceback.


@pytest.mark.parametrize("command", ["validate", "train"])
def test_bad_inputs_on_the_command_line_give_one_line(command, tmp_path, tiny_model_dir, isolated_cache, capsys):
    from conftest import chat_rows, write_jsonl

    from tuneforge.cli import main

    good = write_jsonl(tmp_path / "good.jsonl", chat_rows(8))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(good.read_bytes()[:40] + b"\xff\xfe\x00garbage")
    cases = {
        "smollm2-135m-instuct": (
            f"data: {{format: chat, train: {good}}}",
            "is not an embedded model, local folder or .gguf file; did you mean `smollm2-135m-instruct`?",
        ),
        str(tiny_model_dir): (
            f"data: {{format: chat, train: {binary}, max_length: 128}}",
            f"{binary}: not UTF-8 text (byte 0xff at offset 40)",
        ),
    }
    for model, (data, expected) in cases.items():
        config = tmp_path / "c.yaml"
        config.write_text(f"method: sft\noutput_dir: {tmp_path / 'runs'}\nmodel: {{name: {model}}}\n{data}\n")
        capsys.readouterr()
        assert main([command, str(config)]) in (1, 2)
        err = capsys.readouterr().err
        assert expected in " ".join(err.split()), err
        assert "Traceback" not in err

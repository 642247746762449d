"""The server's parts without a server: streamed text and stop strings, sampling, settings, the command's warnings."""

import pytest
import torch
from tiny import tiny_tokenizer

from tuneforge.serve.decode import Sampling, pick_token
from tuneforge.serve.settings import ServeSettingsError, load_settings
from tuneforge.serve.text import TextTracker

TOK = tiny_tokenizer()
EOS = TOK.eos_token_id


def ids(text: str) -> list[int]:
    return TOK(text, add_special_tokens=False)["input_ids"]


def run(text: str, stops=(), max_tokens: int | None = None, end_with_eos: bool = True):
    """Push ``text`` token by token; returns (pieces, finish_reason, tokens sampled)."""
    tracker = TextTracker(TOK, frozenset({EOS}), tuple(stops))
    pieces = []
    for _i, token in enumerate(ids(text) + ([EOS] if end_with_eos else [])):
        pieces.append(tracker.push(token))
        if tracker.finished:
            break
        if max_tokens is not None and tracker.sampled >= max_tokens:
            pieces.append(tracker.finish_length())
            break
    return [p for p in pieces if p], tracker.finished, tracker.sampled


def test_pieces_join_to_the_decoded_text_and_eos_ends_it():
    pieces, finish, sampled = run("hello world")
    assert "".join(pieces) == "hello world" and finish == "stop" and sampled == len("hello world") + 1


def test_a_stop_string_cuts_the_text_and_is_never_streamed():
    pieces, finish, _ = run("abc STOP def", stops=["STOP"])
    assert "".join(pieces) == "abc " and finish == "stop"
    assert not any("S" in piece for piece in pieces)  # the held-back "S", "ST", "STO" never went out


def test_text_held_back_as_a_possible_stop_comes_out_when_it_is_not_one():
    pieces, finish, _ = run("abc STAY", stops=["STOP"])
    assert "".join(pieces) == "abc STAY" and finish == "stop"
    pieces, finish, _ = run("abc ST", stops=["STOP"], end_with_eos=False, max_tokens=6)
    assert "".join(pieces) == "abc ST" and finish == "length"


def test_the_earliest_of_several_stop_strings_wins():
    pieces, _, _ = run("one two three", stops=["three", "two"])
    assert "".join(pieces) == "one "


def test_a_split_utf8_character_waits_for_its_last_byte():
    tracker = TextTracker(TOK, frozenset({EOS}))
    first, second = ids("é")  # one character, two byte-level tokens
    assert tracker.push(first) == ""
    assert tracker.push(second) == "é"


def test_greedy_top_p_and_seeded_sampling():
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    assert pick_token(logits, Sampling(max_tokens=1, temperature=0), None) == 1
    tiny_p = Sampling(max_tokens=1, temperature=1.0, top_p=1e-6)
    assert {pick_token(logits, tiny_p, torch.Generator().manual_seed(s)) for s in range(20)} == {1}
    hot = Sampling(max_tokens=1, temperature=2.0, seed=3)
    draws = [pick_token(logits, hot, torch.Generator().manual_seed(3)) for _ in range(5)]
    assert len(set(draws)) == 1  # the same seed, the same token
    spread = {pick_token(logits, hot, torch.Generator().manual_seed(s)) for s in range(200)}
    assert spread == {0, 1, 2, 3}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    sampling = Sampling(max_tokens=1, temperature=1.0, top_p=0.75)
    drawn = {pick_token(logits, sampling, torch.Generator().manual_seed(s)) for s in range(300)}
    assert drawn == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 reaches it: tokens 2 and 3 are cut


def test_settings_from_yaml_with_flags_on_top(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("model: smollm2-135m-instruct\nadapters: {a: runs/a}\nport: 9000\n")
    settings = load_settings(config, adapters={"b": "runs/b"}, port=None, host="0.0.0.0")
    assert settings.adapters == {"a": "runs/a", "b": "runs/b"}
    assert settings.port == 9000 and settings.host == "0.0.0.0"
    assert load_settings(None).host == "127.0.0.1"  # this machine only, by default
    assert load_settings(None).adapter_dir is None and load_settings(None).cors_origins == []


def test_a_wrong_settings_key_is_named(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("modle: x\n")
    with pytest.raises(ServeSettingsError, match=r"serve.yaml: modle: unknown setting \(known: model, "):
        load_settings(config)
    with pytest.raises(ServeSettingsError, match="port"):
        load_settings(None, port=70000)


def test_binding_beyond_this_machine_or_loading_at_runtime_without_a_key_is_refused(monkeypatch):
    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    load_settings(None).check_safe()  # 127.0.0.1, no key: fine
    with pytest.raises(ServeSettingsError, match=r"^host 0.0.0.0: binding beyond this machine needs an API key"):
        load_settings(None, host="0.0.0.0").check_safe()
    with pytest.raises(ServeSettingsError, match=r"^adapter_dir /srv/a: loading adapters at runtime needs an API key"):
        load_settings(None, adapter_dir="/srv/a").check_safe()
    monkeypatch.setenv("TUNEFORGE_API_KEY", "k")
    load_settings(None, host="0.0.0.0", adapter_dir="/srv/a").check_safe()
    assert load_settings(None).key() == "k"


def test_the_serve_command_refuses_an_exposed_server_before_loading_anything(monkeypatch, capsys):
    from tuneforge.cli import main
    from tuneforge.serve import pool

    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    monkeypatch.setattr(pool, "build_pool", lambda *a, **k: pytest.fail("models were loaded"))
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "error: host 0.0.0.0: binding beyond this machine needs an API key" in capsys.readouterr().err
    assert main(["serve", "--adapter-dir", "adapters"]) == 2
    assert "loading adapters at runtime needs an API key" in capsys.readouterr().err


def test_seeds_outside_what_torch_takes_are_a_400_not_a_failed_batch():
    """Found by fuzzing the request models: seed 2**64 passed validation, then torch's manual_seed raised in the
    worker, failing every request in the same batch with a 500."""
    from tuneforge.serve.protocol import APIError, ChatRequest, parse

    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(APIError) as caught:
            parse(ChatRequest, {**body, "seed": seed})
        assert (caught.value.status, caught.value.param) == (400, "seed")
    for seed in (2**64 - 1, -(2**63), 0):
        assert parse(ChatRequest, {**body, "seed": seed}).seed == seed
        torch.Generator().manual_seed(seed)  # what the worker does with it


def test_a_prompt_with_an_unpaired_surrogate_is_a_400_not_a_500():
    """Found by fuzzing the request models: {"prompt": "\\ud800"} passed validation and the tokenizer raised
    TypeError in the route (a 500)."""
    from tuneforge.serve.protocol import APIError, CompletionRequest, parse

    with pytest.raises(APIError) as caught:
        parse(CompletionRequest, {"model": "a", "prompt": "ok \ud800"})
    assert (caught.value.status, caught.value.param) == (400, "prompt")
    assert "unpaired surrogate" in caught.value.message
    assert parse(CompletionRequest, {"model": "a", "prompt": "emoji \U0001f642"}).prompt == "emoji \U0001f642"

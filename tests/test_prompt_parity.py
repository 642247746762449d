"""A trained run answers the prompt it was trained on, wherever it is asked (issue #20).

Tiny runs are trained through the real train path with ``data.system_prompt``
and ``data.template: plain`` (and the chat template, and plain prompt/completion
text on a full fine-tune); then the ids that ``tuneforge serve`` renders for a
chat request, and those ``generate`` / ``chat`` / ``eval`` render, must equal
the generation prompt the training pipeline built for the same turn.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import yaml
from conftest import write_jsonl

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.data import load_splits
from tuneforge.models.load import load_tokenizer
from tuneforge.runner import train_from_config

SYSTEM = "Answer with the word reversed."
WORDS = ["apple3", "river7", "stone1", "cloud5", "tiger2", "lemon8"]


def _chat_rows(words):
    return [
        {"messages": [{"role": "user", "content": f"reverse {w}"}, {"role": "assistant", "content": w[::-1]}]}
        for w in words
    ]


def _pair_rows(words):
    return [{"prompt": f"reverse {w}:", "completion": f" {w[::-1]}"} for w in words]


# name → (data section, whether the run trains an adapter)
RUNS = {
    "chat_plain": ({"format": "chat", "template": "plain", "system_prompt": SYSTEM}, True),
    "chat_template": ({"format": "chat", "template": "auto", "system_prompt": SYSTEM}, True),
    "pairs_plain": ({"format": "prompt_completion", "template": "plain", "system_prompt": SYSTEM}, False),
}


def _train(root, model_dir, name: str):
    data, adapter = RUNS[name]
    rows = _pair_rows if data["format"] == "prompt_completion" else _chat_rows
    train = write_jsonl(root / "data" / name / "train.jsonl", rows(WORDS))
    evals = write_jsonl(root / "data" / name / "eval.jsonl", rows(WORDS[:2]))
    raw = {
        "method": "sft",
        "name": name,
        "output_dir": str(root / "runs"),
        "model": {"name": str(model_dir)},
        "data": {**data, "train": str(train), "eval": str(evals), "max_length": 96},
        "training": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "seed": 3},
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 2, "batch_size": 2, "before": False},
    }
    if adapter:
        raw["adapter"] = {"type": "lora", "r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    return train_from_config(load_config(data=raw))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (run folder, output folder, the training pipeline's eval generation samples, eval file)}."""
    import os

    root = tmp_path_factory.mktemp("parity")
    old = os.environ.get("TUNEFORGE_CACHE")
    os.environ["TUNEFORGE_CACHE"] = str(root / "cache")
    try:
        from tiny import tiny_model, tiny_tokenizer

        model_dir = root / "tiny-model"
        tok = tiny_tokenizer()
        tiny_model(len(tok)).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        out = {"base": model_dir}
        for name in RUNS:
            result = _train(root, model_dir, name)
            # What training rendered, from the config the run folder saved and the tokenizer saved with it.
            config = load_config(data=yaml.safe_load((result.run_dir / "config.yaml").read_text()))
            tokenizer = load_tokenizer(str(result.output_dir))
            samples = load_splits(config.data, tokenizer, use_cache=False).eval_samples
            out[name] = (result.run_dir, result.output_dir, samples, config.data.eval)
        yield out
    finally:
        if old is None:
            os.environ.pop("TUNEFORGE_CACHE", None)
        else:
            os.environ["TUNEFORGE_CACHE"] = old


def _user_turn(sample) -> str:
    """The request a client sends for a training sample: its user turn (the run adds its system prompt)."""
    return sample.prompt


def _inference_args(runs, name: str) -> list[str]:
    run_dir, output_dir, _, _ = runs[name]
    return ["--adapter", str(run_dir)] if output_dir.name == "adapter" else ["--model", str(output_dir)]


def test_training_prompts_carry_the_system_prompt_and_the_plain_template(runs):
    """The premise: the training prompts are not what the tokenizer's chat template makes of the user turn."""
    from tuneforge.data.templates import render_prompt

    for name in RUNS:
        _, output_dir, samples, _ = runs[name]
        tokenizer = load_tokenizer(str(output_dir))
        prompt = tokenizer.decode(samples[0].prompt_ids)
        assert SYSTEM in prompt, name
        assert samples[0].prompt_ids != render_prompt(tokenizer, [{"role": "user", "content": samples[0].prompt}])
    chat_plain = load_tokenizer(str(runs["chat_plain"][1])).decode(runs["chat_plain"][2][0].prompt_ids)
    assert chat_plain == f"{SYSTEM}\n\nUser:\nreverse apple3\n\nAssistant:\n"
    pairs = load_tokenizer(str(runs["pairs_plain"][1])).decode(runs["pairs_plain"][2][0].prompt_ids)
    assert pairs == f"{SYSTEM}\n\nreverse apple3:"


def test_served_chat_prompts_are_the_training_prompts(runs):
    from test_serve import post

    from tuneforge.serve import ServerThread, build
    from tuneforge.serve.settings import ServeSettings

    entries = {name: str(runs[name][0]) for name in RUNS}
    app, pool, worker = build(ServeSettings(model=str(runs["base"]), adapters=entries, served_name="base"))
    seen: list[list[int]] = []
    submit = worker.submit

    def recording(job):
        seen.append(list(job.prompt_ids))
        submit(job)

    worker.submit = recording
    with ServerThread(app) as url:
        for name in RUNS:
            for sample in runs[name][2]:
                seen.clear()
                reply = post(
                    f"{url}/v1/chat/completions",
                    json_body={
                        "model": name,
                        "max_tokens": 1,
                        "temperature": 0,
                        "messages": [{"role": "user", "content": _user_turn(sample)}],
                    },
                )
                assert reply.status_code == 200, reply.text
                assert seen == [sample.prompt_ids], name
                assert reply.json()["usage"]["prompt_tokens"] == len(sample.prompt_ids)
        # A request's own system message replaces the run's, as a training row's own system message does.
        _, output_dir, _, _ = runs["chat_plain"]
        tokenizer = load_tokenizer(str(output_dir))
        from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, render_prompt

        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "reverse lemon8"}]
        seen.clear()
        reply = post(
            f"{url}/v1/chat/completions", json_body={"model": "chat_plain", "max_tokens": 1, "messages": messages}
        )
        assert reply.status_code == 200, reply.text
        assert seen == [render_prompt(tokenizer, messages, chat_template=PLAIN_CHAT_TEMPLATE)]

    from tuneforge.serve.command import _renderings

    said = "\n".join(_renderings(pool))  # what `tuneforge serve` prints at start
    assert (
        "base:" not in said
        and f"chat_plain: chat requests rendered as in its training run (template plain, system prompt {SYSTEM!r})"
        in said
        and "pairs_plain:" in said
        and "chat_template:" in said
    )


@pytest.mark.parametrize("name", sorted(RUNS))
def test_generate_and_chat_prompts_are_the_training_prompts(runs, name, monkeypatch, capsys):
    import tuneforge.cli as cli
    import tuneforge.eval.generation as generation

    seen: list[list[int]] = []

    def recording(model, tokenizer, prompts, **kwargs):
        seen.extend(list(p) for p in prompts)
        return ["" for _ in prompts]

    monkeypatch.setattr(generation, "generate", recording)
    sample = runs[name][2][0]
    assert main(["generate", *_inference_args(runs, name), _user_turn(sample), "--max-new-tokens", "1"]) == 0
    assert seen == [sample.prompt_ids]

    seen.clear()
    lines = iter([_user_turn(sample), ""])
    monkeypatch.setattr(cli.console, "input", lambda *_: next(lines))
    assert main(["chat", *_inference_args(runs, name), "--max-new-tokens", "1"]) == 0
    assert seen == [sample.prompt_ids]
    capsys.readouterr()


@pytest.mark.parametrize("name", sorted(RUNS))
def test_eval_prompts_are_the_training_prompts(runs, name, monkeypatch, capsys, tmp_path):
    import tuneforge.eval.generation as generation

    seen: list[list[int]] = []

    class Scored:
        scores: ClassVar[dict] = {}
        samples: ClassVar[list] = []

    def recording(model, tokenizer, samples, scorers, **kwargs):
        seen.extend(list(s.prompt_ids) for s in samples)
        return Scored()

    monkeypatch.setattr(generation, "evaluate_generation", recording)
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    _run_dir, _, samples, eval_file = runs[name]
    data_format = RUNS[name][0]["format"]
    assert (
        main(
            [
                "eval",
                *_inference_args(runs, name),
                "--data",
                str(eval_file),
                "--format",
                data_format,
                "--max-length",
                "96",
                "--max-new-tokens",
                "1",
            ]
        )
        == 0
    )
    assert seen == [s.prompt_ids for s in samples]
    capsys.readouterr()


def test_a_run_rendering_comes_from_the_run_folder_and_defaults_outside_one(tmp_path, tiny_model_dir):
    from tuneforge.adapters.inference import run_rendering
    from tuneforge.data.run_prompt import render_run_prompt
    from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, PromptRendering, render_prompt

    run = tmp_path / "runs" / "dpo"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"method": "dpo", "data": {"train": "x.jsonl", "template": "plain", "system_prompt": SYSTEM}})
    )
    rendering = run_rendering(run / "adapter")
    assert rendering == PromptRendering("plain", SYSTEM, text_prompts=True)  # DPO / PPO prompts have no format
    assert run_rendering(tiny_model_dir) == PromptRendering()  # a model folder outside a run
    assert run_rendering(tmp_path / "elsewhere" / "adapter") == PromptRendering()

    tokenizer = load_tokenizer(str(tiny_model_dir))
    # A lone user turn is the plain text prompt; a conversation takes the plain template, as in training.
    assert (
        tokenizer.decode(render_run_prompt(tokenizer, [{"role": "user", "content": "hi"}], rendering))
        == f"{SYSTEM}\n\nhi"
    )
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"},
    ]
    assert render_run_prompt(tokenizer, turns, rendering) == render_prompt(
        tokenizer, [{"role": "system", "content": SYSTEM}, *turns], chat_template=PLAIN_CHAT_TEMPLATE
    )
    # The default is what the base model always got: the tokenizer's own template, nothing added.
    assert render_run_prompt(tokenizer, turns, PromptRendering()) == render_prompt(tokenizer, turns)


@pytest.mark.parametrize("name", ["chat_plain", "chat_template"])
def test_a_merged_model_is_asked_as_its_run_was_trained(runs, name, monkeypatch, capsys, tmp_path):
    """`tuneforge merge` records the run's rendering with the weights; generate on the merged folder
    renders the training prompt (before, a merged model fell back to the tokenizer's template)."""
    import tuneforge.eval.generation as generation
    from tuneforge.adapters.merge import merge_to_folder

    run_dir, _, samples, _ = runs[name]
    merged = merge_to_folder(run_dir, tmp_path / "merged").output
    seen: list[list[int]] = []

    def recording(model, tokenizer, prompts, **kwargs):
        seen.extend(list(p) for p in prompts)
        return ["" for _ in prompts]

    monkeypatch.setattr(generation, "generate", recording)
    assert main(["generate", "--model", str(merged), _user_turn(samples[0]), "--max-new-tokens", "1"]) == 0
    assert seen == [samples[0].prompt_ids]
    capsys.readouterr()

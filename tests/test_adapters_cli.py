"""Many adapters on one base: switching, merge, combine, and multi-adapter eval (tiny models, CPU)."""

import json
import shutil

import pytest
import torch
import yaml
from conftest import chat_rows, write_jsonl

from tuneforge.cli import main

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250]])


def _base(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def make_lora(model_dir, out, *, seed: int, r: int = 4, **extra):
    """A LoRA adapter with random A and B (init_lora_weights=False), saved with the base's tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    base = _base(model_dir)
    torch.manual_seed(seed)  # after the base: its own seed must not decide the adapter's weights
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, **extra
    )
    get_peft_model(base, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def make_prompt_tuning(model_dir, out, *, seed: int = 3):
    from peft import PromptTuningConfig, get_peft_model

    base = _base(model_dir)
    torch.manual_seed(seed)
    get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)).save_pretrained(out)
    return out


def logits_alone(model_dir, adapter):
    """The adapter's logits when it is the only adapter on a fresh base."""
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(_base(model_dir), str(adapter)).eval()(IDS).logits


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def two_loras(tmp_path, tiny_model_dir):
    return (make_lora(tiny_model_dir, tmp_path / "sql", seed=1), make_lora(tiny_model_dir, tmp_path / "chat", seed=2))


# ---------------------------------------------------------------------------- switching


def test_switching_gives_each_adapters_own_logits(tiny_model_dir, two_loras):
    from tuneforge.adapters.inference import AdapterSet, AdapterSetError

    sql, chat = two_loras
    # "a" lies inside peft's prefix "lora_": peft warns that it may re-initialise weights; it loads them exactly.
    adapters = AdapterSet.load(None, {"a": sql, "chat": chat})  # base: the adapters' record
    assert adapters.names == ["a", "chat"] and adapters.active == "a"
    with adapters.use("chat") as model:
        got_chat = logits(model)
    assert adapters.active == "a"  # restored after the block
    got_sql = logits(adapters.model)
    with adapters.base() as model:
        got_base = logits(model)
    torch.testing.assert_close(got_sql, logits_alone(tiny_model_dir, sql), atol=1e-6, rtol=0)
    torch.testing.assert_close(got_chat, logits_alone(tiny_model_dir, chat), atol=1e-6, rtol=0)
    torch.testing.assert_close(got_base, logits(_base(tiny_model_dir)), atol=1e-6, rtol=0)
    assert (got_sql - got_chat).abs().max() > 1e-3
    with pytest.raises(AdapterSetError, match="--use nope: no adapter of that name; loaded: a, chat"):
        adapters.activate("nope")


def test_named_adapter_args():
    from tuneforge.adapters.inference import AdapterSetError, parse_named_paths

    assert parse_named_paths(["runs/x/adapter"]) == {"default": "runs/x/adapter"}
    assert parse_named_paths(["sql=runs/a", "runs/chat/adapter"]) == {"sql": "runs/a", "chat": "runs/chat/adapter"}
    with pytest.raises(AdapterSetError, match="given twice"):
        parse_named_paths(["x=runs/a", "x=runs/b"])


def test_mixing_soft_prompts_with_lora_is_refused(tmp_path, tiny_model_dir, two_loras, capsys):
    prompt = make_prompt_tuning(tiny_model_dir, tmp_path / "prompt")
    code = main(
        ["generate", "--adapter", f"sql={two_loras[0]}", "--adapter", f"soft={prompt}", "hi", "--max-new-tokens", "1"]
    )
    assert code == 2
    assert "soft (prompt_tuning) are soft prompts and sql (lora) are weight adapters" in capsys.readouterr().err


def test_two_soft_prompts_switch(tmp_path, tiny_model_dir):
    from tuneforge.adapters.inference import AdapterSet

    first = make_prompt_tuning(tiny_model_dir, tmp_path / "p1", seed=3)
    second = make_prompt_tuning(tiny_model_dir, tmp_path / "p2", seed=4)
    adapters = AdapterSet.load(str(tiny_model_dir), {"p1": first, "p2": second})
    with adapters.use("p2") as model:
        torch.testing.assert_close(logits(model), logits_alone(tiny_model_dir, second), atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(adapters.model), logits_alone(tiny_model_dir, first), atol=1e-6, rtol=0)


def test_a_classifier_adapter_is_refused_by_generate(tmp_path, two_loras, capsys):
    classifier = tmp_path / "cls"
    shutil.copytree(two_loras[0], classifier)
    (classifier / "classifier.json").write_text(json.dumps({"labels": ["bad", "good"], "pad_token_id": 2}))
    assert main(["generate", "--adapter", str(classifier), "hi"]) == 2
    assert (
        "is a classifier or reward model (use `tuneforge predict` / `tuneforge score`), not a causal-LM adapter"
    ) in capsys.readouterr().err


def test_bottleneck_in_a_set_is_refused(tmp_path, two_loras, capsys):
    folder = tmp_path / "bn"
    folder.mkdir()
    (folder / "tuneforge_adapter.json").write_text(json.dumps({"type": "bottleneck", "base_model_name_or_path": "x"}))
    assert main(["generate", "--adapter", f"sql={two_loras[0]}", "--adapter", f"bn={folder}", "hi"]) == 2
    assert "bottleneck adapters are wired into the base model's layers" in capsys.readouterr().err


def test_adapters_of_different_bases_are_refused(tmp_path, tiny_model_dir, two_loras, capsys):
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    stranger = make_lora(other, tmp_path / "stranger", seed=5)
    assert main(["generate", "--adapter", f"sql={two_loras[0]}", "--adapter", f"x={stranger}", "hi"]) == 2
    assert "trained on different base models" in capsys.readouterr().err


def test_generate_picks_an_adapter_with_use_and_names_unknown_ones(tiny_model_dir, two_loras, capsys):
    sql, chat = two_loras
    common = ["generate", "--adapter", f"sql={sql}", "--adapter", f"chat={chat}", "hello", "--max-new-tokens", "2"]
    assert main([*common, "--use", "chat"]) == 0
    assert main([*common, "--use", "nope"]) == 2
    assert "--use nope: no adapter of that name; loaded: sql, chat" in capsys.readouterr().err
    assert main(["generate", "--use", "sql", "hello"]) == 2
    assert "--use sql: no adapter of that name; loaded: none (no --adapter given)" in capsys.readouterr().err
    assert main(["generate", "--adapter", str(sql), "hello", "--max-new-tokens", "2"]) == 0  # bare path still works


# ---------------------------------------------------------------------------- merge


def test_merged_model_equals_the_adapter(tmp_path, tiny_model_dir, two_loras):
    from transformers import AutoTokenizer

    out = tmp_path / "merged"
    assert main(["merge", str(two_loras[0]), "--output", str(out)]) == 0
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    torch.testing.assert_close(logits(_base(out)), logits_alone(tiny_model_dir, two_loras[0]), atol=1e-4, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template  # the tokenizer travels with the model


def test_merge_of_a_run_takes_the_base_from_its_config(tmp_path, tiny_model_dir):
    run = tmp_path / "runs" / "sql"
    adapter = make_lora(tiny_model_dir, run / "adapter", seed=1)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "/machine/elsewhere/model"  # recorded on another machine
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "sft", "model": {"name": str(tiny_model_dir)}}))
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--output", str(out)]) == 0
    assert json.loads((out / "merged_from.json").read_text())["base"] == str(tiny_model_dir)


def test_merge_refuses_soft_prompts(tmp_path, tiny_model_dir, capsys):
    prompt = make_prompt_tuning(tiny_model_dir, tmp_path / "prompt")
    assert main(["merge", str(prompt), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot merge a prompt_tuning adapter: virtual tokens are not weights" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("bottleneck", "a non-linearity sits between W_down and W_up, so no weight matrix equals it"),
        ("mam", "virtual tokens are not weights"),
    ],
)
def test_merge_refuses_our_adapters(tmp_path, capsys, kind, reason):
    folder = tmp_path / kind
    folder.mkdir()
    (folder / "tuneforge_adapter.json").write_text(json.dumps({"type": kind, "base_model_name_or_path": "x"}))
    assert main(["merge", str(folder), "--output", str(tmp_path / "out")]) == 2
    assert f"cannot merge a {kind} adapter: {reason}" in capsys.readouterr().err


def test_merge_refuses_a_full_model_run(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "runs" / "full"
    shutil.copytree(tiny_model_dir, run / "model")
    assert main(["merge", str(run), "--output", str(tmp_path / "out")]) == 2
    assert f"already a full model: use {run / 'model'} directly" in capsys.readouterr().err


def test_merge_never_overwrites(tmp_path, two_loras, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["merge", str(two_loras[0]), "--output", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------------------- combine


@pytest.mark.parametrize("rslora", [False, True])
def test_combine_linear_of_one_adapter_equals_it(tmp_path, tiny_model_dir, rslora):
    from peft import PeftModel

    adapter = make_lora(tiny_model_dir, tmp_path / "sql", seed=1, use_rslora=rslora)
    out = tmp_path / "combined"
    assert (
        main(["adapters", "combine", f"sql={adapter}", "--weights", "1.0", "--method", "linear", "--output", str(out)])
        == 0
    )
    assert (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    recipe = json.loads((out / "combine.json").read_text())
    assert recipe["method"] == "linear" and recipe["weights"] == [1.0] and recipe["inputs"][0]["name"] == "sql"
    with torch.no_grad():
        combined = PeftModel.from_pretrained(_base(tiny_model_dir), str(out)).eval()(IDS).logits
    torch.testing.assert_close(combined, logits_alone(tiny_model_dir, adapter), atol=1e-5, rtol=0)


def test_combine_cat_of_two_adapters_writes_a_loadable_folder(tmp_path, tiny_model_dir, two_loras):
    from peft import PeftModel

    out = tmp_path / "mix"
    assert (
        main(
            [
                "adapters",
                "combine",
                *map(str, two_loras),
                "--weights",
                "0.5",
                "0.5",
                "--method",
                "cat",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    PeftModel.from_pretrained(_base(tiny_model_dir), str(out))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weights", "0.5", "0.5", "0.5", "--method", "linear"], "--weights: 3 weight(s) for 2 adapter(s)"),
        (
            ["--weights", "0.5", "0.5", "--method", "linear", "--name", "sql"],
            "--name sql: already the name of an input",
        ),
        (["--weights", "0.5", "0.5", "--method", "ties", "--density", "1.5"], "--density: ties keeps this share"),
        (["--weights", "0.5", "0.5", "--method", "ties"], "(got missing)"),
        (["--weights", "0.5", "0.5", "--method", "blend"], "--method blend: not one of linear"),
    ],
)
def test_combine_refusals(tmp_path, two_loras, capsys, extra, message):
    sql, chat = two_loras
    out = tmp_path / "out"
    assert main(["adapters", "combine", f"sql={sql}", f"chat={chat}", "--output", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_combine_refuses_mismatched_ranks_for_linear(tmp_path, tiny_model_dir, capsys):
    small = make_lora(tiny_model_dir, tmp_path / "small", seed=1, r=4)
    big = make_lora(tiny_model_dir, tmp_path / "big", seed=2, r=8)
    assert (
        main(
            [
                "adapters",
                "combine",
                f"s={small}",
                f"bg={big}",
                "--weights",
                "1",
                "1",
                "--method",
                "linear",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "needs adapters of equal rank, these differ (s: r=4, bg: r=8)" in capsys.readouterr().err


def test_combine_refuses_non_lora(tmp_path, tiny_model_dir, two_loras, capsys):
    prompt = make_prompt_tuning(tiny_model_dir, tmp_path / "prompt")
    assert (
        main(
            [
                "adapters",
                "combine",
                f"sql={two_loras[0]}",
                f"soft={prompt}",
                "--weights",
                "1",
                "1",
                "--method",
                "cat",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "is a prompt_tuning adapter; peft combines LoRA adapters only" in capsys.readouterr().err


# ---------------------------------------------------------------------------- eval


def test_eval_scores_every_adapter_in_one_table(tmp_path, tiny_model_dir, two_loras, capsys, isolated_cache):
    sql, chat = two_loras
    data = write_jsonl(tmp_path / "eval.jsonl", chat_rows(2, seed=2))
    out = tmp_path / "scores.json"
    code = main(
        [
            "eval",
            "--adapter",
            f"a={sql}",
            "--adapter",
            f"b={chat}",
            "--with-base",
            "--data",
            str(data),
            "--max-new-tokens",
            "2",
            "--scorers",
            "exact_match",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.strip().startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["base", "a", "b"]
    assert "eval_loss" in table and "exact_match" in table
    scores = json.loads(out.read_text())["by_adapter"]
    assert list(scores) == ["base", "a", "b"]
    losses = {name: s["metrics"]["eval_loss"] for name, s in scores.items()}
    assert len(set(losses.values())) == 3  # each adapter (and the base) really scored on its own


def test_eval_with_use_keeps_the_single_adapter_output(tmp_path, two_loras, isolated_cache):
    sql, chat = two_loras
    data = write_jsonl(tmp_path / "eval.jsonl", chat_rows(2, seed=2))
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "eval",
                "--adapter",
                f"sql={sql}",
                "--adapter",
                f"chat={chat}",
                "--use",
                "chat",
                "--data",
                str(data),
                "--max-new-tokens",
                "2",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert set(json.loads(out.read_text())) == {"metrics", "samples"}

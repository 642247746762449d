"""The sentiment-control experiment's shipped pieces (configs/sentiment_control/, examples/sentiment_control/,
bench/sentiment_control.py): configs validate, the data scripts work on tiny inputs. Seconds, no training."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tuneforge.config import load_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs" / "sentiment_control").glob("*.yaml"))
EX = REPO / "examples" / "sentiment_control"


def _module(path: Path, name: str):
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(path.parent))


def test_every_stage_has_a_config():
    assert {p.stem for p in CONFIGS} >= {"classifier", "sft", "reward", "dpo", "ppo"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_load(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path.relative_to(REPO))
    assert config.output_dir == "runs/sentiment_control"


def test_sweep_overrides_load(monkeypatch):
    """The driver's overrides: DPO β and variants, PPO KL coefficients and the adaptive target."""
    monkeypatch.chdir(REPO)
    for over in (["loss.beta=0.5"], ["loss.type=ipo", "loss.beta=0.1"]):
        load_config("configs/sentiment_control/dpo.yaml", over)
    config = load_config(
        "configs/sentiment_control/ppo.yaml",
        ["ppo.kl_coef=0.1", "ppo.adaptive_kl.target=4", "ppo.adaptive_kl.horizon=480"],
    )
    assert config.ppo.adaptive_kl.target == 4 and config.data.template == "plain"


@pytest.mark.parametrize("name", ["classifier", "sft"])
def test_first_stages_pass_full_checks(name, monkeypatch):
    """Their data ships in the repository, so `tuneforge validate` passes as is (as test_shipped_configs does)."""
    from tuneforge.checks import check_config
    from tuneforge.models.load import load_tokenizer

    monkeypatch.chdir(REPO)
    config = load_config(f"configs/sentiment_control/{name}.yaml")
    report = check_config(config, tokenizer=load_tokenizer(config.model.name))
    assert report.errors == [] and report.facts["examples"] > 0


def test_make_prompts_on_tiny_input(tmp_path):
    mod = _module(EX / "make_prompts.py", "sc_make_prompts")
    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    train.write_text(
        "".join(json.dumps({"text": " ".join(words[i:] + words[:i]), "label": "neutral"}) + "\n" for i in range(8))
    )
    held.write_text(
        "".join(json.dumps({"text": "held " + w + " out text here", "label": "positive"}) + "\n" for w in words)
    )
    counts = mod.make(tmp_path / "out", train, held, n_train=5, n_eval=None, seed=1)
    assert counts["sft_train"] == 8 and counts["prompts_train"] == 5
    rows = [json.loads(line) for line in (tmp_path / "out" / "prompts_eval.jsonl").read_text().splitlines()]
    assert rows and all(2 <= len(r["prompt"].split()) <= 4 and r["prompt"].startswith("held") for r in rows)
    again = mod.make(tmp_path / "again", train, held, n_train=5, n_eval=None, seed=1)
    assert again == counts
    assert (tmp_path / "out" / "prompts_train.jsonl").read_text() == (
        tmp_path / "again" / "prompts_train.jsonl"
    ).read_text()


def test_make_pairs_ranks_by_score_with_a_gap():
    mod = _module(EX / "make_pairs.py", "sc_make_pairs")
    scored = [
        ("p1", [(" good", 0.9), (" bad", 0.1), (" meh", 0.5), (" fine", 0.8)]),
        ("p2", [(" x", 0.5), (" y", 0.6)]),  # gap too small
        ("p3", [(" same", 0.9), (" same", 0.1)]),
    ]  # identical responses never pair
    pairs = mod.make_pairs(scored, min_gap=0.3, per_prompt=2)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" good", " bad"), (" fine", " meh")]
    assert all(p["p_chosen"] - p["p_rejected"] >= 0.3 for p in pairs)


def test_shipped_pairs_are_well_formed():
    path = EX / "pairs.jsonl"  # shipped; `python bench/sentiment_control.py --stages pairs` writes it again
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 539 and all(r["chosen"] != r["rejected"] and r["p_chosen"] > r["p_rejected"] for r in rows)


def test_driver_parses_its_sweeps():
    mod = _module(REPO / "bench" / "sentiment_control.py", "sc_driver")

    class Args:
        dpo_betas, dpo_variants = [0.05, 0.5], ["ipo:0.1"]
        ppo_kl, ppo_steps, ppo_target, ppo_target_init, ppo_horizon = [0.05], 10, 4.0, [0.1], 480

    names = [n for n, _, _ in mod.dpo_runs(Args) + mod.ppo_runs(Args)]
    assert names == ["sc-dpo-b0.05", "sc-dpo-b0.5", "sc-ipo-b0.1", "sc-ppo-kl0.05", "sc-ppo-target4-b0.1"]

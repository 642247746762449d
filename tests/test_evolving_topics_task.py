"""The bundled evolving-topics task: deterministic, held-out clean, one product set and team set per quarter."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.config.schema import DataConfig
from tuneforge.data import load_splits
from tuneforge.tasks import evolving_topics
from tuneforge.tasks.evolving_topics import (
    INSTRUCTION,
    PRODUCTS,
    STAGES,
    TEAMS,
    describe,
    generate_general,
    generate_stage,
    write_task_files,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "examples" / "evolving_topics"
FILES = ("q1_train", "q1_eval", "q2_train", "q2_eval", "q3_train", "q3_eval", "general")
ALL_PRODUCTS = [product for stage in STAGES for product in PRODUCTS[stage]]
NAMES = evolving_topics._TRAIN_NAMES + evolving_topics._HELD_OUT_NAMES


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def products_in(text: str) -> list[str]:
    return [product for product in ALL_PRODUCTS if product in text]


def skeleton(ticket: str) -> str:
    """The phrasing of a ticket: product, names and numbers blanked out."""
    for product in ALL_PRODUCTS:
        ticket = ticket.replace(product, "<product>")
    ticket = re.sub(r"\b(" + "|".join(NAMES) + r")\b", "<name>", ticket)
    return re.sub(r"\d+", "<n>", ticket)


def test_same_seed_same_bytes(tmp_path):
    a = write_task_files(tmp_path / "a", train_per_stage=30, eval_per_stage=12, n_general=8, seed=3)
    b = write_task_files(tmp_path / "b", train_per_stage=30, eval_per_stage=12, n_general=8, seed=3)
    assert list(a) == list(FILES)
    for name in FILES:
        assert a[name].read_bytes() == b[name].read_bytes()
    assert [len(read_jsonl(a[name])) for name in FILES] == [30, 12, 30, 12, 30, 12, 8]


def test_different_seeds_differ():
    a = {ex["ticket"] for ex in generate_stage("q1", 60, seed=0)}
    b = {ex["ticket"] for ex in generate_stage("q1", 60, seed=1)}
    assert len(a & b) < 10
    assert generate_general(8, seed=0) != generate_general(8, seed=1)


def test_shipped_files_are_what_the_task_writes(tmp_path):
    """examples/evolving_topics/ is generated, not hand-edited: regenerate it with
    `write_task_files(Path("examples/evolving_topics"))` whenever the task changes."""
    fresh = write_task_files(tmp_path)
    for name in FILES:
        shipped = SHIPPED / f"{name}.jsonl"
        assert shipped.read_bytes() == fresh[name].read_bytes(), f"{shipped} is stale"
    assert len(read_jsonl(SHIPPED / "q1_train.jsonl")) == evolving_topics.TRAIN_PER_STAGE
    assert len(read_jsonl(SHIPPED / "q1_eval.jsonl")) == evolving_topics.EVAL_PER_STAGE


def test_products_and_teams_are_disjoint_across_stages():
    assert STAGES == ("q1", "q2", "q3")
    assert len(set(ALL_PRODUCTS)) == len(ALL_PRODUCTS)
    brands = [product.split()[0] for product in ALL_PRODUCTS]
    assert len(set(brands)) == len(brands)  # each product is told apart by its made-up brand word
    teams = [team for stage in STAGES for team in TEAMS[stage]]
    assert len(set(teams)) == len(teams)
    for stage in STAGES:
        assert set(PRODUCTS[stage].values()) == set(TEAMS[stage])
        assert set(Counter(PRODUCTS[stage].values()).values()) == {2}  # two products per team
    for a in ALL_PRODUCTS:  # no product name contains another: a mention is unambiguous
        assert [b for b in ALL_PRODUCTS if a in b] == [a]


@pytest.mark.parametrize("held_out", [False, True], ids=["train", "eval"])
def test_every_ticket_names_one_product_of_its_quarter_and_its_team(held_out):
    for stage in STAGES:
        examples = generate_stage(stage, 120 if held_out else 160, held_out=held_out)
        for ex in examples:
            assert products_in(ex["prompt"]) == [ex["product"]]
            assert ex["product"] in PRODUCTS[stage]
            assert ex["completion"] == f"team: {PRODUCTS[stage][ex['product']]}"
            assert ex["prompt"] == INSTRUCTION + ex["ticket"]
        counts = Counter(ex["product"] for ex in examples)
        assert set(counts) == set(PRODUCTS[stage]) and max(counts.values()) - min(counts.values()) <= 1
        assert len({ex["ticket"] for ex in examples}) == len(examples)


def test_shipped_completions_are_teams_of_their_own_quarter():
    for stage in STAGES:
        for split in ("train", "eval"):
            for row in read_jsonl(SHIPPED / f"{stage}_{split}.jsonl"):
                assert set(row) == {"prompt", "completion"}
                team = row["completion"].removeprefix("team: ")
                assert row["completion"] == f"team: {team}" and team in TEAMS[stage]
                (product,) = products_in(row["prompt"])
                assert PRODUCTS[stage][product] == team


def test_held_out_phrasings_never_appear_in_training():
    for stage in STAGES:
        train = generate_stage(stage, 400)
        held = generate_stage(stage, 120, held_out=True)
        train_skeletons = {skeleton(ex["ticket"]) for ex in train}
        held_skeletons = {skeleton(ex["ticket"]) for ex in held}
        assert train_skeletons.isdisjoint(held_skeletons)
        assert {ex["prompt"] for ex in train}.isdisjoint(ex["prompt"] for ex in held)
        # and no held-out issue wording, name or detail occurs in any training ticket
        held_bits = [extra.strip() for extra in evolving_topics._HELD_OUT_EXTRAS]
        held_bits += list(evolving_topics._HELD_OUT_NAMES)
        for ex in train:
            held_wordings = [wording[2].format(p=ex["product"]) for wording in evolving_topics._ISSUES]
            assert not [bit for bit in held_bits + held_wordings if bit in ex["ticket"]], ex["ticket"]


def test_general_text_is_distinct_and_not_about_tickets():
    texts = generate_general()
    assert len(texts) == evolving_topics.N_GENERAL == len(set(texts))
    for text in texts:
        assert not products_in(text) and "team" not in text.lower() and "ticket" not in text.lower()
        assert 20 <= len(text.split()) <= 80


def test_describe_names_the_stages_and_an_example():
    text = describe()
    assert "q1" in text and "q3" in text and "team: " in text


@pytest.fixture(scope="module")
def embedded_tokenizer():
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def test_files_load_with_the_data_pipeline_and_stay_short(embedded_tokenizer):
    for stage in STAGES:
        cfg = DataConfig(
            format="prompt_completion",
            train=str(SHIPPED / f"{stage}_train.jsonl"),
            eval=str(SHIPPED / f"{stage}_eval.jsonl"),
            max_length=512,
        )
        splits = load_splits(cfg, embedded_tokenizer, use_cache=False)
        assert len(splits.train) == evolving_topics.TRAIN_PER_STAGE
        assert len(splits.eval_samples) == evolving_topics.EVAL_PER_STAGE
        assert splits.report.truncated == 0
        lengths = [len(example.input_ids) for example in splits.train]
        assert min(lengths) >= 40 and max(lengths) <= 100  # chat template included: fast on a CPU
        assert {sample.reference.removeprefix("team: ") for sample in splits.eval_samples} == set(TEAMS[stage])
    general = load_splits(
        DataConfig(format="text", train=str(SHIPPED / "general.jsonl"), eval_fraction=0, max_length=128),
        embedded_tokenizer,
        use_cache=False,
    )
    assert general.report.tokens > 1000

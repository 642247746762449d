"""data.train as a mixture: each source its own format, drawn by weight (or a fixed count) every epoch,
deterministic per (seed, epoch) so a resumed run sees the same rows; each source's held-out loss logged."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import chat_rows, write_jsonl

from tuneforge.config import ConfigError, load_config
from tuneforge.data.mixture import epoch_counts, mixture_arrange
from tuneforge.training.engine import RowOrder


def test_epoch_counts_follow_weights_and_fixed_examples():
    assert epoch_counts([30, 10], [3.0, 1.0], [None, None]) == [30, 10]
    assert epoch_counts([30, 10], [1.0, 1.0], [None, None]) == [20, 20]  # the small source repeats
    assert sum(epoch_counts([7, 5, 3], [1.0, 2.0, 4.0], [None, None, None])) == 15
    assert epoch_counts([30, 10], [None, None], [None, 4]) == [36, 4]  # a fixed count, the rest to the other


def test_each_epoch_draws_exact_shares_and_every_row_before_any_twice():
    source_of_row = [0] * 30 + [1] * 10
    counts = [20, 20]
    order = RowOrder(len(source_of_row), seed=5, arrange=mixture_arrange(source_of_row, counts))
    for epoch in range(3):
        rows = order.take(epoch * 40, 40)
        per_source = Counter(source_of_row[i] for i in rows)
        assert per_source == {0: 20, 1: 20}
        small = Counter(i for i in rows if source_of_row[i] == 1)
        assert set(small.values()) == {2}  # 10 rows drawn 20 times: each exactly twice
        big = [i for i in rows if source_of_row[i] == 0]
        assert len(set(big)) == 20  # 20 different rows of the 30, no repeats
    # Deterministic from (seed, epoch): a resumed run reading mid-epoch sees the same rows.
    again = RowOrder(len(source_of_row), seed=5, arrange=mixture_arrange(source_of_row, counts))
    assert again.take(57, 10) == order.take(57, 10)
    other_epochs = {tuple(sorted(order.take(e * 40, 40))) for e in range(3)}
    assert len(other_epochs) > 1  # the big source contributes a different part each epoch


def _mixed_config(tmp_path, model_dir, **data):
    domain = write_jsonl(tmp_path / "domain.jsonl", chat_rows(24, seed=1))
    domain_eval = write_jsonl(tmp_path / "domain_eval.jsonl", chat_rows(6, seed=2))
    general = write_jsonl(
        tmp_path / "general.jsonl",
        [{"text": f"the river {i} runs past the stone and the cloud {i % 7}"} for i in range(40)],
    )
    general_eval = write_jsonl(
        tmp_path / "general_eval.jsonl", [{"text": f"a cloud {i} over the hill"} for i in range(6)]
    )
    return load_config(
        data={
            "method": "sft",
            "name": "mixed",
            "output_dir": str(tmp_path / "runs"),
            "model": {"name": str(model_dir)},
            "data": {
                "format": "chat",
                "max_length": 256,
                "packing": False,
                "train": [
                    {"path": str(domain), "weight": 1, "eval": str(domain_eval), "name": "domain"},
                    {"path": str(general), "weight": 1, "format": "text", "eval": str(general_eval), "name": "general"},
                ],
                **data,
            },
            "adapter": {"type": "lora", "r": 4, "alpha": 8},
            "training": {"max_steps": 6, "batch_size": 4, "eval_every": 3, "learning_rate": 5e-3, "seed": 3},
            "eval": {"scorers": [], "max_new_tokens": 2},
        }
    )


def test_a_mixed_sft_run_logs_each_sources_held_out_loss(tmp_path, tiny_model_dir, isolated_cache, capsys):
    from tuneforge.cli import main
    from tuneforge.runner import train_from_config

    config = _mixed_config(tmp_path, tiny_model_dir)
    result = train_from_config(config)
    sources = result.summary["data"]["sources"]
    assert set(sources) == {"domain", "general"}
    # 24 chat rows; the 40 short texts are 8 blocks of max_length tokens (format text); weights 1 : 1
    assert sources["domain"]["rows"] == 24 and sources["general"]["rows"] == 8
    assert sources["domain"]["rows_per_epoch"] == sources["general"]["rows_per_epoch"] == 16
    assert sources["general"]["repeats"] == 2.0 and sources["domain"]["share_of_rows"] == 0.5
    for side in ("before", "after"):
        assert {"eval_loss/domain", "eval_loss/general"} <= set(result.summary[side])
    logged = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval_loss/general" in r] == [3, 6]
    # validate says each source's share
    (tmp_path / "mixed.yaml").write_text((result.run_dir / "config.yaml").read_text().replace("name: mixed", "name: v"))
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "mixed.yaml")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "mixture: domain 50% of rows (16 per epoch from 24" in out and "general 50% of rows (16 per epoch from 8" in out
    )


def test_mixture_mistakes_are_named(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="give weight or examples, not both"):
        load_config(
            data={
                "method": "sft",
                "data": {"format": "chat", "train": [{"path": "a.jsonl", "weight": 1, "examples": 3}]},
            }
        )
    from tuneforge.checks import check_files
    from tuneforge.config.schema import TrainSource

    config = _mixed_config(tmp_path, tiny_model_dir)
    broken = config.model_copy(
        update={
            "data": config.data.model_copy(
                update={"train": [config.data.train[0], TrainSource(path=str(tmp_path / "nope.jsonl"))]}
            )
        }
    )
    errors = " ".join(check_files(broken).errors)
    assert "nope.jsonl" in errors

"""Scoring every stage's task after every stage: the accuracy matrix R and general-text perplexity.

Each task is scored by the method's own evaluation on that stage's config (its held-out set, its
scorers), so R[i][j] means what a one-stage run's "after" score on task j would mean.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path


class ScoreMissing(KeyError):
    def __str__(self) -> str:  # KeyError would print its message in quotes
        return str(self.args[0]) if self.args else ""


def score_metric(config, method) -> str:
    """The score in R: continual.metric, else the first eval scorer (generating methods), else accuracy."""
    chosen = config.continual.metric if config.continual is not None else None
    if chosen:
        return chosen
    if config.eval is not None and method.causal_lm_output and config.eval.scorers:
        return config.eval.scorers[0].rsplit(":", 1)[-1]
    return "accuracy"


def pick_score(metrics: dict, metric: str, task: str) -> float:
    if metric not in metrics:
        raise ScoreMissing(
            f"continual.metric '{metric}': task {task}'s evaluation gave no such score "
            f"(it gave: {', '.join(sorted(metrics)) or 'nothing'}); set continual.metric "
            f"to one of them, or add the scorer to eval.scorers"
        )
    return float(metrics[metric])


def load_general_rows(path: str, data_cfg, tokenizer) -> list:
    """The general-text set as packed rows, every token carrying the loss (format text, no packing)."""
    from ..config.schema import DataConfig
    from ..data import load_splits, pack

    cfg = DataConfig(format="text", train=path, eval=path, max_length=data_cfg.max_length, packing=False)
    splits = load_splits(cfg, tokenizer)
    return pack(splits.eval, cfg.max_length, False)


def general_perplexity(method, config, model, rows: list, tokenizer, accelerator) -> float:
    """exp(mean next-token loss) of ``model`` on the general-text rows, by the method's own loss module
    (a method whose output is a causal LM: ``Method.causal_lm_output``)."""
    from functools import partial

    from ..interface import MethodData
    from ..training.loop import heldout_mean_loss

    loss = heldout_mean_loss(
        method.loss_module(config, model, MethodData(train=rows, eval=rows)),
        rows,
        partial(method.collate, tokenizer=tokenizer),
        config.training.batch_size,
        accelerator,
    )
    return round(math.exp(min(loss, 50)), 4)


def matrix_csv(
    rows: list[str], columns: list[str], values: list[list[float]], perplexity: list[float | None] | None
) -> str:
    """R as CSV: one line per row (after stage …), one column per task, then general perplexity."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["after", *columns, *(["general_perplexity"] if perplexity else [])])
    for k, label in enumerate(rows):
        extra = [perplexity[k]] if perplexity else []
        writer.writerow([label, *values[k], *extra])
    return out.getvalue()


def write_matrix_csv(path: Path, summary: dict) -> None:
    matrix = summary["matrix"]
    ppl = (summary.get("general_perplexity") or {}).get("values")
    text = matrix_csv(matrix["rows"], matrix["columns"], matrix["values"], ppl)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(text)
    tmp.replace(path)

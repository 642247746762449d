"""Human feedback → comparisons for the reward model, and their batches.

A comparison is one batch element, as in InstructGPT (Ouyang et al. 2022,
arXiv 2203.02155): a preference pair (K = 2, with its optional margin) or a
whole K-way ranking, its responses best → worst. Ratings arrive as pairs (by
score difference, ``min_gap``) and corrections as pairs (the correction
preferred). Reading, row validation (``file:line: field: problem``), the chat
template check, rendering and truncation all come from ``methods/preference``,
so a response here is token-for-token what SFT and DPO see.

The held-out split (``eval_fraction``) is made over prompts, not rows: ratings
turn one prompt into several pairs that share responses, and splitting those
pairs would put the same response on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...data.templates import TemplateError, use_chat_template
from ...data.types import DataError, Example
from ..preference.data import PairExample, RankingExample, collate_rankings, encode_feedback
from ..preference.feedback import Feedback, Prompt, SourceReport, read_feedback, split_by_prompt

# Every field a feedback form reads (preference/feedback.py), for checking data.columns.
FIELDS = (
    "prompt",
    "chosen",
    "rejected",
    "margin",
    "responses",
    "ranks",
    "response",
    "score",
    "scores",
    "original",
    "correction",
    "corrected",
)
HINT = "Fix these rows (or run `tuneforge validate` to see a full report)."


@dataclass
class Comparison:
    """One batch element: K ≥ 2 responses to one prompt, best → worst (a pair is K = 2)."""

    prompt_ids: list[int]
    responses: list[Example]  # each: prompt ids + response ids
    margin: float | None  # pairs only (Llama 2's per-pair margin); rankings carry none
    where: str

    @property
    def input_ids(self) -> list[int]:
        """All responses' ids end to end: the runner counts tokens and sorts held-out batches with it."""
        return [t for seq in self.responses for t in seq.input_ids]

    @property
    def pairs(self) -> int:
        k = len(self.responses)
        return k * (k - 1) // 2


@dataclass
class FeedbackSplits:
    train: list[Comparison]
    eval: list[Comparison]
    chat: bool  # rendered with the tokenizer's chat template (else plain text); saved with the model
    prompts: dict[str, Prompt]  # where → prompt of each held-out record, for the report's samples
    sources: list[str] = field(default_factory=list)  # one line per source: rows → records, pairs, drops
    warnings: list[str] = field(default_factory=list)
    tokens: int = 0
    truncated: int = 0


def _read(source, cfg, problems: list[str], hints: list[str]) -> Feedback | None:
    try:
        feedback = read_feedback(source, cfg.feedback_format, min_gap=cfg.min_gap, columns=cfg.columns or None)
    except DataError as err:
        problems.extend(err.problems)
        hints.append(err.hint)
        return None
    for report in feedback.reports:
        if report.form == "thumbs":
            problems.append(
                f"{report.source}: thumbs up / down rate single responses and say nothing about "
                "which of two is better; a reward model needs pairs, rankings, ratings or corrections "
                "(thumbs train method: dpo with loss: kto)"
            )
    return feedback


def _comparison(example) -> Comparison:
    if isinstance(example, PairExample):
        return Comparison(example.prompt_ids, [example.chosen, example.rejected], example.margin, example.where)
    assert isinstance(example, RankingExample)  # thumbs were refused in _read
    return Comparison(example.prompt_ids, example.responses, None, example.where)


def load_feedback(cfg, tokenizer) -> FeedbackSplits:
    """Read, validate, split (by prompt) and tokenise; raise DataError listing every problem."""
    problems = [
        f"data.columns.{name}: not a feedback field (fields: {', '.join(FIELDS)})"
        for name in cfg.columns
        if name not in FIELDS
    ]
    try:
        chat = use_chat_template(tokenizer, cfg.template)
    except TemplateError as err:
        problems.extend(f"data.{p}" for p in err.problems)
        chat = False
    hints: list[str] = []
    train = _read(cfg.train, cfg, problems, hints)
    held = _read(cfg.eval, cfg, problems, hints) if cfg.eval is not None else None
    if problems:
        raise DataError(problems, hint=next((h for h in hints if h), HINT))
    reports: list[SourceReport] = train.reports + (held.reports if held else [])
    if held is not None:
        train_records, eval_records = train.records, held.records
    else:
        train_records, eval_records = split_by_prompt(train.records, cfg.eval_fraction, cfg.seed)
    splits = FeedbackSplits(
        [],
        [],
        chat,
        {r.where: r.prompt for r in eval_records},
        sources=[r.summary() for r in reports],
        warnings=[w for r in reports for w in r.warnings],
    )
    for name, records in (("train", train_records), ("eval", eval_records)):
        examples, report = encode_feedback(
            tokenizer, records, chat=chat, max_length=cfg.max_length, system_prompt=cfg.system_prompt
        )
        setattr(splits, name, [_comparison(e) for e in examples])
        splits.tokens += report.tokens if name == "train" else 0
        splits.truncated += report.truncated if name == "train" else 0
        splits.warnings.extend(f"data.{name}: {w}" for w in report.warnings)
    if not splits.train:
        raise DataError(
            [f"data.train: no comparisons to train on ({'; '.join(splits.sources)})"],
            hint="Every row was dropped or the source is empty; see `tuneforge validate`.",
        )
    return splits


def collate_comparisons(rows: list[Comparison], pad_id: int) -> dict[str, torch.Tensor]:
    """Each comparison's K responses contiguous, best first (``preference.data.collate_rankings``):
    ``input_ids`` / ``attention_mask`` (N, T) with N = Σ K_b, right-padded; ``group`` (N,) its
    comparison, ``rank`` (N,) 0 = best; ``margin`` (B,) float, 0 where none."""
    out = collate_rankings([RankingExample(r.prompt_ids, r.responses, r.where) for r in rows], pad_id)
    del out["labels"]  # a score needs no token targets
    out["margin"] = torch.tensor([r.margin or 0.0 for r in rows], dtype=torch.float32)  # (B,)
    return out

"""The data section shared by the methods that learn from human feedback (reward, dpo)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...config.schema import Section
from .names import FEEDBACK_FORMATS


class FeedbackData(Section):
    train: str | list[str] = Field(
        description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset of human feedback: preference "
        "pairs, K-way rankings, ratings, corrections or thumbs up / down (see feedback_format)."
    )
    eval: str | list[str] | None = None
    eval_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Held-out share of train's prompts when no eval source is given (all "
        "comparisons of one prompt stay on one side).",
    )
    feedback_format: Literal[FEEDBACK_FORMATS] = Field(
        "auto",
        description="auto: read each source's first row. pairs: {prompt, chosen, rejected} (optional "
        "margin); rankings: {prompt, responses: [best, …, worst]} (or with ranks); ratings: {prompt, response, "
        "score} rows → pairs by score difference; corrections: {prompt, response, correction}; thumbs: "
        "{prompt, completion, label} (unpaired: dpo with loss.type kto).",
    )
    min_gap: float = Field(
        0.0, ge=0, description="ratings: the smallest score difference that makes a pair (equal scores never do)."
    )
    max_length: int = Field(
        512,
        ge=8,
        description="Tokens per sequence (prompt + one response); longer ones are "
        "cut: the prompt from the left, responses from the right.",
    )
    template: Literal["auto", "chat", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template if it has one, else plain text."
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the feedback fields onto your column names, e.g. {prompt: question}."
    )
    system_prompt: str | None = None
    seed: int = 0

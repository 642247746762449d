"""The run config of `method: reward`: its own data (human feedback), loss and eval sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...config.schema import RunBase, Section


class FeedbackData(Section):
    train: str | list[str] = Field(
        description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset of human feedback: preference "
        "pairs, K-way rankings, ratings or corrections (see feedback_format).",
    )
    eval: str | list[str] | None = None
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Held-out share of train's prompts when no eval source is given (all "
        "comparisons of one prompt stay on one side).",
    )
    feedback_format: Literal["auto", "pairs", "rankings", "ratings", "corrections"] = Field(
        "auto", description="auto: read each source's first row. pairs: {prompt, chosen, rejected} (optional "
        "margin); rankings: {prompt, responses: [best, …, worst]} (or with ranks); ratings: {prompt, response, "
        "score} rows → pairs by score difference; corrections: {prompt, response, correction}.",
    )
    min_gap: float = Field(0.0, ge=0, description="ratings: the smallest score difference that makes a pair "
                           "(equal scores never do).")
    max_length: int = Field(512, ge=8, description="Tokens per sequence (prompt + one response); longer ones are "
                            "cut: the prompt from the left, responses from the right.")
    template: Literal["auto", "chat", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template if it has one, else plain text.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the feedback fields onto your column names, e.g. {prompt: question}.",
    )
    system_prompt: str | None = None
    seed: int = 0


class RewardLossConfig(Section):
    margin: bool = Field(
        True, description="Use per-pair margins from the data (a `margin` field, as Llama 2 did) when present: "
        "−log σ(r_w − r_l − m).",
    )
    center_coef: float = Field(
        0.0, ge=0, description="Weight c of the centring term c·(r_w + r_l)², which keeps scores near zero "
        "(TRL's center_rewards_coefficient; 0.01 is the usual value).",
    )


class RewardEval(Section):
    batch_size: int = Field(16, ge=1, description="Comparisons (pairs or rankings) per evaluation batch.")
    samples_in_report: int = Field(6, ge=0, description="Held-out comparisons shown with their scores.")


class RewardConfig(RunBase):
    """Reward model: a scalar head on a causal LM trained on human preferences (Bradley–Terry)."""

    method: Literal["reward"]
    data: FeedbackData
    loss: RewardLossConfig = Field(default_factory=RewardLossConfig)
    eval: RewardEval | None = Field(default_factory=RewardEval)

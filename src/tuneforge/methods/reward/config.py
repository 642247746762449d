"""The run config of `method: reward`: its own data (human feedback), loss and eval sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...config.schema import RunBase, Section
from ..preference.config import FeedbackData


class RewardData(FeedbackData):
    feedback_format: Literal["auto", "pairs", "rankings", "ratings", "corrections"] = Field(
        "auto",
        description="auto: read each source's first row. pairs: {prompt, chosen, rejected} (optional "
        "margin); rankings: {prompt, responses: [best, …, worst]} (or with ranks); ratings: {prompt, response, "
        "score} rows → pairs by score difference; corrections: {prompt, response, correction}. (Thumbs rate "
        "single responses: they train dpo with loss.type kto, not a pairwise reward model.)",
    )


class RewardLossConfig(Section):
    margin: bool = Field(
        True,
        description="Use per-pair margins from the data (a `margin` field, as Llama 2 did) when present: "
        "−log σ(r_w − r_l − m).",
    )
    center_coef: float = Field(
        0.0,
        ge=0,
        description="Weight c of the centring term c·(r_w + r_l)², which keeps scores near zero "
        "(TRL's center_rewards_coefficient; 0.01 is the usual value).",
    )


class RewardEval(Section):
    batch_size: int = Field(16, ge=1, description="Comparisons (pairs or rankings) per evaluation batch.")
    samples_in_report: int = Field(6, ge=0, description="Held-out comparisons shown with their scores.")


class RewardConfig(RunBase):
    """Reward model: a scalar head on a causal LM trained on human preferences (Bradley–Terry)."""

    method: Literal["reward"]
    data: RewardData
    loss: RewardLossConfig = Field(default_factory=RewardLossConfig)
    eval: RewardEval | None = Field(default_factory=RewardEval)

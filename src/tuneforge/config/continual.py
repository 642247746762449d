"""The ``stages:`` and ``continual:`` sections of a run config (issue #10).

A continual run is an ordinary run config (any method's ``method:``, ``model:``, ``adapter:``,
``data:``, ``training:``, ``eval:``) plus an ordered list of ``stages``. Each stage names its own
data and held-out set (keys of ``data:`` it changes) and may change a few training settings; every
other setting is the top-level one. ``continual:`` picks the strategy that holds forgetting in
check and its settings. ``tuneforge train`` runs all stages in one process (``continual/runner.py``).

These classes live in the config package (not in ``continual/``) because ``RunBase`` needs them and
imports point down: ``continual/`` imports ``config/``, never the reverse. ``continual/config.py``
re-exports them under their old path.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STRATEGIES = ("naive", "replay", "l2", "ewc", "adapter", "joint")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageTraining(_Section):
    """Training settings a stage may change; unset ones are the top-level ``training:`` values."""

    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)


class StageConfig(_Section):
    name: str = Field(description="The task's name: a folder-safe word, unique among the stages (e.g. q1).")
    data: dict[str, Any] = Field(
        description="Keys of the top-level data: section this stage changes; at least train (and usually "
        "eval, the stage's held-out set). Validated as a whole data: section."
    )
    training: StageTraining = Field(default_factory=StageTraining)

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("must be a folder-safe name: letters, digits, '_', '.', '-' (e.g. q1)")
        return value


class ReplaySettings(_Section):
    """Rehearsal: part of every stage's rows come from earlier stages (Rolnick et al. 2019; TRACE uses 10 %)."""

    fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of each stage's training rows drawn from earlier stages' buffers "
        "(Ibrahim et al. 2024: 1-5 % for mild shifts, ~25 % for strong ones).",
    )
    by: Literal["examples", "tokens"] = Field(
        "examples", description="Count the share in rows (examples) or in tokens."
    )
    buffer_size: int = Field(1000, ge=1, description="Rows kept per earlier stage (reservoir-sampled, uniform).")


class L2Settings(_Section):
    weight: float = Field(1.0, ge=0, description="λ in λ/2 · Σ (θ − θ*)², θ* = the weights at the stage's start.")


class EwcSettings(_Section):
    """Elastic weight consolidation (Kirkpatrick et al. 2017) with the diagonal empirical Fisher."""

    weight: float = Field(1.0, ge=0, description="λ in λ/2 · Σ F_i (θ_i − θ*_i)².")
    fisher_batches: int = Field(32, ge=1, description="Rows of the finished stage the Fisher is averaged over.")
    normalize: bool = Field(
        True,
        description="Divide the Fisher by its mean, so λ is on the scale of the L2 weight whatever the "
        "model size and loss scale; false: the raw E[(∂ log p/∂θ)²].",
    )
    accumulate: bool = Field(
        True,
        description="Sum the Fishers of all finished stages (online EWC, Schwarz et al. 2018); false: "
        "only the previous stage's.",
    )


class AdapterStageSettings(_Section):
    """One LoRA adapter per stage, frozen after its stage (O-LoRA, Wang et al. 2023, arXiv 2310.14152)."""

    orthogonality: float = Field(
        0.5, ge=0, description="λ1: weight of Σ_old Σ_layers |A_old A_newᵀ| (the paper's default 0.5)."
    )
    l2: float = Field(0.0, ge=0, description="λ2: weight of ‖θ_new‖² on the new adapter (the paper's code: 0).")
    inference: Literal["sum", "route"] = Field(
        "sum",
        description="sum: every stage's adapter active at once, as O-LoRA trains them; route: each "
        "stage's adapter trained alone on the base and a task evaluated with its own adapter (by task name).",
    )
    merge: list[Literal["linear", "cat", "ties", "dare_linear", "dare_ties"]] = Field(
        default_factory=list,
        description="After the last stage, also merge the stage adapters into one "
        "(adapters combine) with each method listed and score the merged adapter on every task.",
    )
    density: float = Field(0.5, gt=0, le=1, description="ties / dare: share of each adapter's entries kept.")


class WiseFtSettings(_Section):
    """Weight-space interpolation after a stage (Wortsman et al. 2022): θ(α) = (1−α)·θ_start + α·θ_end."""

    alphas: list[float] = Field(default_factory=list, description="α values to score; [] = no sweep.")
    stages: Literal["last", "all"] = "last"

    @field_validator("alphas")
    @classmethod
    def _unit_interval(cls, values: list[float]) -> list[float]:
        if any(not 0 <= a <= 1 for a in values):
            raise ValueError("every α must be in [0, 1]")
        return sorted(set(values))


class ContinualConfig(_Section):
    strategy: Literal["naive", "replay", "l2", "ewc", "adapter", "joint"] = Field(
        "naive",
        description="naive: stages one after another, unprotected; replay / l2 / ewc / adapter: "
        "protected; joint: one training on the union of all stages (the upper reference).",
    )
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    l2: L2Settings = Field(default_factory=L2Settings)
    ewc: EwcSettings = Field(default_factory=EwcSettings)
    adapter: AdapterStageSettings = Field(default_factory=AdapterStageSettings)
    wise_ft: WiseFtSettings = Field(default_factory=WiseFtSettings)
    general_text: str | None = Field(
        None,
        description="Held-out general-domain text (format text: JSONL rows with 'text', or .txt); its "
        "perplexity after every stage measures general ability lost. Causal-LM methods only.",
    )
    metric: str | None = Field(
        None, description="The score in the accuracy matrix (default: the first eval scorer; accuracy for classify)."
    )

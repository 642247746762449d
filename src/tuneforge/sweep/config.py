"""The sweep file's schema (torch-free, like every config)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config.schema import Section


class Parameter(Section):
    """One config key to search: a list of ``values``, or a ``range`` (optionally on a log scale / integers)."""

    values: list[Any] | None = Field(None, description="The values to try (grid) or draw from (random, tpe).")
    range: tuple[float, float] | None = Field(None, description="[low, high] for random / tpe draws.")
    log: bool = Field(False, description="Draw the range on a log scale (learning rates).")
    integer: bool = Field(False, description="Draw whole numbers from the range.")

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.values is None) == (self.range is None):
            raise ValueError("give either values: [...] or range: [low, high]")
        if self.values is not None and not self.values:
            raise ValueError("values: give at least one")
        if self.range is not None:
            low, high = self.range
            if not low < high:
                raise ValueError(f"range: low {low} must be below high {high}")
            if self.log and low <= 0:
                raise ValueError("range with log: true needs low > 0")
        return self


class StopPoorTrials(Section):
    """Median stopping (Golovin et al. 2017, Google Vizier): a trial whose best held-out value at an
    evaluation trails the median of the earlier trials' values at the same step stops there."""

    enabled: bool = True
    metric: str = Field("eval_loss", description="A metric logged every training.eval_every steps.")
    min_trials: int = Field(2, ge=1, description="Finished trials needed before any trial is stopped.")
    min_evals: int = Field(1, ge=1, description="Evaluations a trial always gets before it can be stopped.")


class SweepConfig(Section):
    config: str = Field(description="The base run config (YAML), relative to the sweep file.")
    name: str | None = Field(None, description="The sweep's folder under the base config's output_dir.")
    metric: str = Field(description="What to optimise: a key of the trials' summary.json 'after' metrics.")
    mode: Literal["auto", "min", "max"] = "auto"
    strategy: Literal["grid", "random", "tpe"] = Field(
        "random", description="grid: every combination of values; random: independent draws; tpe: Optuna's TPE."
    )
    trials: int = Field(8, ge=1, description="Trials to run (grid: at most this many combinations).")
    seed: int = 0
    budget: str | None = Field(None, description="Total wall-clock budget, e.g. 30m, 2h, 900s (--budget overrides).")
    parameters: dict[str, Parameter] = Field(
        description="Dotted config keys → what to try, e.g. training.learning_rate."
    )
    stop_poor_trials: StopPoorTrials = Field(default_factory=StopPoorTrials)

    @model_validator(mode="after")
    def _checks(self):
        if not self.parameters:
            raise ValueError("parameters: name at least one config key to search")
        if self.strategy == "grid" and any(p.values is None for p in self.parameters.values()):
            raise ValueError("strategy grid: every parameter needs values: [...] (a range has no grid)")
        if self.budget is not None:
            budget_seconds(self.budget)
        return self


def budget_seconds(text: str) -> float:
    """'30m' → 1800.0; '2h', '900s', '1h30m' too."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not match or not any(match.groups()):
        raise ValueError(f"budget '{text}': write it like 30m, 2h, 1h30m or 900s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds

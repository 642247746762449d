"""Median stopping (Golovin et al. 2017, "Google Vizier", §3.2.2): stop a trial at an evaluation when its
best value so far trails the median of the earlier trials' best values at the same step."""

from __future__ import annotations

import statistics


def best_so_far(curve: list[list[float]], step: int, lower: bool) -> float | None:
    """The best value of ``curve`` ([[step, value], …]) up to and including ``step``."""
    seen = [value for s, value in curve if s <= step]
    if not seen:
        return None
    return min(seen) if lower else max(seen)


class MedianStopping:
    """Watches one trial's evaluations; ``__call__(step, metrics)`` is True when the trial should stop."""

    def __init__(self, settings, earlier_curves: list[list[list[float]]], *, lower: bool):
        self.settings, self.earlier, self.lower = settings, earlier_curves, lower
        self.curve: list[list[float]] = []
        self.stopped_at: int | None = None

    def __call__(self, step: int, metrics: dict) -> bool:
        value = metrics.get(self.settings.metric)
        if value is None:
            return False  # this evaluation did not report the metric: nothing to compare
        self.curve.append([step, float(value)])
        if not self.settings.enabled or len(self.curve) < self.settings.min_evals:
            return False
        others = [
            b for c in self.earlier if c and c[-1][0] >= step and (b := best_so_far(c, step, self.lower)) is not None
        ]
        if len(others) < self.settings.min_trials:
            return False
        median = statistics.median(others)
        mine = best_so_far(self.curve, step, self.lower)
        if mine is None:
            return False
        worse = mine > median if self.lower else mine < median
        if worse:
            self.stopped_at = step
        return worse

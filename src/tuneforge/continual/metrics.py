"""Continual-learning metrics from the accuracy matrix R (Lopez-Paz & Ranzato 2017, GEM; Chaudhry et al. 2018).

``R[i][j]`` is the score on task j after stage i; row 0 is the model before any stage (the base), so for T
tasks R has T + 1 rows and T columns, and task j (0-based column) is trained in stage j + 1 (row j + 1).
In the papers' 1-based notation, with R[T] the final row:

- ACC = mean over tasks of R[T][j];
- BWT = 1/(T−1) · Σ_{j<T} (R[T][j] − R[j][j]): what later stages did to earlier tasks (negative = forgetting);
- FWT = 1/(T−1) · Σ_{j>1} (R[j−1][j] − R[0][j]): what earlier stages did for a task before it was trained;
- forgetting of task j < T = max_{j ≤ l < T} R[l][j] − R[T][j] (Chaudhry et al.: the best score it had
  after being learned, minus the final one; the base row is not "learned", so it does not count).

BWT and FWT need at least two tasks; with one they are None.

Departure from the papers: they score with accuracy (higher is better). ``continual.metric`` may be a loss
(``eval_loss``, lower is better), so every difference is taken in the metric's direction of improvement:
with s = +1 for a higher-is-better score and s = −1 for a lower-is-better one, BWT = mean of s·(R[T][j] − R[j][j]),
FWT = mean of s·(R[j−1][j] − R[0][j]) and forgetting = s·(best after learning − R[T][j]), "best" being the
max for a score and the min for a loss. So whatever the metric, BWT < 0 and forgetting > 0 mean earlier
tasks got worse, and FWT > 0 means earlier stages helped. Without s a loss that rose (forgotten) gave
BWT > 0 and negative forgetting (issue #20). ACC stays the plain mean of the final row, in the metric's units.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContinualMetrics:
    acc: float
    bwt: float | None
    fwt: float | None
    forgetting: list[float]  # per task, the last one (never followed by a stage) excluded
    mean_forgetting: float | None


def _check(matrix: list[list[float]]) -> int:
    tasks = len(matrix[0]) if matrix else 0
    if tasks == 0 or len(matrix) != tasks + 1 or any(len(row) != tasks for row in matrix):
        raise ValueError(
            f"R must have T + 1 rows (the base, then one per stage) of T scores; got "
            f"{len(matrix)} rows of {[len(row) for row in matrix]}"
        )
    return tasks


def continual_metrics(matrix: list[list[float]], *, lower_is_better: bool) -> ContinualMetrics:
    """ACC, BWT, FWT and per-task forgetting of a (T + 1) × T accuracy matrix (row 0: the base model).

    ``lower_is_better``: the scores are losses (``eval/report.lower_is_better(metric)``); required, so that
    no caller silently gets a loss read as an accuracy."""
    t = _check(matrix)
    final = matrix[t]
    acc = sum(final) / t
    if t == 1:
        return ContinualMetrics(acc=acc, bwt=None, fwt=None, forgetting=[], mean_forgetting=None)
    s = -1.0 if lower_is_better else 1.0  # turns "the score went up" into "the task got better"
    # task j (0-based) is learned at row j + 1
    bwt = sum(s * (final[j] - matrix[j + 1][j]) for j in range(t - 1)) / (t - 1)
    fwt = sum(s * (matrix[j][j] - matrix[0][j]) for j in range(1, t)) / (t - 1)
    # best after learning minus final, in the direction of improvement: s·max(s·R) = max for scores, min for losses
    forgetting = [max(s * matrix[row][j] for row in range(j + 1, t)) - s * final[j] for j in range(t - 1)]
    return ContinualMetrics(
        acc=acc, bwt=bwt, fwt=fwt, forgetting=forgetting, mean_forgetting=sum(forgetting) / len(forgetting)
    )

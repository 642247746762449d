"""Continual-learning metrics against hand-worked accuracy matrices (METHODS.md, "Continual learning").

The sign convention holds whatever the metric's direction (issue #20): BWT < 0 and forgetting > 0 mean
earlier tasks got worse, FWT > 0 means earlier stages helped, for an accuracy and for a loss alike."""

import pytest

from tuneforge.continual.metrics import continual_metrics

# Three tasks; row 0 = base, row i = after stage i (stage i trains task i, column i - 1).
R = [
    [0.10, 0.20, 0.05],  # base
    [0.90, 0.30, 0.10],  # after stage 1: task 1 learned, task 2 a little better (forward transfer)
    [0.60, 0.80, 0.25],  # after stage 2: task 1 partly forgotten
    [0.50, 0.70, 0.95],  # after stage 3
]

# The same story told with a loss (lower is better), e.g. continual.metric: eval_loss.
L = [
    [2.00, 3.00, 4.00],  # base
    [0.50, 2.50, 3.80],  # after stage 1: task 1 learned, task 2's loss a little lower (forward transfer)
    [1.00, 0.40, 3.00],  # after stage 2: task 1's loss back up (forgotten)
    [1.50, 0.60, 0.20],  # after stage 3: tasks 1 and 2 worse again
]


def test_metrics_match_the_hand_worked_values():
    m = continual_metrics(R, lower_is_better=False)
    assert m.acc == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    # BWT = ((R3,1 − R1,1) + (R3,2 − R2,2)) / 2 = ((0.50 − 0.90) + (0.70 − 0.80)) / 2
    assert m.bwt == pytest.approx(-0.25)
    # FWT = ((R1,2 − R0,2) + (R2,3 − R0,3)) / 2 = ((0.30 − 0.20) + (0.25 − 0.05)) / 2
    assert m.fwt == pytest.approx(0.15)
    # forgetting: task 1 max(0.90, 0.60) − 0.50 = 0.40; task 2 max(0.80) − 0.70 = 0.10
    assert m.forgetting == pytest.approx([0.40, 0.10])
    assert m.mean_forgetting == pytest.approx(0.25)


def test_loss_metrics_match_the_hand_worked_values():
    """For a loss every difference is taken the other way round: a rising loss is forgetting."""
    m = continual_metrics(L, lower_is_better=True)
    assert m.acc == pytest.approx((1.50 + 0.60 + 0.20) / 3)  # ACC: the plain mean of the final row
    # BWT = −((L3,1 − L1,1) + (L3,2 − L2,2)) / 2 = −((1.50 − 0.50) + (0.60 − 0.40)) / 2 = −0.6: forgetting
    assert m.bwt == pytest.approx(-0.6)
    # FWT = −((L1,2 − L0,2) + (L2,3 − L0,3)) / 2 = −((2.50 − 3.00) + (3.00 − 4.00)) / 2 = +0.75: it helped
    assert m.fwt == pytest.approx(0.75)
    # forgetting = final − best (lowest) after learning: task 1 1.50 − min(0.50, 1.00) = 1.0; task 2 0.60 − 0.40
    assert m.forgetting == pytest.approx([1.0, 0.2])
    assert m.mean_forgetting == pytest.approx(0.6)


def test_a_loss_that_keeps_falling_is_positive_transfer_not_forgetting():
    m = continual_metrics([[1.0, 1.0], [0.5, 0.9], [0.3, 0.2]], lower_is_better=True)
    assert m.bwt == pytest.approx(0.2)  # task 1's loss fell 0.5 → 0.3 after stage 2: better
    assert m.fwt == pytest.approx(0.1)  # task 2's loss fell 1.0 → 0.9 before it was trained: better
    assert m.forgetting == pytest.approx([-0.2])  # it ends below its best loss after learning


def test_a_loss_matrix_reads_like_the_negated_scores():
    """Equivalence: R as a loss gives the transfer terms of −R as a score (only ACC keeps the loss's sign)."""
    as_loss = continual_metrics(L, lower_is_better=True)
    as_score = continual_metrics([[-v for v in row] for row in L], lower_is_better=False)
    assert as_loss.acc == pytest.approx(-as_score.acc)
    assert (as_loss.bwt, as_loss.fwt) == pytest.approx((as_score.bwt, as_score.fwt))
    assert as_loss.forgetting == pytest.approx(as_score.forgetting)


def test_no_forgetting_and_no_transfer():
    m = continual_metrics([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], lower_is_better=False)
    assert (m.acc, m.bwt, m.fwt, m.forgetting) == (1.0, 0.0, 0.0, [0.0])
    m = continual_metrics([[2.0, 2.0], [0.5, 2.0], [0.5, 0.5]], lower_is_better=True)
    assert (m.acc, m.bwt, m.fwt, m.forgetting) == (0.5, 0.0, 0.0, [0.0])
    assert str(m.bwt) == "0.0" and str(m.fwt) == "0.0"  # not "-0.0" in summary.json


@pytest.mark.parametrize("lower", [False, True])
def test_forgetting_ignores_the_base_row(lower):
    """A task the base already did well and training never reached does not count as forgotten from row 0."""
    if lower:  # base loss 0.1 on task 1; best after learning 0.5, final 0.6
        m = continual_metrics([[0.1, 3.0], [0.5, 2.0], [0.6, 0.3]], lower_is_better=True)
    else:
        m = continual_metrics([[0.9, 0.1], [0.5, 0.2], [0.4, 0.8]], lower_is_better=False)
    assert m.forgetting == pytest.approx([0.1])  # against rows ≥ 1 only (0.5), not the base's


def test_one_task_has_no_transfer_terms():
    m = continual_metrics([[0.2], [0.7]], lower_is_better=False)
    assert m.acc == pytest.approx(0.7) and m.bwt is None and m.fwt is None and m.forgetting == []


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [[0.1, 0.2], [0.3, 0.4]], [[0.1], [0.2, 0.3]]])
def test_misshapen_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="T \\+ 1 rows"):
        continual_metrics(bad, lower_is_better=False)

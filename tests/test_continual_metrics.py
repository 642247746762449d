"""Continual-learning metrics against a hand-worked accuracy matrix (METHODS.md, "Continual learning")."""

import pytest

from tuneforge.continual.metrics import continual_metrics

# Three tasks; row 0 = base, row i = after stage i (stage i trains task i, column i - 1).
R = [
    [0.10, 0.20, 0.05],  # base
    [0.90, 0.30, 0.10],  # after stage 1: task 1 learned, task 2 a little better (forward transfer)
    [0.60, 0.80, 0.25],  # after stage 2: task 1 partly forgotten
    [0.50, 0.70, 0.95],  # after stage 3
]


def test_metrics_match_the_hand_worked_values():
    m = continual_metrics(R)
    assert m.acc == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    # BWT = ((R3,1 − R1,1) + (R3,2 − R2,2)) / 2 = ((0.50 − 0.90) + (0.70 − 0.80)) / 2
    assert m.bwt == pytest.approx(-0.25)
    # FWT = ((R1,2 − R0,2) + (R2,3 − R0,3)) / 2 = ((0.30 − 0.20) + (0.25 − 0.05)) / 2
    assert m.fwt == pytest.approx(0.15)
    # forgetting: task 1 max(0.90, 0.60) − 0.50 = 0.40; task 2 max(0.80) − 0.70 = 0.10
    assert m.forgetting == pytest.approx([0.40, 0.10])
    assert m.mean_forgetting == pytest.approx(0.25)


def test_no_forgetting_and_no_transfer():
    m = continual_metrics([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert (m.acc, m.bwt, m.fwt, m.forgetting) == (1.0, 0.0, 0.0, [0.0])


def test_forgetting_ignores_the_base_row():
    """A task the base already did well and training never reached does not count as forgotten from row 0."""
    m = continual_metrics([[0.9, 0.1], [0.5, 0.2], [0.4, 0.8]])
    assert m.forgetting == pytest.approx([0.1])  # max over rows ≥ 1 only (0.5), not the base's 0.9


def test_one_task_has_no_transfer_terms():
    m = continual_metrics([[0.2], [0.7]])
    assert m.acc == pytest.approx(0.7) and m.bwt is None and m.fwt is None and m.forgetting == []


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [[0.1, 0.2], [0.3, 0.4]], [[0.1], [0.2, 0.3]]])
def test_misshapen_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="T \\+ 1 rows"):
        continual_metrics(bad)

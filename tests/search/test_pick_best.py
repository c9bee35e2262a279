"""``--pick best``: the smallest front model within a tolerance of dense validation accuracy."""

from __future__ import annotations

import pytest

from autoprune.search.pareto import pick_best, selection_score


def _row(trial, val, size, dense_val=0.95, **extra):
    return {"trial": trial, "val_accuracy": val, "size_bytes": size, "dense_val_accuracy": dense_val, **extra}


FRONT = [_row(0, 0.97, 1000), _row(1, 0.945, 400), _row(2, 0.94, 300), _row(3, 0.80, 50)]


def test_smallest_within_one_point_of_dense():
    row, note = pick_best(FRONT, 0.01)
    assert (row["trial"], note) == (2, None)  # 0.94 is exactly one point below 0.95: it counts


def test_tolerance_is_respected():
    assert pick_best(FRONT, 0.005)[0]["trial"] == 1
    assert pick_best(FRONT, 0.0)[0]["trial"] == 0
    assert pick_best(FRONT, 0.2)[0]["trial"] == 3


def test_none_within_tolerance_takes_the_most_accurate_and_says_so():
    rows = [_row(0, 0.90, 1000, dense_val=0.99), _row(1, 0.85, 100, dense_val=0.99)]
    row, note = pick_best(rows, 0.01)
    assert row["trial"] == 0
    assert note.startswith("no Pareto trial is within 1 point(s) of dense validation accuracy 0.9900; exporting the most accurate one, trial 0 (9.00 points below dense)")


def test_tolerance_is_judged_on_accuracy_and_a_recorded_score_decides_the_rest():
    rows = [
        _row(0, 0.95, 1000, val_score=0.956, dense_val_score=0.966),
        _row(1, 0.94, 100, val_score=0.941, dense_val_score=0.966),  # 1 accuracy point below, 2.5 score points below
        _row(2, 0.94, 100, val_score=0.945, dense_val_score=0.966),  # same size, better score
    ]
    assert selection_score(rows[1]) == 0.941 and selection_score(rows[1], dense=True) == 0.966
    assert pick_best(rows, 0.01) == (rows[2], None)
    below = [_row(0, 0.90, 1000, dense_val=0.99, val_score=0.901), _row(1, 0.90, 100, dense_val=0.99, val_score=0.905)]
    row, note = pick_best(below, 0.01)
    assert row["trial"] == 1 and "trial 1 (9.00 points below dense)" in note


def test_empty_front_is_refused():
    with pytest.raises(ValueError, match="at least one row"):
        pick_best([], 0.01)

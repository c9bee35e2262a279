"""Knee and hypervolume of hand-made fronts."""

from __future__ import annotations

import pytest

from autoprune.search.pareto import hypervolume, knee_index


def _rows(points):
    """(size ratio, val accuracy) pairs → front rows."""
    return [{"trial": i, "size_ratio": s, "size_bytes": int(s * 1000), "val_accuracy": a} for i, (s, a) in enumerate(points)]


def test_knee_of_convex_front():
    # log10 size ratios -3 .. 0; accuracy saturates quickly: the bend is at 0.01 (index 1)
    rows = _rows([(0.001, 0.50), (0.01, 0.90), (0.1, 0.92), (1.0, 0.93)])
    assert knee_index(rows) == 1


def test_knee_ignores_row_order():
    rows = _rows([(1.0, 0.93), (0.1, 0.92), (0.001, 0.50), (0.01, 0.90)])
    assert rows[knee_index(rows)]["size_ratio"] == 0.01


def test_knee_of_linear_front_prefers_more_accurate_on_ties():
    # on a straight line (in log size) every distance is 0: the tie goes to the most accurate point
    rows = _rows([(0.001, 0.6), (0.01, 0.7), (0.1, 0.8), (1.0, 0.9)])
    assert knee_index(rows) == 3


def test_knee_of_two_points_is_most_accurate():
    assert knee_index(_rows([(0.1, 0.8), (0.5, 0.9)])) == 1
    assert knee_index(_rows([(0.5, 0.9), (0.1, 0.9)])) == 1  # equal accuracy: the smaller one
    assert knee_index(_rows([(0.3, 0.7)])) == 0


DENSE = {"dense_val_accuracy": 0.95, "dense_test_accuracy": 0.90}


def _hv_rows(points, **extra):
    """(size ratio, val accuracy) pairs from a dense model of validation accuracy 0.95."""
    return [{**r, **DENSE, **extra} for r in _rows(points)]


def test_hypervolume_two_points_by_hand():
    # reference: accuracy 0.95 - 0.10 = 0.85, size = dense; size axis log10(ratio / 0.01) in [0, 2]; box 0.10 x 2
    # A (ratio 0.1, acc 0.95): accuracy gain 0.10 over size [1, 2]; B (ratio 0.01, acc 0.90): gain 0.05 over [0, 2]
    # union = 0.10 * 1 + 0.05 * 1 = 0.15 → 0.15 / 0.2 = 0.75
    rows = _hv_rows([(0.1, 0.95), (0.01, 0.90)])
    assert hypervolume(rows) == pytest.approx(0.75)
    assert hypervolume(rows[:1]) == pytest.approx(0.5)
    assert hypervolume(rows[1:]) == pytest.approx(0.5)


def test_hypervolume_ignores_dominated_out_of_box_points_and_floors_size():
    base = _hv_rows([(0.1, 0.95), (0.01, 0.90)])
    # dominated; bigger than dense; at dense size exactly; below the reference accuracy; smaller than 1 % (counts as 1 %)
    more = base + _hv_rows([(0.2, 0.9), (1.5, 0.99), (1.0, 0.99), (0.02, 0.85), (0.001, 0.90)])
    assert hypervolume(more) == pytest.approx(0.75)
    assert hypervolume([]) == 0.0
    # above dense accuracy counts beyond 1.0: acc 1.0 at 1 % → gain 0.15 over the whole size axis
    assert hypervolume(_hv_rows([(0.005, 1.0)])) == pytest.approx(1.5)


def test_hypervolume_separates_a_small_front_from_a_large_one():
    # the old reference (accuracy 0, size 1) gave these 0.95 * 0.5 vs 0.95 * 0.98: 0.475 vs 0.93 at most 2x apart, and
    # real fronts all scored 0.95-0.97; on a log size scale the front that reaches 2 % is worth 5.6x the one that stops at 50 %
    stop_at_half = hypervolume(_hv_rows([(0.5, 0.95)]))
    reach_2pc = hypervolume(_hv_rows([(0.5, 0.95), (0.02, 0.95)]))
    assert stop_at_half == pytest.approx((2 - 1.69897) / 2, abs=1e-4)
    assert reach_2pc == pytest.approx((2 - 0.30103) / 2, abs=1e-4)
    assert reach_2pc / stop_at_half > 5


def test_hypervolume_test_accuracy_uses_the_dense_test_accuracy():
    rows = _hv_rows([(0.1, 0.95)], test_accuracy=0.85)
    # test reference 0.90 - 0.10 = 0.80: gain 0.05 over size [1, 2] → 0.05 / 0.2
    assert hypervolume(rows, accuracy_key="test_accuracy") == pytest.approx(0.25)
    assert hypervolume(_rows([(0.1, 0.95)]), dense_accuracy=0.95) == pytest.approx(0.5)  # an explicit reference


def test_hypervolume_refuses_rows_without_or_with_mixed_references():
    with pytest.raises(ValueError, match="dense_val_accuracy"):
        hypervolume(_rows([(0.1, 0.9)]))
    mixed = _hv_rows([(0.1, 0.95)]) + [{**_rows([(0.2, 0.9)])[0], "dense_val_accuracy": 0.9}]
    with pytest.raises(ValueError, match="different dense models"):
        hypervolume(mixed)


def test_hypervolume_with_latency():
    rows = _hv_rows([(0.1, 0.95)], latency_ms=0.5)
    # box: gain 0.10 x size axis 1 x latency (1.5 - 0.5 / 1.0), over 0.10 x 2 x 1.5
    assert hypervolume(rows, with_latency=True, dense_latency=1.0) == pytest.approx(0.1 * 1.0 * 1.0 / 0.3)

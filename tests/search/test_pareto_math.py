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


def test_hypervolume_two_points_by_hand():
    # points (loss = -acc, size ratio), reference (0, 1):
    # A (acc 0.9, ratio 0.5), B (acc 0.6, ratio 0.2)
    # area = 0.9 * (1 - 0.5) + 0.6 * (0.5 - 0.2) = 0.45 + 0.18 = 0.63
    rows = _rows([(0.5, 0.9), (0.2, 0.6)])
    assert hypervolume(rows) == pytest.approx(0.63)


def test_hypervolume_ignores_dominated_and_out_of_box_points():
    base = _rows([(0.5, 0.9), (0.2, 0.6)])
    more = base + _rows([(0.6, 0.5), (1.5, 0.99), (0.1, 0.0)])  # dominated, bigger than dense, zero accuracy
    assert hypervolume(more) == pytest.approx(0.63)
    assert hypervolume([]) == 0.0


def test_hypervolume_single_point_and_test_accuracy_key():
    rows = [{"trial": 0, "size_ratio": 0.25, "val_accuracy": 0.8, "test_accuracy": 0.4}]
    assert hypervolume(rows) == pytest.approx(0.8 * 0.75)
    assert hypervolume(rows, accuracy_key="test_accuracy") == pytest.approx(0.4 * 0.75)


def test_hypervolume_with_latency():
    rows = [{"trial": 0, "size_ratio": 0.5, "val_accuracy": 0.8, "latency_ms": 0.5}]
    # box: accuracy 0.8 x size (1 - 0.5) x latency ratio (1.5 - 0.5 / 1.0)
    assert hypervolume(rows, with_latency=True, dense_latency=1.0) == pytest.approx(0.8 * 0.5 * 1.0)

"""The Pareto front of a study: rows, hypervolume, picks (max-accuracy, smallest, knee).

Non-dominated sorting comes from Optuna (``study.best_trials``, which also respects
constraints: only feasible trials can be on the front). Hypervolume uses Optuna's WFG
implementation (``optuna._hypervolume.compute_hypervolume``, the one behind
``optuna.visualization.plot_hypervolume_history``; Optuna has no public function for it).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["trial_row", "front_rows", "hypervolume", "knee_index", "STATE_NAMES"]

#: our names for Optuna trial states (Optuna calls early stopping "pruning"; we never do)
STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "stopped_early", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_state(trial: Any) -> str:
    """complete | infeasible | stopped_early | failed | running."""
    state = STATE_NAMES.get(trial.state.name, trial.state.name.lower())
    if state == "complete":
        return trial.user_attrs.get("autoprune.state", "complete")
    return state


def trial_row(trial: Any) -> Dict[str, Any]:
    """A flat, printable summary of one Optuna trial written by autoprune."""
    result = trial.user_attrs.get("autoprune.result") or {}
    policy = trial.user_attrs.get("autoprune.policy") or {}
    dense = result.get("dense") or {}
    size = result.get("size_bytes")
    return {
        "trial": trial.number,
        "state": trial_state(trial),
        "val_accuracy": result.get("val_accuracy"),
        "test_accuracy": result.get("test_accuracy"),
        "size_bytes": size,
        "size_ratio": (size / dense["size_bytes"]) if size and dense.get("size_bytes") else None,
        "latency_ms": result.get("latency_ms"),
        "macs": result.get("macs"),
        "hidden_sizes": result.get("hidden_sizes"),
        "method": policy.get("method"),
        "granularity": policy.get("granularity"),
        "schedule": (policy.get("schedule") or {}).get("kind"),
        "policy": policy,
        "checkpoint": result.get("checkpoint"),
        "error": trial.user_attrs.get("autoprune.error"),
        "reason": result.get("reason"),
    }


def front_rows(study: Any) -> List[Dict[str, Any]]:
    """Rows of the study's Pareto front (feasible trials only), most accurate first.

    Trials with exactly the same objective values (Optuna keeps them all: neither dominates)
    appear once, as the earliest trial.
    """
    trials = sorted(
        (t for t in study.best_trials if t.user_attrs.get("autoprune.state", "complete") == "complete"), key=lambda t: t.number
    )
    seen, rows = set(), []
    for t in trials:
        key = tuple(t.values)
        if key not in seen:
            seen.add(key)
            rows.append(trial_row(t))
    return sorted(rows, key=lambda r: (-(r["val_accuracy"] or 0.0), r["size_bytes"] or 0))


def _loss_points(rows: Sequence[Dict[str, Any]], with_latency: bool, dense_latency: Optional[float]) -> List[List[float]]:
    pts = []
    for r in rows:
        if r["val_accuracy"] is None or r["size_ratio"] is None:
            continue
        p = [-float(r["val_accuracy"]), float(r["size_ratio"])]
        if with_latency:
            if not r.get("latency_ms") or not dense_latency:
                continue
            p.append(float(r["latency_ms"]) / dense_latency)
        pts.append(p)
    return pts


def hypervolume(rows: Sequence[Dict[str, Any]], accuracy_key: str = "val_accuracy", with_latency: bool = False, dense_latency: Optional[float] = None) -> float:
    """Hypervolume of (accuracy, size ratio[, latency ratio]) points, reference (0, 1[, 1.5]).

    Accuracy is maximised and sizes are ratios to the dense model, so the value lies in
    [0, 1] for two objectives: 1 would be a perfect model of zero size. Points outside
    the reference box count nothing.
    """
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    use = [{**r, "val_accuracy": r.get(accuracy_key)} for r in rows]
    pts = _loss_points(use, with_latency, dense_latency)
    ref = [0.0, 1.0] + ([1.5] if with_latency else [])
    pts = [p for p in pts if all(a < b for a, b in zip(p, ref))]
    if not pts:
        return 0.0
    return float(compute_hypervolume(np.asarray(pts, dtype=float), np.asarray(ref, dtype=float)))


def knee_index(rows: Sequence[Dict[str, Any]]) -> int:
    """The knee of a 2-D front: the point farthest from the straight line joining its two ends.

    Points are placed at (log10 size ratio, validation accuracy), both scaled to [0, 1]
    over the front; the knee is where giving up more size stops buying accuracy (the
    "kneedle" rule of Satopää et al. 2011). With fewer than three points, the most
    accurate one.
    """
    pts = [(math.log10(r["size_ratio"]), r["val_accuracy"]) for r in rows]
    if len(pts) < 3:
        return max(range(len(pts)), key=lambda i: (pts[i][1], -pts[i][0]))
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    xr = (max(xs) - min(xs)) or 1.0
    yr = (max(ys) - min(ys)) or 1.0
    norm = [((x - min(xs)) / xr, (y - min(ys)) / yr) for x, y in pts]
    order = sorted(range(len(norm)), key=lambda i: norm[i][0])
    (x0, y0), (x1, y1) = norm[order[0]], norm[order[-1]]
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0

    def dist(i: int) -> float:
        x, y = norm[i]
        return ((y - y0) * dx - (x - x0) * dy) / length  # > 0: above the chord from smallest to largest

    # rounded: on a straight front float noise must not decide; ties go to the more accurate point
    return max(range(len(norm)), key=lambda i: (round(dist(i), 9), norm[i][1]))

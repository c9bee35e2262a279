"""The Pareto front of a study: rows, hypervolume, picks (best, max-accuracy, smallest, knee).

Non-dominated sorting comes from Optuna (``study.best_trials``, which also respects
constraints: only feasible trials can be on the front). Hypervolume uses Optuna's WFG
implementation (``optuna._hypervolume.compute_hypervolume``, the one behind
``optuna.visualization.plot_hypervolume_history``; Optuna has no public function for it).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from autoprune.errors import ConfigError, TrialError
from autoprune.search import attrs

__all__ = ["feasible", "trial_state", "trial_row", "front_rows", "hypervolume", "knee_index", "pick_best", "select_trial", "selection_score", "STATE_NAMES", "HYPERVOLUME_DESCRIPTION", "HV_ACCURACY_MARGIN", "HV_SIZE_FLOOR"]

log = logging.getLogger(__name__)

#: our names for Optuna trial states (Optuna calls early stopping "pruning"; we never do)
STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "stopped_early", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_state(trial: Any) -> str:
    """complete | infeasible | stopped_early | failed | running."""
    state = STATE_NAMES.get(trial.state.name, trial.state.name.lower())
    if state == "complete":
        return trial.user_attrs.get(attrs.STATE, "complete")
    return state


def feasible(trial: Any) -> bool:
    """Within every budget: each constraint (value minus budget, see :func:`autoprune.trial.result.budget_excess`) at most 0."""
    return all(v <= 0 for v in (trial.constraints or {}).values())


def trial_row(trial: Any) -> Dict[str, Any]:
    """A flat, printable summary of one Optuna trial written by autoprune."""
    result = trial.user_attrs.get(attrs.RESULT) or {}
    policy = trial.user_attrs.get(attrs.POLICY) or {}
    dense = result.get("dense") or {}
    size = result.get("size_bytes")
    return {
        "trial": trial.number,
        "state": trial_state(trial),
        "val_accuracy": result.get("val_accuracy"),
        "test_accuracy": result.get("test_accuracy"),
        "size_bytes": size,
        "size_ratio": (size / dense["size_bytes"]) if size and dense.get("size_bytes") else None,
        "dense_test_accuracy": dense.get("test_accuracy"),  # with dense_val_accuracy: the hypervolume's reference point
        "latency_ms": result.get("latency_ms"),
        "macs": result.get("macs"),
        "val_score": result.get("val_score"),  # a less noisy validation score, where the search records one
        "n_val": result.get("n_val"),  # the validation samples val_accuracy is measured on (None: recorded before it was)
        "dense_val_accuracy": dense.get("val_accuracy"),
        "dense_val_score": dense.get("val_score"),
        "hidden_sizes": result.get("hidden_sizes"),
        "precision": result.get("precision") or "float32",  # results from before int8 have no key: float32
        "method": policy.get("method"),
        "granularity": policy.get("granularity"),
        "schedule": (policy.get("schedule") or {}).get("kind"),
        "policy": policy,
        "checkpoint": result.get("checkpoint"),
        "error": trial.user_attrs.get(attrs.ERROR),
        "reason": result.get("reason"),
    }


def front_rows(study: Any) -> List[Dict[str, Any]]:
    """Rows of the study's Pareto front (feasible trials only), most accurate first.

    Trials with exactly the same objective values (Optuna keeps them all: neither dominates)
    appear once, as the earliest trial. The search maximizes ``val_score`` (validation accuracy
    plus a loss tie-break smaller than one sequence), so Optuna's front can hold two trials of
    the same validation accuracy where one is no smaller and no faster: shown as accuracy and
    size, the second is dominated, and it is left out (the tie-break still orders the pick).
    """
    trials = sorted(
        (t for t in study.best_trials if t.user_attrs.get(attrs.STATE, "complete") == "complete"), key=lambda t: t.number
    )
    seen, kept = set(), []
    for t in trials:
        key = tuple(t.values)
        if key not in seen:
            seen.add(key)
            kept.append(t)
    minimized = [i for i, d in enumerate(study.directions) if d == optuna.study.StudyDirection.MINIMIZE]
    rows = [trial_row(t) for t in kept]

    def shown_dominated(j: int) -> bool:
        t = kept[j]
        return any(
            k != j
            and rows[k]["val_accuracy"] == rows[j]["val_accuracy"]
            and all(o.values[i] <= t.values[i] for i in minimized)
            and any(o.values[i] < t.values[i] for i in minimized)
            for k, o in enumerate(kept)
        )

    rows = [r for j, r in enumerate(rows) if not shown_dominated(j)]
    return sorted(rows, key=lambda r: (-(r["val_accuracy"] or 0.0), r["size_bytes"] or 0))


#: The hypervolume's reference point and scale, in one place (``autoprune search``'s MLflow
#: ``hypervolume`` metric, the benchmarks and the README all use these).
HV_ACCURACY_MARGIN = 0.10  # accuracy this far below dense counts nothing
HV_SIZE_FLOOR = 0.01  # size ratios below 1 % of dense count as 1 %
HV_LATENCY_REF = 1.5  # latency ratio counting nothing (third objective only)
HYPERVOLUME_DESCRIPTION = (
    f"hypervolume of (accuracy, log10 size ratio) points: reference point accuracy = dense - {HV_ACCURACY_MARGIN:g}, "
    f"size = dense; sizes below {HV_SIZE_FLOOR:.0%} of dense count as {HV_SIZE_FLOOR:.0%}; divided by the box "
    f"{HV_ACCURACY_MARGIN:g} x log10(1/{HV_SIZE_FLOOR:g}), so 1.0 = dense accuracy at {HV_SIZE_FLOOR:.0%} of dense size "
    f"(more when accuracy beats dense); with latency a third axis, latency ratio up to {HV_LATENCY_REF:g}"
)


def _loss_points(
    rows: Sequence[Dict[str, Any]], accuracy_key: str, ref_accuracy: float, with_latency: bool, dense_latency: Optional[float]
) -> List[List[float]]:
    pts = []
    for r in rows:
        acc, ratio = r.get(accuracy_key), r.get("size_ratio")
        if acc is None or ratio is None:
            continue
        p = [ref_accuracy - float(acc), math.log10(max(float(ratio), HV_SIZE_FLOOR)) - math.log10(HV_SIZE_FLOOR)]
        if with_latency:
            if not r.get("latency_ms") or not dense_latency:
                continue
            p.append(float(r["latency_ms"]) / dense_latency)
        pts.append(p)
    return pts


def hypervolume(
    rows: Sequence[Dict[str, Any]],
    accuracy_key: str = "val_accuracy",
    with_latency: bool = False,
    dense_latency: Optional[float] = None,
    dense_accuracy: Optional[float] = None,
) -> float:
    """Normalised hypervolume of (accuracy, size ratio[, latency ratio]) points (see :data:`HYPERVOLUME_DESCRIPTION`).

    The reference point is the dense model's accuracy minus :data:`HV_ACCURACY_MARGIN` and
    the dense size; size counts on a log scale down to :data:`HV_SIZE_FLOOR` of dense, so a
    front of models at 10 %, 5 % and 2 % of dense is told apart from one that stops at
    50 % (on a linear size scale from 0 and accuracy from 0, every reasonable front scored
    0.95-0.97). ``dense_accuracy`` defaults to the rows' ``dense_<accuracy_key>`` (set by
    :func:`trial_row`); points at or below the reference accuracy or above dense size count
    nothing. 1.0 means dense accuracy at 1 % of dense size.
    """
    if dense_accuracy is None:
        refs = {r.get(f"dense_{accuracy_key}") for r in rows} - {None}
        if not refs:
            if not rows:
                return 0.0
            raise ValueError(f"hypervolume needs the dense model's {accuracy_key}: pass dense_accuracy or rows with dense_{accuracy_key}")
        if len(refs) > 1:
            raise ValueError(f"rows come from different dense models ({sorted(refs)}): one hypervolume needs one reference")
        dense_accuracy = refs.pop()
    ref_accuracy = float(dense_accuracy) - HV_ACCURACY_MARGIN
    pts = _loss_points(rows, accuracy_key, ref_accuracy, with_latency, dense_latency)
    ref = [0.0, -math.log10(HV_SIZE_FLOOR)] + ([HV_LATENCY_REF] if with_latency else [])
    pts = [p for p in pts if all(a < b for a, b in zip(p, ref))]
    if not pts:
        return 0.0
    # shift accuracy so that the reference sits at 0 and every point is below it (WFG wants ref > points)
    box = HV_ACCURACY_MARGIN * ref[1] * (HV_LATENCY_REF if with_latency else 1.0)
    return float(compute_hypervolume(np.asarray(pts, dtype=float), np.asarray(ref, dtype=float))) / box


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


def selection_score(row: Dict[str, Any], dense: bool = False) -> Optional[float]:
    """The validation number choices use: the recorded less noisy ``val_score`` when present, else validation accuracy."""
    prefix = "dense_" if dense else ""
    score = row.get(f"{prefix}val_score")
    return score if score is not None else row.get(f"{prefix}val_accuracy")


def pick_best(rows: Sequence[Dict[str, Any]], tolerance: float = 0.01) -> tuple[Dict[str, Any], Optional[str]]:
    """What users mean by "the best pruned model": the smallest front model that keeps accuracy.

    The smallest row whose validation accuracy is at most ``tolerance`` (a fraction: 0.01
    is one accuracy point) below the dense model's (ties: the higher :func:`selection_score`);
    when none qualifies, the row with the highest :func:`selection_score` (the recorded
    less noisy ``val_score`` where there is one) and a message saying so. The tolerance is
    judged on accuracy, the number people compare, so the pick is never more than
    ``tolerance`` below dense however a score breaks ties.

    Args:
        rows: front rows (each carrying the dense model's validation numbers).
        tolerance: allowed drop below dense, as a fraction of 1.

    Returns:
        ``(row, message)``; ``message`` is None when a row met the tolerance.
    """
    if not rows:
        raise ValueError("pick_best needs at least one row")
    most_accurate = max(rows, key=lambda r: (selection_score(r), -r["size_bytes"]))
    dense = next((r["dense_val_accuracy"] for r in rows if r.get("dense_val_accuracy") is not None), None)
    if dense is None:  # no dense reference recorded: nothing to keep, take the most accurate
        return most_accurate, "no dense validation accuracy is recorded for this study; exporting the most accurate Pareto trial"
    floor = dense - tolerance - 1e-9  # a trial exactly at the tolerance meets it
    keep = [r for r in rows if r["val_accuracy"] >= floor]
    if keep:
        return min(keep, key=lambda r: (r["size_bytes"], -selection_score(r))), None
    gap = (dense - most_accurate["val_accuracy"]) * 100
    return most_accurate, (
        f"no Pareto trial is within {tolerance * 100:g} point(s) of dense validation accuracy {dense:.4f}; "
        f"exporting the most accurate one, trial {most_accurate['trial']} ({gap:.2f} points below dense); raise --tolerance to trade accuracy for size"
    )


def _nearest_front(rows: List[Dict[str, Any]], number: int, k: int = 3) -> str:
    near = sorted(rows, key=lambda r: abs(r["trial"] - number))[:k]
    return ", ".join(f"{r['trial']} (val {r['val_accuracy']:.4f}, {r['size_bytes']:,} B)" for r in near) or "none yet"


def select_trial(
    study: Any,
    trial: Optional[int] = None,
    pick: Optional[str] = None,
    max_size_bytes: Optional[int] = None,
    max_latency_ms: Optional[float] = None,
    min_accuracy: Optional[float] = None,
    tolerance: float = 0.01,
) -> Dict[str, Any]:
    """The row of the trial to export: ``trial`` by number, or ``pick`` among the Pareto trials meeting the limits.

    Picks use validation accuracy only: ``best`` (the default: the smallest within ``tolerance``,
    a fraction, of dense validation accuracy; see :func:`autoprune.search.pareto.pick_best`),
    ``max-accuracy`` (ties: smaller), ``smallest``
    (ties: more accurate) or ``knee`` (see :func:`autoprune.search.pareto.knee_index`).

    Raises:
        TrialError: unknown trial; a trial that is not complete (says which state and lists the
            nearest Pareto trials); no Pareto trial meets the limits (names the closest and by how much it misses).
    """
    front = front_rows(study)
    if trial is not None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if trial not in trials:
            raise TrialError(f"study '{study.study_name}' has no trial {trial} (trials 0-{max(trials) if trials else -1}); Pareto trials: {_nearest_front(front, trial, 10)}")
        row = trial_row(trials[trial])
        if row["state"] != "complete":
            why = row.get("reason") or row.get("error") or ""
            raise TrialError(
                f"trial {trial} of study '{study.study_name}' is {row['state'].replace('_', ' ')}"
                + (f" ({why})" if why else "")
                + f" and has no model to export; nearest Pareto trials: {_nearest_front(front, trial)}"
            )
        return row
    if not front:
        over = [t.number for t in study.get_trials(deepcopy=False) if trial_state(t) == "complete" and not feasible(t)]
        if over:
            raise TrialError(
                f"study '{study.study_name}' has no trial within its budgets: the {len(over)} trained trial(s) ({', '.join(map(str, over[:8]))}) are over "
                f"max_size_bytes / max_latency_ms; export one of them with --trial N, or search again with a budget they can meet"
            )
        raise TrialError(f"study '{study.study_name}' has no complete feasible trial yet; run `autoprune search` first")
    limits = []
    if max_size_bytes is not None:
        limits.append(("size_bytes", max_size_bytes, lambda r: r["size_bytes"] <= max_size_bytes, lambda r: f"{r['size_bytes'] - max_size_bytes:,} B over --max-size-bytes"))
    if max_latency_ms is not None:
        limits.append(("latency_ms", max_latency_ms, lambda r: r["latency_ms"] is not None and r["latency_ms"] <= max_latency_ms, lambda r: f"{(r['latency_ms'] or 0) - max_latency_ms:.3f} ms over --max-latency-ms"))
    if min_accuracy is not None:
        limits.append(("val_accuracy", min_accuracy, lambda r: r["val_accuracy"] >= min_accuracy, lambda r: f"{min_accuracy - r['val_accuracy']:.4f} below --min-accuracy"))
    ok = [r for r in front if all(check(r) for _, _, check, _ in limits)]
    if not ok:
        def miss(r: Dict[str, Any]) -> float:
            total = 0.0
            for key, bound, check, _ in limits:
                if not check(r):
                    value = r[key] if r[key] is not None else float("inf")
                    total += abs(value - bound) / max(abs(bound), 1e-12)
            return total

        closest = min(front, key=miss)
        reasons = "; ".join(text(closest) for _, _, check, text in limits if not check(closest))
        raise TrialError(f"no Pareto trial of study '{study.study_name}' meets the limits; the closest is trial {closest['trial']}: {reasons}")
    pick = pick or "best"
    if pick == "best":
        chosen, note = pick_best(ok, tolerance)
        if note:
            log.warning("%s", note)
        return chosen
    if pick == "max-accuracy":
        return max(ok, key=lambda r: (r["val_accuracy"], -r["size_bytes"]))
    if pick == "smallest":
        return min(ok, key=lambda r: (r["size_bytes"], -r["val_accuracy"]))
    if pick == "knee":
        return ok[knee_index(ok)]
    raise ConfigError(f"--pick must be one of best, max-accuracy, smallest, knee; got {pick!r}")

"""The study's front where MLflow shows it: experiment kind, a shared runs-table view, the link, a small plot.

MLflow 3 opens an experiment in its GenAI view unless the experiment says it is model
training (experiment tag ``mlflow.experimentKind = custom_model_development``, read by
the UI) or the URL carries ``workflowType=machine_learning``. A *shared view* is an
experiment tag ``mlflow.sharedViewState.<key>`` holding the runs table's state as JSON
(the UI's "Share" button writes the same); the link names it with
``viewStateShareKey=<key>``. Ours filters to the front (``tags.autoprune.pareto``), sorts
by size and shows validation/test accuracy, size, compression and latency.

The interactive front plot is a few kilobytes of SVG with native hover titles and a
little inline script: MLflow shows HTML artifacts in a sandboxed iframe, where a
multi-megabyte plotly page rendered blank; SVG draws with or without the script and
needs nothing from the network.
"""

from __future__ import annotations

import html
import json
import logging
import math
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

import requests
from mlflow import MlflowClient

from autoprune.errors import TrialError
from autoprune.tracking.front_page import FRONT_PAGE
from autoprune.tracking.tags import PARENT_TAG, PARETO_TAG
from autoprune.services.urls import shown

log = logging.getLogger(__name__)

__all__ = [
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING",
    "FRONT_VIEW_KEY",
    "FRONT_COLUMNS",
    "front_view_state",
    "prepare_experiment",
    "front_url",
    "front_plot_html",
    "write_front_plot",
    "study_link",
    "study_links",
    "plot_url",
    "open_when_ready",
]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
FRONT_VIEW_KEY = "autoprune-front"
FRONT_FILTER = f"tags.`{PARETO_TAG}` = 'true'"
_FRONT_SECTION = "autoprune-front-section"
#: runs-table columns of the front view (MLflow's canonical column keys)
FRONT_COLUMNS = [f"metrics.`{m}`" for m in ("val_accuracy", "test_accuracy", "size_bytes", "compression_ratio", "latency_ms")]


def front_view_state() -> Dict[str, Any]:
    """The runs table as the front link shows it: front trials only, smallest first, the metrics that matter."""
    return {
        "searchFilter": FRONT_FILTER,
        "orderByKey": "metrics.`size_bytes`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": FRONT_COLUMNS,
        "runListHidden": False,
        "viewMaximized": False,
        # the Chart view (second icon above the table) opens on the front as a scatter of accuracy against size
        "compareRunSections": [{"uuid": _FRONT_SECTION, "name": "Pareto front", "display": True, "isReordered": False, "deleted": False, "isGenerated": False}],
        "compareRunCharts": [
            {
                "uuid": _FRONT_SECTION + "-scatter",
                "type": "SCATTER",
                "runsCountToCompare": 100,
                "metricSectionId": _FRONT_SECTION,
                "deleted": False,
                "isGenerated": False,
                "displayName": "Pareto front: validation accuracy vs size (bytes)",
                "xaxis": {"key": "size_bytes", "type": "METRIC"},
                "yaxis": {"key": "val_accuracy", "type": "METRIC"},
            }
        ],
    }


def prepare_experiment(client: Any, experiment_id: str, strict: bool = True) -> bool:
    """Mark the experiment as model training and store the front view (idempotent).

    Returns True when both tags are set; with ``strict=False`` a store that refuses them
    (say, a server where this user may not edit the experiment) gets a warning, not an error:
    the search still records everything else.
    """
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + FRONT_VIEW_KEY, json.dumps(front_view_state()))
        return True
    except Exception as err:  # MLflow raises several kinds for a refused write
        if strict:
            raise
        log.warning("could not tag MLflow experiment %s for the model-training view: %s", experiment_id, str(err).splitlines()[0][:200])
        return False


def front_url(base_url: str, experiment_id: str, shared_view: bool = True) -> str:
    """The link to the study's front in the MLflow UI's model-training runs table.

    Args:
        base_url: the UI's address, e.g. ``http://127.0.0.1:5000``.
        experiment_id: the study's experiment.
        shared_view: name the stored front view (columns, sort, filter); False puts the
            filter and sort in the URL instead (for a store we may not write to).
    """
    query = "workflowType=machine_learning"
    if shared_view:
        query += f"&viewStateShareKey={FRONT_VIEW_KEY}"
    else:
        query += f"&searchFilter={quote(FRONT_FILTER)}&orderByKey={quote('metrics.`size_bytes`')}&orderByAsc=true"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


# ---------------------------------------------------------------------------- plot

_W, _H, _L, _R, _T, _B = 640, 380, 64, 16, 28, 48


def _ticks(lo: float, hi: float) -> List[float]:
    cands = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    out = [c for c in cands if lo <= c <= hi]
    return out or [lo, hi]


def front_plot_html(all_rows: Sequence[Dict[str, Any]], front: Sequence[Dict[str, Any]], dense: Dict[str, Any], title: str = "") -> str:
    """A self-contained HTML page: validation accuracy against size (% of dense, log scale).

    Grey points are every complete trial, red ones the front (joined), the dashed line
    the dense model. Hovering a point shows its trial, accuracies, size and latency
    (SVG ``<title>``, so it works without scripts); clicking pins the details below.
    """
    pts = [r for r in all_rows if r.get("size_ratio") and r.get("val_accuracy") is not None]
    xs = [math.log10(max(r["size_ratio"] * 100, 1e-3)) for r in pts] + [2.0]
    ys = [r["val_accuracy"] for r in pts] + [dense.get("val_accuracy") or 0.0]
    x0, x1 = min(xs) - 0.1, max(xs) + 0.1
    y0, y1 = min(ys) - 0.02, min(1.0, max(ys) + 0.02)
    if y1 - y0 < 0.05:
        y0 = y1 - 0.05

    def sx(ratio: float) -> float:
        return _L + (math.log10(max(ratio * 100, 1e-3)) - x0) / (x1 - x0) * (_W - _L - _R)

    def sy(acc: float) -> float:
        return _T + (y1 - acc) / (y1 - y0) * (_H - _T - _B)

    def label(r: Dict[str, Any]) -> str:
        lat = f", {r['latency_ms']:.3f} ms" if r.get("latency_ms") is not None else ""
        test = f", test {r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else ""
        return f"trial {r['trial']}: val {r['val_accuracy']:.4f}{test}, {r['size_bytes']:,} B ({r['size_ratio'] * 100:.2f} % of dense){lat}, hidden {r.get('hidden_sizes')}"

    on_front = {r["trial"] for r in front}
    parts: List[str] = []
    for v in _ticks(10 ** x0, 10 ** x1):
        x = sx(v / 100)
        parts.append(f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_H - _B}" class="grid"/><text x="{x:.1f}" y="{_H - _B + 16}" text-anchor="middle">{v:g}</text>')
    steps = 5
    for i in range(steps + 1):
        acc = y0 + (y1 - y0) * i / steps
        y = sy(acc)
        parts.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" class="grid"/><text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{acc:.3f}</text>')
    if dense.get("val_accuracy") is not None:
        y = sy(dense["val_accuracy"])
        parts.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" class="dense"/><text x="{_W - _R - 4}" y="{y - 5:.1f}" text-anchor="end" class="dense-label">dense {dense["val_accuracy"]:.4f}</text>')
    fr = sorted(front, key=lambda r: r["size_ratio"])
    if len(fr) > 1:
        path = " ".join(f"{sx(r['size_ratio']):.1f},{sy(r['val_accuracy']):.1f}" for r in fr)
        parts.append(f'<polyline points="{path}" class="front-line"/>')
    for r in sorted(pts, key=lambda r: r["trial"] in on_front):
        cls = "front" if r["trial"] in on_front else "trial"
        text = html.escape(label(r))
        parts.append(
            f'<circle cx="{sx(r["size_ratio"]):.1f}" cy="{sy(r["val_accuracy"]):.1f}" r="{5 if cls == "front" else 3.5}" class="{cls}" '
            f'data-trial="{r["trial"]}" data-label="{text}"><title>{text}</title></circle>'
        )
    axes = (
        f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" class="axis"/><line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" class="axis"/>'
        f'<text x="{(_L + _W - _R) / 2}" y="{_H - 10}" text-anchor="middle">size, % of dense (log scale)</text>'
        f'<text transform="rotate(-90)" x="{-(_T + _H - _B) / 2}" y="16" text-anchor="middle">validation accuracy</text>'
    )
    rows_html = "".join(
        f"<tr><td>{r['trial']}</td><td>{r['val_accuracy']:.4f}</td><td>{'' if r.get('test_accuracy') is None else format(r['test_accuracy'], '.4f')}</td>"
        f"<td>{r['size_bytes']:,}</td><td>{r['size_ratio'] * 100:.2f} %</td><td>{'' if r.get('latency_ms') is None else format(r['latency_ms'], '.3f')}</td></tr>"
        for r in sorted(front, key=lambda r: r["size_ratio"])
    )
    return FRONT_PAGE.substitute(
        heading=html.escape(title or "Pareto front"), n_front=len(front), n_points=len(pts), width=_W, height=_H, svg=axes + "".join(parts), rows=rows_html
    )


def write_front_plot(path: Any, all_rows: Sequence[Dict[str, Any]], front: Sequence[Dict[str, Any]], dense: Dict[str, Any], title: str = "") -> Optional[str]:
    """Write :func:`front_plot_html` to ``path``; returns the path as a string."""
    Path(path).write_text(front_plot_html(all_rows, front, dense, title))
    return str(path)


def study_links(study: str, tracking_uri: str, base_url: str) -> Dict[str, str]:
    """Links to a searched study's front (``front``: the runs table) and plot (``plot``, when a search run exists).

    Prepares the experiment for studies searched before these tags existed.

    Raises:
        TrialError: the store has no experiment for the study.
    """
    links = {"front": study_link(study, tracking_uri, base_url)}
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(study)
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
    if parents:
        links["plot"] = plot_url(base_url, exp.experiment_id, parents[0].info.run_id)
    return links


def plot_url(base_url: str, experiment_id: str, parent_run_id: str) -> str:
    """The search run's interactive front plot in MLflow's artifact viewer (model-training view)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{parent_run_id}/artifacts/pareto_front.html?workflowType=machine_learning"


def study_link(study: str, tracking_uri: str, base_url: str) -> str:
    """The front link of a searched study (prepares the experiment for studies searched before this existed).

    Raises:
        TrialError: the store has no experiment for the study.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise TrialError(f"the MLflow store {shown(tracking_uri)} has no experiment '{study}'; run `autoprune search` for it first")
    shared = True
    try:
        prepare_experiment(client, exp.experiment_id)
    except Exception as err:  # a read-only store: the filter and sort go in the URL instead
        log.warning("could not tag experiment '%s' (%s); the link carries the filter instead", study, err)
        shared = False
    return front_url(base_url, exp.experiment_id, shared_view=shared)


def open_when_ready(url: str, base_url: str, timeout_s: float = 60.0) -> Any:
    """Open ``url`` in the default browser once ``base_url`` answers (a daemon thread; returns it)."""
    def wait_and_open() -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if requests.get(base_url.rstrip("/") + "/health", timeout=2).status_code < 500:
                    webbrowser.open(url)
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=wait_and_open, name="autoprune-open-browser", daemon=True)
    thread.start()
    return thread

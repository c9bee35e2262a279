"""Recording a search's results: the MLflow sync of finished trials (one nested run each,
Pareto tags, hypervolume), the front artifacts and plots, and the summary.

Only the search's driver process records, whatever the runner: trials write to the Optuna
storage, and ``Recorder.sync`` copies what is new to MLflow, so each run has one writer.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from autoprune.config import StudyConfig
from autoprune.search import attrs
from autoprune.search.claim import counts_toward_total
from autoprune.search.faults import environment_failure, first_line
from autoprune.search.pareto import HYPERVOLUME_DESCRIPTION, feasible, front_rows, hypervolume, trial_row, trial_state
from autoprune.tracking.tracker import Tracker
from autoprune.tracking.ui import write_front_plot
from autoprune.services.urls import shown

__all__ = ["Recorder", "SearchSummary", "write_front_artifacts", "find_trial_checkpoint"]

log = logging.getLogger(__name__)

#: artifact folder of a trial's nested run holding its weights (tracking servers only)
TRIAL_ARTIFACTS = "trial"


def find_trial_checkpoint(study: str, number: int, recorded: Optional[str], runs_dir: str, meta: Dict[str, Any]) -> Optional[str]:
    """Where a trial's weights are: the recorded path (absolute; a shared runs folder on a cluster),
    the same trial under ``runs_dir`` (a runs folder mounted or copied elsewhere), or, when the search
    recorded to an MLflow server, its nested run's ``trial/`` artifacts, downloaded under ``runs_dir``."""
    local = Path(runs_dir) / study / "trials" / str(number) / "model.pt"
    for path in (recorded, local):
        if path and Path(path).is_file():
            return str(path)
    uri = meta.get("tracking_uri") or ""
    if not uri.startswith(("http://", "https://")) or not meta.get("mlflow_experiment_id"):
        return None
    import shutil
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs([meta["mlflow_experiment_id"]], filter_string=f"tags.`autoprune.trial` = '{number}'", max_results=1)
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path=TRIAL_ARTIFACTS, dst_path=tmp, tracking_uri=uri)
        except Exception as err:
            log.warning("trial %d: no weights in the MLflow run %s (%s)", number, runs[0].info.run_id, str(err).splitlines()[0][:200])
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        for f in Path(got).iterdir():
            shutil.copy2(f, local.parent / f.name)
    return str(local) if local.is_file() else None


@dataclass
class SearchSummary:
    study: str
    n_trials: int
    n_complete: int
    n_infeasible: int
    n_stopped_early: int
    n_failed: int
    pareto: List[Dict[str, Any]]
    dense: Dict[str, Any]
    hypervolume: float
    mlflow_experiment_id: Optional[str]
    mlflow_parent_run_id: Optional[str]
    tracking_uri: Optional[str]
    storage: str
    duration_s: float
    artifacts: Dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def to_json(self) -> Dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["pareto"] = [{k: v for k, v in row.items() if k not in ("error",)} for row in self.pareto]
        return out


class Recorder:
    """Syncs a study to MLflow from the driver process.

    Args:
        study: the Optuna study.
        config: the study config (its ``search.trials`` is the total).
        uri: MLflow tracking URI.
        runs_dir: output root (embedded store artifacts).
        dense: the dense model's metrics (logged on the parent run, drawn on the plot).
    """

    def __init__(self, study: Any, config: StudyConfig, uri: str, runs_dir: str, dense: Dict[str, Any]) -> None:
        self.study = study
        self.config = config
        self.uri = uri
        self.dense = dense
        self.tracker = Tracker(uri, config.study, runs_dir)
        self.tracker.start_parent(config.to_dict(), dense)
        self._last: Dict[str, Any] = {"n_finished": -1, "status": {}}
        self.artifacts: Dict[str, str] = {}

    def sync(self) -> Dict[str, Any]:
        """Log newly finished trials, refresh Pareto tags and the hypervolume; return the progress status."""
        tracker, last = self.tracker, self._last
        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        if len(finished) == last["n_finished"]:
            return last["status"]  # nothing new: leave the CPU to the workers
        for t in sorted(finished, key=lambda t: t.number):
            if tracker.trial_run_id(t.number) is None:
                st = trial_state(t)
                tracker.log_trial(
                    t.number,
                    st,
                    t.user_attrs.get(attrs.POLICY),
                    t.user_attrs.get(attrs.RESULT),
                    t.user_attrs.get(attrs.ERROR),
                    int(t.datetime_start.timestamp() * 1000) if t.datetime_start else None,
                    int(t.datetime_complete.timestamp() * 1000) if t.datetime_complete else None,
                )
                self._log_trial_files(t)
        front = front_rows(self.study)
        tracker.set_pareto([r["trial"] for r in front])
        # feasible only (a size budget broken after training keeps state "complete"), as on the front
        complete = sorted((t for t in finished if trial_state(t) == "complete" and feasible(t)), key=lambda t: t.number)
        rows_so_far: List[Dict[str, Any]] = []
        for t in complete:
            rows_so_far.append(trial_row(t))
            if t.number not in tracker._hv_logged:
                tracker.log_hypervolume(t.number, hypervolume(rows_so_far), HYPERVOLUME_DESCRIPTION)  # dominated points add nothing
        best = max((r["val_accuracy"] for r in front), default=None)
        counted = counts_toward_total()
        last["n_finished"] = len(finished)
        last["status"] = {
            "done": sum(1 for t in finished if t.state in counted),
            "total": self.config.search.trials,
            "front": len(front),
            "best_val_accuracy": best,
            # the most accurate front model (the front holds feasible trials only: within the budget)
            "best": next(({k: r[k] for k in ("trial", "val_accuracy", "size_ratio")} for r in front if r["val_accuracy"] == best), None),
            "failed": sum(1 for t in finished if trial_state(t) == "failed"),
        }
        return last["status"]

    def _log_trial_files(self, trial: Any) -> None:
        """With a tracking server: the trial's folder (model.pt, result.json) as artifacts ``trial/`` of its
        nested run, so ``export`` finds the weights where the runs folder is not shared."""
        if not self.uri.startswith(("http://", "https://")):
            return
        ckpt = (trial.user_attrs.get(attrs.RESULT) or {}).get("checkpoint")
        if ckpt and Path(ckpt).is_file():
            try:
                self.tracker.client.log_artifacts(self.tracker.trial_run_id(trial.number), str(Path(ckpt).parent), TRIAL_ARTIFACTS)
            except Exception as err:  # the search goes on; export says where it looked
                log.warning("trial %d: could not upload its weights to the MLflow server: %s", trial.number, str(err).splitlines()[0][:200])

    def finish(self, out_dir: Path, status: str = "FINISHED") -> Dict[str, str]:
        """Last sync, the front artifacts on the parent run (kept in ``self.artifacts``), and the parent's
        final status (FINISHED, KILLED or FAILED). Runs however the search ended, so it never raises: when
        MLflow (or the disk, or the study's storage) fails here, a warning says so; the study keeps every
        trial, and the next search syncs what MLflow missed."""
        try:
            self.sync()
            self.artifacts = write_front_artifacts(self.study, self.tracker, self.dense, out_dir, self.config.search.objectives)
        except Exception as err:
            log.warning("could not finish recording the search (the last sync to MLflow at %s, the front artifacts): %s; the study keeps "
                        "every trial: run the same command again to sync them", shown(self.uri), environment_failure(err) or first_line(str(err)))
        try:
            self.tracker.finish_parent(status)
        except Exception as err:
            log.warning("could not set the MLflow search run's status %s: %s", status, environment_failure(err) or first_line(str(err)))
        return self.artifacts

    def summary(self, storage: str, started: float, artifacts: Dict[str, str], interrupted: bool) -> SearchSummary:
        # trials that ran or run: not warm-start policies still waiting in the queue (a timeout before any trial)
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
        # a trained trial over a budget (measured after training) is infeasible too: not on the front, not exportable by a pick
        states = ["infeasible" if trial_state(t) == "complete" and not feasible(t) else trial_state(t) for t in trials]
        front = front_rows(self.study)
        return SearchSummary(
            study=self.config.study,
            n_trials=len(trials),
            n_complete=states.count("complete"),
            n_infeasible=states.count("infeasible"),
            n_stopped_early=states.count("stopped_early"),
            n_failed=states.count("failed"),
            pareto=front,
            dense={k: self.dense[k] for k in ("val_accuracy", "test_accuracy", "size_bytes", "params", "latency_ms")},
            hypervolume=hypervolume(front),
            mlflow_experiment_id=self.tracker.experiment_id,
            mlflow_parent_run_id=self.tracker.parent_run_id,
            tracking_uri=shown(self.uri),  # printed (--json): never with a password
            storage=storage,
            duration_s=round(time.time() - started, 2),
            artifacts=artifacts,
            interrupted=interrupted,
        )


def write_front_artifacts(study: Any, tracker: Any, dense: Dict[str, Any], out_dir: Path, objectives: List[str]) -> Dict[str, str]:
    """pareto_front.csv, a small interactive HTML plot (:mod:`autoprune.tracking.ui`) and a static PNG, logged to the parent run."""
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = front_rows(study)
    csv_path = out_dir / "pareto_front.csv"
    cols = ["trial", "val_accuracy", "test_accuracy", "size_bytes", "size_ratio", "latency_ms", "macs", "hidden_sizes", "method", "granularity", "schedule"]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "hidden_sizes": json.dumps(r["hidden_sizes"])})
    out = {"pareto_front.csv": str(csv_path)}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and trial_state(t) == "complete"]
    if complete:
        try:  # a few kB of SVG: renders in MLflow's sandboxed artifact viewer, offline (a plotly page did not)
            out["pareto_front.html"] = write_front_plot(
                out_dir / "pareto_front.html", [trial_row(t) for t in complete], rows, dense, f"study {study.study_name}: Pareto front"
            )
        except Exception as err:  # plotting must never lose a search
            log.warning("could not write the interactive Pareto plot: %s", err)
        png = out_dir / "pareto_front.png"
        _static_plot([trial_row(t) for t in complete], rows, dense, png)
        out["pareto_front.png"] = str(png)
    if tracker is not None and tracker.parent_run_id:
        for path in out.values():
            tracker.log_file(tracker.parent_run_id, path)
    return out


def _static_plot(all_rows: List[Dict[str, Any]], front: List[Dict[str, Any]], dense: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([r["size_ratio"] * 100 for r in all_rows], [r["val_accuracy"] for r in all_rows], s=18, c="#bbbbbb", label="trials")
    fr = sorted(front, key=lambda r: r["size_ratio"])
    ax.plot([r["size_ratio"] * 100 for r in fr], [r["val_accuracy"] for r in fr], "o-", c="#d62728", label="Pareto front")
    ax.axhline(dense["val_accuracy"], ls="--", c="#1f77b4", lw=1, label=f"dense ({dense['val_accuracy']:.3f})")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("size, % of dense (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

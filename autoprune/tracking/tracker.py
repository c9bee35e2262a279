"""MLflow tracking of a search: one experiment per study, a parent run per search, one
nested run per trial, Pareto membership as a tag kept up to date, and the front as
artifacts of the parent run.

Only the search's main process writes to MLflow (workers write to the Optuna storage
and the parent syncs), so the embedded SQLite store never sees concurrent writers.
Default store: ``sqlite:///<runs>/mlflow.db`` with artifacts under ``<runs>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

import requests
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from autoprune.services.databases import check_connects, check_url
from autoprune.errors import ConfigError
from autoprune.layout import mlflow_artifacts, mlflow_db
from autoprune.pruning.policy import policy_from_dict
from autoprune.tracking.tags import (
    ERROR_TAG,
    HIDDEN_SIZES_TAG,
    HYPERVOLUME_TAG,
    LATENCY_DEVICE_TAG,
    MLFLOW_PARENT_TAG,
    PARENT_TAG,
    PARETO_TAG,
    PRECISION_TAG,
    REASON_TAG,
    STATE_TAG,
    TRIAL_TAG,
)
from autoprune.tracking.ui import prepare_experiment
from autoprune.services.urls import shown

__all__ = ["default_tracking_uri", "recorded_tracking_uri", "relocate_embedded_store", "study_run_ids", "Tracker", "check_tracking_uri"]

log = logging.getLogger(__name__)

def default_tracking_uri(runs_dir: str | os.PathLike) -> str:
    """The embedded store under the runs folder."""
    return f"sqlite:///{mlflow_db(runs_dir).resolve()}"


def recorded_tracking_uri(meta: Dict[str, Any], runs_dir: str | os.PathLike) -> Optional[str]:
    """The tracking URI a search recorded in ``search.json`` (without its password), with the embedded
    store followed to where the runs folder is now: a runs folder copied or mounted elsewhere has its own
    ``mlflow.db``, while search.json holds the absolute path of the original (as the journal, see
    :meth:`autoprune.search.storage.Storage.relocated`)."""
    uri = meta.get("tracking_uri")
    here = mlflow_db(runs_dir)
    embedded = meta.get("tracking_embedded", bool(uri) and uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]).name == here.name)
    if uri and embedded and here.is_file():
        return default_tracking_uri(runs_dir)
    return uri


def study_run_ids(uri: str, study: str) -> tuple[Optional[str], Optional[str]]:
    """(experiment id, latest search run id) of ``study`` in the store at ``uri`` (Nones when it has none):
    what search.json records, found by name on a machine without it."""
    client = _client(uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return None, None
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = 'true'", order_by=["attributes.start_time DESC"], max_results=1)
    return exp.experiment_id, (found[0].info.run_id if found else None)


#: how long an MLflow call waits for a server that stopped answering (README "Faults")
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _client(uri: str):
    # with a tracking server MLflow prints "View run ... at: URL" to stdout for every run it ends: that
    # would break `--json` output (the URLs are in the summary and `autoprune ui` anyway)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # a tracking server that stops answering: MLflow's defaults (7 retries, backoff factor 2, 120 s timeout) wait
    # about 10 minutes per call; these give up within about 30 s (each can still be set in the environment)
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri)


#: what ``--tracking-uri`` accepts, for messages
TRACKING_ACCEPTED = "http(s)://HOST:PORT (an MLflow server), sqlite:///PATH or a database URL such as postgresql://USER@HOST/DB"
_TRACKING_OPTION = "--tracking-uri / MLFLOW_TRACKING_URI"
#: the database stores MLflow can track to (SQLAlchemy dialects)
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, on a tracking URI that cannot be used: MLflow's file store (in maintenance
    mode since MLflow 3: it fails on first use), a database URL without its driver or whose server does not
    answer, an MLflow server that cannot be reached.

    Raises:
        ConfigError: naming the URI (password hidden) and what went wrong.
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme == "file" or uri.startswith("file:") or (not scheme and ("/" in uri or uri.startswith("."))):
        raise ConfigError(
            f"{_TRACKING_OPTION} {shown(uri)}: MLflow's file store is not supported (MLflow 3 keeps it in maintenance mode); "
            f"use {TRACKING_ACCEPTED}, or leave it unset for the embedded store under runs/"
        )
    if scheme in _DATABASES:
        check_url(uri, _TRACKING_OPTION, TRACKING_ACCEPTED)
        if scheme != "sqlite":
            check_connects(uri, _TRACKING_OPTION, int(timeout_s))
        return
    if scheme not in ("http", "https"):
        return  # another MLflow scheme (databricks, ...): MLflow checks it
    try:  # a plain request with a short timeout: MLflow's own client retries for minutes
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        if resp.status_code >= 400:
            resp = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=timeout_s)
            resp.raise_for_status()
    except Exception as err:  # requests raises many kinds; all mean "unreachable" here
        reason = shown(str(err).splitlines()[0][:200])
        raise ConfigError(
            f"{_TRACKING_OPTION}: cannot reach the MLflow tracking server at {shown(uri)} ({type(err).__name__}: {reason}); "
            f"start it, fix the URI, or leave it unset to use the embedded store under runs/"
        ) from None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local SQLite store (no-op for servers)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: the columns of MLflow's SQL store that hold artifact locations (absolute file:// URIs)
_ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
                     ("model_versions", "source"), ("model_versions", "storage_location"))


def relocate_embedded_store(runs_dir: str | os.PathLike) -> None:
    """Point the embedded store's artifact locations at this runs folder's ``mlartifacts/``.

    MLflow records them as absolute ``file://`` URIs: in a runs folder copied or moved elsewhere they still
    name the original folder, and whatever is logged from the copy (an export's model, a resumed search's
    front) would land there. No MLflow API moves an experiment's artifact location; the embedded store is
    autoprune's own SQLite file, so its rows are rewritten, under the store's lock. A store that cannot be
    written (a read-only copy) is left as it is, with a warning.
    """
    db = mlflow_db(runs_dir)
    if not db.is_file():
        return
    here = mlflow_artifacts(Path(runs_dir).resolve(), "-").parent.as_uri() + "/"
    marker = "/mlartifacts/"
    with _store_lock(default_tracking_uri(runs_dir)), contextlib.closing(sqlite3.connect(db)) as conn:
        try:
            rows = conn.execute("select artifact_location from experiments where artifact_location like 'file:%' and instr(artifact_location, ?) > 0", (marker,)).fetchall()
            olds = {loc[: loc.rindex(marker) + len(marker)] for (loc,) in rows} - {here}
            with conn:
                for old in olds:
                    for table, column in _ARTIFACT_COLUMNS:
                        with contextlib.suppress(sqlite3.OperationalError):  # a table or column this MLflow version lacks
                            conn.execute(f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?", (here, len(old) + 1, len(old), old))
        except sqlite3.Error as err:
            log.warning("the MLflow store %s names artifacts under another runs folder and cannot be updated (%s): artifacts logged now go there", db, err)
            return
    for old in olds:
        log.info("the runs folder was copied or moved: the MLflow store's artifact locations now point at %s instead of %s", here, old)


def _trial_metrics(result: Dict[str, Any]) -> List[Metric]:
    """A trial result's numbers as MLflow metrics: the headline, sizes against dense, float32 twins of int8 numbers, sparsity, curves."""
    metrics = [_metric(key, result[key]) for key in ("val_accuracy", "test_accuracy", "size_bytes", "nonzero_params", "params", "macs", "latency_ms", "duration_s")
               if result.get(key) is not None]
    dense = result.get("dense") or {}
    if result.get("size_bytes") and dense.get("size_bytes"):
        metrics.append(_metric("compression_ratio", dense["size_bytes"] / result["size_bytes"]))  # against dense float32
    for key, value in (result.get("int8") or {}).items():
        if key.startswith("float_") and value is not None:  # the same model before int8, beside the int8 numbers
            metrics.append(_metric(key, value))
    sp = result.get("sparsity") or {}
    metrics += [_metric(f"sparsity.{key}", sp[key]) for key in ("overall", "rnn") if key in sp]
    metrics += [_metric(f"sparsity.{group}", value) for group, value in (sp.get("per_group") or {}).items()]
    metrics += [_metric(f"units_removed.{layer}", value) for layer, value in (sp.get("hidden_units") or {}).items()]
    for row in result.get("history") or []:
        for key in ("val_accuracy", "val_loss", "train_loss"):
            if row.get(key) is not None and row[key] == row[key]:
                metrics.append(_metric(f"curve.{key}", row[key], step=int(row["epoch"])))
    return metrics


def _metric(key: str, value: float, step: int = 0, ts: Optional[int] = None) -> Metric:
    return Metric(key, float(value), ts or int(time.time() * 1000), step)


class Tracker:
    """Writes a search to MLflow.

    Args:
        uri: tracking URI (``sqlite:///...`` or a server URL).
        study: experiment name.
        runs_dir: where the embedded store's artifacts go.
    """

    def __init__(self, uri: str, study: str, runs_dir: str | os.PathLike) -> None:
        self.uri = uri
        self.study = study
        if uri == default_tracking_uri(runs_dir):
            relocate_embedded_store(runs_dir)  # a runs folder copied elsewhere: log into the copy, never the original
        with _store_lock(uri):
            # the first use of a SQLite store creates its tables: two searches starting at once on a
            # fresh runs/ would race in MLflow's migrations without this lock
            self.client = _client(uri)
            exp = self.client.get_experiment_by_name(study)
            if exp is None:
                artifact_location = None
                if not uri.startswith(("http://", "https://")):
                    # a database store (SQLite or a server's PostgreSQL) keeps no files: without a location MLflow
                    # puts artifacts in ./mlruns of the current directory, outside the runs folder
                    artifact_location = mlflow_artifacts(Path(runs_dir).resolve(), study).as_uri()
                self.experiment_id = self.client.create_experiment(study, artifact_location=artifact_location)
            else:
                self.experiment_id = exp.experiment_id
            prepare_experiment(self.client, self.experiment_id, strict=False)  # MLflow's model-training view and the front's shared view
        self.parent_run_id: Optional[str] = None
        self._trial_runs: Dict[int, str] = {}
        self._pareto: Dict[int, bool] = {}
        self._hv_logged: set[int] = set()

    # ------------------------------------------------------------------ parent
    def start_parent(self, config: Dict[str, Any], dense: Dict[str, Any]) -> str:
        """Create the search's parent run, or reuse the one of an earlier (interrupted) search."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if found:
            self.parent_run_id = found[0].info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            for run in self._children():
                trial = run.data.tags.get(TRIAL_TAG)
                if trial is not None:
                    if run.info.status == "RUNNING" or int(trial) in self._trial_runs:
                        # a search killed while logging this trial: its run is incomplete; the next sync logs it again
                        self.client.delete_run(run.info.run_id)
                        continue
                    self._trial_runs[int(trial)] = run.info.run_id
                    self._pareto[int(trial)] = run.data.tags.get(PARETO_TAG) == "true"
            hv = self.client.get_metric_history(self.parent_run_id, "hypervolume")
            self._hv_logged = {m.step for m in hv}
        else:
            run = self.client.create_run(self.experiment_id, run_name=f"search-{self.study}", tags={PARENT_TAG: "true"})
            self.parent_run_id = run.info.run_id
        rid = self.parent_run_id
        metrics = [_metric(f"dense_{k}", v) for k, v in dense.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(rid, metrics=metrics)
        self.log_text(rid, json.dumps(config, indent=2, default=str), "config.json")
        self.log_text(rid, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        return rid

    def _children(self) -> List[Any]:
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{MLFLOW_PARENT_TAG} = '{self.parent_run_id}'", max_results=50000
        )

    def finish_parent(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status=status)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def log_file(self, run_id: str, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    # ------------------------------------------------------------------ trials
    def log_trial(self, number: int, state: str, policy: Optional[Dict[str, Any]], result: Optional[Dict[str, Any]], error: Optional[str], start_ms: Optional[int], end_ms: Optional[int]) -> str:
        """One nested run for a finished trial (idempotent: a trial already logged is skipped).

        Three requests to a tracking server, not one per tag: the run with all its tags, one batch of
        metrics and parameters (more only past MLflow's batch limits), the end.
        """
        if number in self._trial_runs:
            return self._trial_runs[number]
        tags = {MLFLOW_PARENT_TAG: self.parent_run_id, TRIAL_TAG: str(number), STATE_TAG: state, PARETO_TAG: "false", "mlflow.runName": f"trial-{number}"}
        params = [Param(k, str(v)[:6000]) for k, v in policy_from_dict(policy).flat_params().items() if v is not None] if policy else []
        metrics: List[Metric] = []
        if result:
            metrics = _trial_metrics(result)
            tags[PRECISION_TAG] = result.get("precision") or "float32"
            if result.get("latency_device"):
                tags[LATENCY_DEVICE_TAG] = result["latency_device"]
            if result.get("hidden_sizes") is not None:
                tags[HIDDEN_SIZES_TAG] = json.dumps(result["hidden_sizes"])
            if result.get("reason"):
                tags[REASON_TAG] = str(result["reason"])[:5000]
        if error:
            tags[ERROR_TAG] = error[:5000]
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=f"trial-{number}")
        rid = run.info.run_id
        # MLflow's batch limits: 1000 metrics, 100 params, 1000 entries in all
        while metrics or params:
            p, params = params[:100], params[100:]
            m, metrics = metrics[: 1000 - len(p)], metrics[1000 - len(p):]
            self.client.log_batch(rid, metrics=m, params=p)
        status = {"complete": "FINISHED", "infeasible": "FINISHED", "stopped_early": "KILLED", "failed": "FAILED"}.get(state, "FINISHED")
        self.client.set_terminated(rid, status=status, end_time=end_ms)
        self._trial_runs[number] = rid
        self._pareto[number] = False
        return rid

    def set_pareto(self, front: Iterable[int]) -> None:
        """Tag ``autoprune.pareto`` true for trials on the front and false for every other logged trial."""
        front = set(front)
        for number, rid in self._trial_runs.items():
            on = number in front
            if self._pareto.get(number) != on:
                self.client.set_tag(rid, PARETO_TAG, "true" if on else "false")
                self._pareto[number] = on

    def log_hypervolume(self, step: int, value: float, description: str) -> None:
        """The front's hypervolume after trial ``step``; ``description`` says how it is computed."""
        if step in self._hv_logged:
            return
        if not self._hv_logged:  # MLflow metrics carry no description: the definition goes beside them as a tag
            self.client.set_tag(self.parent_run_id, HYPERVOLUME_TAG, description)
        self.client.log_batch(self.parent_run_id, metrics=[_metric("hypervolume", value, step=step)])
        self._hv_logged.add(step)

    def trial_run_id(self, number: int) -> Optional[str]:
        return self._trial_runs.get(number)

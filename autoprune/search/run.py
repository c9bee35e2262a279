"""``run_search``: open the study, build the objective, run trials with a runner, record results.

* Storage: an Optuna journal file ``runs/<study>/optuna.journal`` (made for several
  local worker processes) or any Optuna storage URL.
* The runner (``search.backend``) executes trials; the driver process holds the study lock,
  syncs finished trials to MLflow and shows progress.
* Running the same command again resumes: finished trials are kept, trials left
  RUNNING by a killed process are marked FAIL, and ``trials`` counts the total of
  complete and stopped-early trials.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any, Callable, Dict, Optional

from autoprune.config import StudyConfig
from autoprune.layout import study_paths
from autoprune.reference.dense import ensure_dense
from autoprune.search.faults import (
    FailureWatch,
    SearchInterrupted,
    SearchStopped,
    TooManyFailures,
    deferred,
    hold_signals,
    interrupt_handlers,
    quiet_optuna_failures,
    release_signals,
)
from autoprune.search.journal import (
    check_storage_url,
    remove_stale_journal_lock,
    repair_journal,
)
from autoprune.search.objective import prepare_space
from autoprune.search.recipe_check import check_search_start
from autoprune.search.recording import Recorder, SearchSummary
from autoprune.search.runners import SearchJob, get_runner
from autoprune.search.study import (
    StudyLock,
    check_storage_reachable,
    create_study,
    mark_stale,
    update_meta,
)
from autoprune.tracking.tracker import check_tracking_uri, default_tracking_uri

__all__ = ["run_search", "SearchSummary"]

log = logging.getLogger(__name__)


def run_search(
    config: StudyConfig,
    runs_dir: str = "runs",
    tracking_uri: Optional[str] = None,
    storage: Optional[str] = None,
    progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchSummary:
    """Search pruning policies for the study's dense model.

    Args:
        config: the validated study config; ``config.search`` holds the space, budget, sampler and runner.
        runs_dir: output root.
        tracking_uri: MLflow tracking URI; default: the embedded store under ``runs_dir``.
        storage: Optuna storage URL; default: a journal file under ``runs/<study>/``.
        progress: called with a status dict after every finished trial.

    Raises:
        ConfigError / ConstraintError / TrialError: before any training, for bad settings,
        an unreachable tracking server, an impossible latency budget or a study already
        being searched.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    s = config.search
    paths = study_paths(runs_dir, config.study)
    uri = tracking_uri or default_tracking_uri(runs_dir)
    check_tracking_uri(uri)
    check_storage_url(storage)
    check_storage_reachable(storage or "")
    storage = storage or str(paths.journal)
    runner = get_runner(getattr(s, "backend", "local"))
    runner.check(config, storage)
    quiet_optuna_failures()  # one line per failed trial (FailureWatch), not Optuna's traceback

    with interrupt_handlers(), StudyLock(paths.lock):
        if "://" not in storage:
            _repair_journal(storage)
        # ---- everything that can be refused is refused before training the dense model
        config, space, settings, cache = prepare_space(config, paths.root)
        dense = ensure_dense(config, runs_dir)

        check_search_start(config, runs_dir, dense)  # epoch budget, small-validation warning, fine-tune with nothing pruned
        study = create_study(config, storage, space)
        update_meta(paths.meta, storage=storage, tracking_uri=uri, config=config.to_dict(), dense_checkpoint=str(dense.checkpoint))
        dense_info = {**dense.metrics, "size_bytes": dense.metrics["params"] * 4, "latency_ms": cache.get(dense.arch, settings)}
        hold_signals()  # from the parent run's creation until the try below: a signal then ends it KILLED
        recorder = Recorder(study, config, uri, runs_dir, dense_info)
        update_meta(paths.meta, mlflow_experiment_id=recorder.tracker.experiment_id, mlflow_parent_run_id=recorder.tracker.parent_run_id)

        job = SearchJob(config, runs_dir, storage, s.trials, dense.arch.to_dict(), started + s.timeout if s.timeout else None, str(dense.checkpoint))
        shown: Dict[str, Any] = {}
        from datetime import datetime

        watch = FailureWatch(s.max_consecutive_failures, since=datetime.fromtimestamp(started), study=config.study)

        def update() -> Dict[str, Any]:
            with deferred():  # a signal waits until the MLflow records are whole
                status = recorder.sync()
            watch.update(study.get_trials(deepcopy=False))
            if progress and status != shown:
                progress(status)
                shown.clear()
                shown.update(status)
            return status

        interrupted = False
        signum = signal.SIGINT
        final: Optional[str] = None
        marked = 0
        try:
            release_signals()
            status = update()
            if status["done"] < job.total and (job.deadline is None or time.time() < job.deadline):
                runner.run(job, study, update)
        except SearchInterrupted as stop:
            interrupted, signum = True, stop.signum
            marked = mark_stale(study, f"interrupted by {stop.signal_name}: the search was stopped during this trial")
        except KeyboardInterrupt:
            interrupted = True
            marked = mark_stale(study)
        except TooManyFailures:
            final = "FAILED"
            mark_stale(study, "stopped: the search stopped after too many consecutive failed trials")
            raise
        except BaseException:
            final = "FAILED"
            mark_stale(study, "stopped: the search process failed")
            raise
        finally:
            artifacts = recorder.finish(paths.root, interrupted, status=final)

    summary = recorder.summary(storage, started, artifacts, interrupted)
    if interrupted:
        raise SearchStopped(summary, signum, marked)
    return summary


def _repair_journal(path: str) -> None:
    """Before anything appends to a journal: drop a torn tail (backup kept), clear a dead writer's lock."""
    from pathlib import Path

    if remove_stale_journal_lock(path):
        log.info("removed the journal lock %s.lock left by a killed search", path)
    report = repair_journal(path)
    if report.repaired:
        log.warning(
            "repaired the study journal %s: %s (%d bytes dropped, %d records recovered); the original is kept as %s",
            path, "; ".join(report.notes), report.dropped_bytes, report.recovered_records, Path(report.backup).name,
        )

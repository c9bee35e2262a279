"""``run_search``: open the study, build the objective, run trials with a runner, record results.

* Storage: an Optuna journal file ``runs/<study>/optuna.journal`` (made for several
  local worker processes) or any Optuna storage URL (:mod:`autoprune.search.storage`).
* The runner (``search.backend``) executes trials; the driver process holds the study lock,
  syncs finished trials to MLflow and shows progress.
* Running the same command again resumes: finished trials are kept, trials left
  RUNNING by a killed process are marked FAIL, and ``trials`` counts the total of
  complete and stopped-early trials.
* However the search ends (:class:`~autoprune.search.interrupts.Ending`), the runner stops its
  workers, running trials are marked failed with the reason, and the MLflow parent run gets
  its final status (FINISHED, KILLED or FAILED).
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import datetime
from typing import Any, Callable, Dict, Optional

import optuna

from autoprune.config import StudyConfig
from autoprune.layout import StudyPaths, study_paths
from autoprune.reference.dense import ensure_dense
from autoprune.search.faults import FailureWatch
from autoprune.search.fidelity import promoter_of
from autoprune.search.interrupts import Ending, SearchStopped, SignalScope
from autoprune.search.objective import prepare_space
from autoprune.search.recipe_check import check_search_start
from autoprune.search.recording import Recorder, SearchSummary
from autoprune.search.runners import Runner, SearchJob, get_runner
from autoprune.search.storage import Storage
from autoprune.search.study import StudyLock, create_study, mark_stale, update_meta
from autoprune.tracking.tracker import check_tracking_uri, default_tracking_uri
from autoprune.trial.run import dense_numbers

__all__ = ["run_search", "SearchSummary"]

log = logging.getLogger(__name__)

Progress = Optional[Callable[[Dict[str, Any]], None]]


def run_search(
    config: StudyConfig,
    runs_dir: str = "runs",
    tracking_uri: Optional[str] = None,
    storage: Optional[str] = None,
    progress: Progress = None,
) -> SearchSummary:
    """Search pruning policies for the study's dense model.

    Args:
        config: the validated study config; ``config.search`` holds the space, budget, sampler and runner.
        runs_dir: output root.
        tracking_uri: MLflow tracking URI; default: the embedded store under ``runs_dir``.
        storage: Optuna storage URL or journal file; default: a journal file under ``runs/<study>/``.
        progress: called with a status dict after every finished trial.

    Raises:
        ConfigError / ConstraintError / TrialError: before any training, for bad settings,
            an unreachable tracking server, an impossible latency budget or a study already
            being searched.
        SearchStopped: the search was interrupted (a signal, Ctrl-C), after recording what it had.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    paths = study_paths(runs_dir, config.study)
    uri = tracking_uri or default_tracking_uri(runs_dir)
    check_tracking_uri(uri)
    store = Storage.parse(storage, default_journal=paths.journal)
    store.check_reachable()
    runner = get_runner(config.search.backend)
    runner.check(config, store)

    with SignalScope() as signals, StudyLock(paths.lock):
        store.prepare()  # a journal left by a killed search: its lock cleared, a torn tail dropped
        # ---- everything that can be refused is refused before training the dense model
        config, space, settings, cache = prepare_space(config, runs_dir)
        dense = ensure_dense(config, runs_dir)
        check_search_start(config, runs_dir, dense)  # epoch budget, small-validation warning, fine-tune with nothing pruned
        study = create_study(config, store, space)
        update_meta(paths.meta, storage=store.text, tracking_uri=uri, config=config.to_dict(), dense_checkpoint=str(dense.checkpoint))
        s = config.search
        job = SearchJob(config, runs_dir, store.text, s.trials, dense.arch.to_dict(), started + s.timeout if s.timeout else None, str(dense.checkpoint),
                        promoter_of(config))
        dense_info = {**dense.metrics, **dense_numbers(dense, settings["seq_len"], cache.get(dense.arch, settings))}
        ending, marked, recorder = _run(signals, runner, job, study, paths, uri, dense_info, started, progress)

    summary = recorder.summary(store.text, started, recorder.artifacts, ending.interrupted)
    if ending.interrupted:
        raise SearchStopped(summary, ending.signum or signal.SIGINT, marked)
    return summary


def _run(signals: SignalScope, runner: Runner, job: SearchJob, study: Any, paths: StudyPaths, uri: str, dense_info: Dict[str, Any],
         started: float, progress: Progress) -> tuple[Ending, int, Recorder]:
    """Record into MLflow while the runner runs the trials; however it ends, stop the runner, mark the
    trials still running failed and give the parent run its final status.

    Returns:
        (how it ended, trials marked failed, the recorder); an ending other than finished or
        interrupted re-raises its error after the clean-up.
    """
    recorder: Optional[Recorder] = None
    ending, marked = Ending.of(None), 0
    try:
        with signals.deferred():  # from the parent run's creation on, a signal ends it KILLED, never left RUNNING
            recorder = Recorder(study, job.config, uri, job.runs_dir, dense_info)
            update_meta(paths.meta, mlflow_experiment_id=recorder.tracker.experiment_id, mlflow_parent_run_id=recorder.tracker.parent_run_id)
        update = _updater(signals, recorder, study, job, started, progress)
        status = update()
        if status["done"] < job.total and (job.deadline is None or time.time() < job.deadline):
            runner.run(job, study, update)
    except BaseException as err:
        ending = Ending.of(err)
        runner.stop()
        marked = mark_stale(study, ending.stale_reason)
        if not ending.interrupted:
            raise
    finally:
        if recorder is not None:
            recorder.finish(paths.root, ending.parent_status)
    return ending, marked, recorder


def _updater(signals: SignalScope, recorder: Recorder, study: Any, job: SearchJob, started: float, progress: Progress) -> Callable[[], Dict[str, Any]]:
    """``update()``: sync finished trials to MLflow (a signal waits until the records are whole), report
    failures, stop after too many in a row, show progress; returns the status."""
    watch = FailureWatch(job.config.search.max_consecutive_failures, since=datetime.fromtimestamp(started), study=job.config.study)
    shown: Dict[str, Any] = {}

    def update() -> Dict[str, Any]:
        with signals.deferred():
            status = recorder.sync()
        watch.update(study.get_trials(deepcopy=False))
        if progress and status != shown:
            progress(status)
            shown.clear()
            shown.update(status)
        return status

    return update

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
from autoprune.errors import ConfigError
from autoprune.layout import StudyPaths, study_paths
from autoprune.reference.dense import ensure_dense, reference_key
from autoprune.search.faults import FailureWatch, environment_failure, first_line
from autoprune.search.fidelity import promoter_of
from autoprune.search.interrupts import Ending, SearchStopped, SignalScope
from autoprune.search.objective import prepare_space
from autoprune.search.recipe_check import check_search_start
from autoprune.search.recording import Recorder, SearchSummary
from autoprune.search.runners import Runner, SearchJob, get_runner
from autoprune.search.storage import Storage
from autoprune.search.study import StudyLock, check_same_reference, create_study, mark_stale, read_meta, update_meta
from autoprune.tracking.tracker import check_tracking_uri, default_tracking_uri, recorded_tracking_uri
from autoprune.trial.run import dense_numbers
from autoprune.services.urls import same_place, shown, written

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
    store, uri = _stores(paths, storage, tracking_uri)
    check_tracking_uri(uri)
    store.check_reachable()
    runner = get_runner(config.search.backend)
    runner.check(config, store)

    with SignalScope() as signals, StudyLock(paths.lock):
        runner.prepare(config)  # worker processes import torch while the driver sets up
        try:
            store.prepare()  # a journal left by a killed search: its lock cleared, a torn tail dropped
            # ---- everything that can be refused is refused before training the dense model
            config, space, settings, cache = prepare_space(config, runs_dir)
            check_same_reference(config, store, reference_key(config), read_meta(paths.meta))  # G2: before training another dense model
            dense = ensure_dense(config, runs_dir)
            check_search_start(config, runs_dir, dense)  # epoch budget, small-validation warning, fine-tune with nothing pruned
            study, salt = create_study(config, store, space, dense.key)
            update_meta(paths.meta, storage=store.recorded, tracking_uri=written(uri), tracking_embedded=uri == default_tracking_uri(runs_dir),
                        config=config.to_dict(), dense_checkpoint=str(dense.checkpoint))
            s = config.search
            job = SearchJob(config, runs_dir, store.text, s.trials, dense.arch.to_dict(), started + s.timeout if s.timeout else None, str(dense.checkpoint),
                            sampler_salt=salt, promoter=promoter_of(config))
            dense_info = {**dense.metrics, **dense_numbers(dense, settings["seq_len"], cache.get(dense.arch, settings))}
            ending, marked, recorder = _run(signals, runner, job, study, paths, uri, dense_info, started, progress)
        finally:
            runner.stop()  # whatever prepare() started and run() did not use (nothing to do after a clean run)

    summary = recorder.summary(store.display(), started, recorder.artifacts, ending.interrupted)
    if ending.interrupted:
        raise SearchStopped(summary, ending.signum or signal.SIGINT, marked)
    return summary


def _stores(paths: StudyPaths, storage: Optional[str], tracking_uri: Optional[str]) -> tuple[Storage, str]:
    """The study's storage and tracking URI: those ``search.json`` recorded are used again (a journal or the
    embedded MLflow store followed to where the runs folder is now); the same ones may be given again (with
    their passwords, which are never recorded); different ones are refused.

    Raises:
        ConfigError: a storage or tracking URI other than the recorded one, in one line naming both (passwords hidden).
    """
    meta = read_meta(paths.meta)
    recorded = Storage(meta["storage"]).relocated(paths.journal) if meta.get("storage") else None
    given = Storage.parse(storage, default_journal=paths.journal) if storage is not None else None
    if recorded is not None and given is not None and not given.same_as(recorded):
        _refuse("--storage (AUTOPRUNE_STORAGE)", given.display(), recorded.display(), paths)
    store = given or (Storage.parse(recorded.text) if recorded is not None else Storage.parse(None, default_journal=paths.journal))
    if given is None and recorded is not None and recorded.shared:
        log.info("study '%s' lives in %s (recorded in %s): resuming there", paths.study, recorded.display(), paths.meta)
    known = recorded_tracking_uri(meta, paths.runs_dir)
    if known is not None and tracking_uri is not None and not same_place(tracking_uri, known):
        _refuse("--tracking-uri (MLFLOW_TRACKING_URI)", shown(tracking_uri), shown(known), paths)
    return store, tracking_uri or known or default_tracking_uri(paths.runs_dir)


def _refuse(option: str, given: str, recorded: str, paths: StudyPaths) -> None:
    raise ConfigError(
        f"{option} {given}: study '{paths.study}' was searched with {recorded} (recorded in {paths.meta}); "
        f"give that one again, or leave the option out to use it, or search under another --study name"
    )


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
        if status["done"] < job.total and job.deadline is not None and time.time() >= job.deadline:
            log.warning(
                "search.timeout (--timeout %g s) expired before any trial started (it counts from the start: the dense model and the "
                "checks took %.0f s); no trial ran: give a longer --timeout", job.config.search.timeout, time.time() - started,
            )
        elif status["done"] < job.total:
            runner.run(job, study, update)
    except BaseException as err:
        ending = Ending.of(err)
        runner.stop()
        # best effort: when the storage itself is what failed, the next search marks these trials instead
        marked = _best_effort(lambda: mark_stale(study, ending.stale_reason), 0, "mark the running trials failed")
        if not ending.interrupted:
            raise
    finally:
        if recorder is not None:
            recorder.finish(paths.root, ending.parent_status)
    return ending, marked, recorder


def _best_effort(step: Callable[[], Any], default: Any, what: str) -> Any:
    """``step()`` during the clean-up after a search failed: its own failure (often the same server or disk) is a
    warning, so that the clean-up goes on and the first error is the one reported."""
    try:
        return step()
    except Exception as err:
        log.warning("could not %s either: %s", what, environment_failure(err) or first_line(str(err)))
        return default


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

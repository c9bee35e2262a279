"""The local runner: trials in this process (``workers: 1``) or in N spawned worker
processes sharing the study's storage (a journal file made for that, or an RDB URL).

Each worker runs an explicit ask/tell loop (:func:`_optimize`): claim a trial (exactly
``trials`` counted trials across all workers, see :mod:`autoprune.search.claim`), run the
objective, tell the outcome through the one tell path (:func:`autoprune.search.tell.run_and_tell`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from typing import Any, Callable, Dict, List, Sequence

import optuna
import torch

from autoprune.layout import study_paths
from autoprune.search.claim import NotYet, TotalReached, claim, counted
from autoprune.search.faults import die_with_parent
from autoprune.search.interrupts import SearchInterrupted, SignalScope
from autoprune.search.objective import make_objective
from autoprune.search.runners import Runner, SearchJob, capped_workers
from autoprune.search.samplers import make_sampler
from autoprune.search.storage import Storage
from autoprune.search.tell import run_and_tell

__all__ = ["LocalRunner"]

#: the thread pools of the numerical libraries a worker loads, sized to the one core each worker's trial is given
#: (torch's own pool is set with torch.set_num_threads; OpenBLAS, used by numpy, would start one spinning thread per core)
ONE_CORE = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _optimize(study: Any, job: SearchJob, after_each: Sequence[Callable[[], Any]]) -> None:
    """Claim, run and tell trials until the study has ``job.total`` counted trials (or the deadline passes).

    ``after_each`` functions run after each trial this worker told (the driver's recording).
    """
    objective = make_objective(job.config, job.runs_dir, job.dense_arch)
    lock = study_paths(job.runs_dir, job.config.study).ask_lock
    while job.deadline is None or time.time() < job.deadline:
        try:
            trial = claim(study, job.total, lock, job.promoter)
        except TotalReached:  # the other workers' running trials complete the total
            return
        except NotYet:  # only promotions are left, and the trials that may earn one are still running
            time.sleep(1.0)
            continue
        run_and_tell(study, trial, lambda: objective(trial))
        for callback in after_each:
            callback()


def _worker_main(job: SearchJob, worker: int) -> None:
    """Entry point of a worker process (spawned: nothing inherited but the job)."""
    torch.set_num_threads(1)
    die_with_parent()  # a SIGKILLed driver leaves no orphan writing to the study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("autoprune").setLevel(logging.WARNING)
    # Ctrl-C reaches the whole process group: the driver decides, it terminates us (SIGTERM), and then
    # the trial stays RUNNING until the driver marks it failed (Lightning would otherwise finish it early)
    with SignalScope(ignore_sigint=True):
        try:
            study = optuna.load_study(study_name=job.config.study, storage=Storage(job.storage).open(), sampler=make_sampler(job.config, worker, job.sampler_salt))
            _optimize(study, job, [])
        except SearchInterrupted as stop:
            raise SystemExit(stop.exit_code) from None


def _waiting_worker(conn: Any, worker: int) -> None:
    """A worker started before the search knows its job (:meth:`LocalRunner.prepare`): torch, Lightning and the
    trial code are imported by now (this module's imports, in the spawned process); wait for the job, or None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides (see _worker_main)
    die_with_parent()
    try:
        job = conn.recv()
    except EOFError:  # the driver went away before the search began
        return
    conn.close()
    if job is not None:
        _worker_main(job, worker)


class LocalRunner(Runner):
    name = "local"

    def __init__(self) -> None:
        self._procs: List[Any] = []
        self._pipes: List[Any] = []  # to workers started by prepare(), waiting for their job

    def prepare(self, config: Any) -> None:
        """Start the worker processes now, so that their imports (about 5 CPU seconds each) overlap the driver's
        set-up (the dense model, the study, the MLflow run) instead of following it; they wait for the job."""
        if config.search.workers <= 1 or self._procs:
            return
        n = capped_workers(config.search.workers, config.search.trials, "search.workers / --workers")
        if n <= 1:
            return
        ctx = mp.get_context("spawn")
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        self._procs = [ctx.Process(target=_waiting_worker, args=(r, w), name=f"autoprune-worker-{w}", daemon=False) for w, (r, _) in enumerate(pipes)]
        self._pipes = [w for _, w in pipes]
        _start(self._procs)

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        workers = job.config.search.workers
        if workers > 1:
            workers = capped_workers(len(self._pipes) or workers, job.total - counted(study), "search.workers / --workers")
        if workers <= 1 and not self._pipes:
            torch.set_num_threads(1)
            _optimize(study, job, [update])
            return
        if self._pipes:  # started by prepare(): the job to as many as the trials left need, None to the others
            for w, pipe in enumerate(self._pipes):
                pipe.send(job if w < workers else None)
                pipe.close()
            self._pipes = []
        else:
            ctx = mp.get_context("spawn")
            self._procs = [ctx.Process(target=_worker_main, args=(job, w), name=f"autoprune-worker-{w}", daemon=False) for w in range(workers)]
            _start(self._procs)
        while any(p.is_alive() for p in self._procs):
            time.sleep(2.0)
            update()
        for p in self._procs:
            p.join()
        update()

    def stop(self) -> None:
        """Terminate the worker processes (SIGTERM, then SIGKILL after 10 s): their running trials stay
        RUNNING until the driver marks them failed."""
        for pipe in self._pipes:
            pipe.close()
        self._pipes = []
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def _start(procs: List[Any]) -> None:
    """Start spawned worker processes with one-core thread pools (:data:`ONE_CORE`) in their environment."""
    saved = {k: os.environ.get(k) for k in ONE_CORE}
    os.environ.update(ONE_CORE)  # what a spawned process starts with
    try:
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

"""The local runner: trials in this process (``workers: 1``) or in N spawned worker
processes sharing the study's storage (a journal file made for that, or an RDB URL).

Each worker runs an explicit ask/tell loop (:func:`_optimize`): claim a trial (exactly
``trials`` counted trials across all workers, see :mod:`autoprune.search.claim`), run the
objective, tell the outcome through the one tell path (:func:`autoprune.search.tell.run_and_tell`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from typing import Any, Callable, Dict, List, Sequence

import optuna
import torch

from autoprune.layout import study_paths
from autoprune.search.claim import NotYet, TotalReached, claim
from autoprune.search.faults import die_with_parent
from autoprune.search.interrupts import SearchInterrupted, SignalScope
from autoprune.search.objective import make_objective
from autoprune.search.runners import Runner, SearchJob
from autoprune.search.samplers import make_sampler
from autoprune.search.storage import Storage
from autoprune.search.tell import run_and_tell

__all__ = ["LocalRunner"]


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
            study = optuna.load_study(study_name=job.config.study, storage=Storage(job.storage).open(), sampler=make_sampler(job.config, worker))
            _optimize(study, job, [])
        except SearchInterrupted as stop:
            raise SystemExit(stop.exit_code) from None


class LocalRunner(Runner):
    name = "local"

    def __init__(self) -> None:
        self._procs: List[Any] = []

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        if job.config.search.workers <= 1:
            torch.set_num_threads(1)
            _optimize(study, job, [update])
            return
        ctx = mp.get_context("spawn")
        self._procs = [
            ctx.Process(target=_worker_main, args=(job, w), name=f"autoprune-worker-{w}", daemon=False)
            for w in range(job.config.search.workers)
        ]
        for p in self._procs:
            p.start()
        while any(p.is_alive() for p in self._procs):
            time.sleep(2.0)
            update()
        for p in self._procs:
            p.join()
        update()

    def stop(self) -> None:
        """Terminate the worker processes (SIGTERM, then SIGKILL after 10 s): their running trials stay
        RUNNING until the driver marks them failed."""
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)

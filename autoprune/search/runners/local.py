"""The local runner: trials in this process (``workers: 1``) or in N spawned worker
processes sharing the study's storage (a journal file made for that, or an RDB URL).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from typing import Any, Callable, Dict

from autoprune.layout import study_paths
from autoprune.search.claim import TotalReached, claim_on_ask
from autoprune.search.faults import (
    SearchInterrupted,
    die_with_parent,
    interrupt_handlers,
    quiet_optuna_failures,
)
from autoprune.search.objective import make_objective
from autoprune.search.runners import Runner, SearchJob
from autoprune.search.study import counts_toward_total, make_sampler, storage_for

__all__ = ["LocalRunner", "RUNNER"]


def _optimize(study: Any, job: SearchJob, callbacks: list) -> None:
    import optuna

    # every ask claims a trial under a lock shared by the workers: exactly job.total counted trials
    claim_on_ask(study, job.total, study_paths(job.runs_dir, job.config.study).ask_lock)
    try:
        study.optimize(
            make_objective(job.config, job.runs_dir, job.dense_arch),
            timeout=max(1.0, job.deadline - time.time()) if job.deadline else None,
            callbacks=[optuna.study.MaxTrialsCallback(job.total, states=counts_toward_total()), *callbacks],
            catch=(Exception,),
            gc_after_trial=False,
        )
    except TotalReached:  # the other workers' running trials complete the total
        pass
    finally:
        study.__dict__.pop("ask", None)


def _worker_main(job: SearchJob, worker: int) -> None:
    """Entry point of a worker process (spawned: nothing inherited but the job)."""
    import torch

    torch.set_num_threads(1)

    die_with_parent()  # a SIGKILLed driver leaves no orphan writing to the study
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_optuna_failures()
    logging.getLogger("autoprune").setLevel(logging.WARNING)
    with interrupt_handlers():
        # Ctrl-C reaches the whole process group: the driver decides, it terminates us (SIGTERM), and then
        # the trial stays RUNNING until the driver marks it failed (Lightning would otherwise finish it early)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            study = optuna.load_study(study_name=job.config.study, storage=storage_for(job.storage), sampler=make_sampler(job.config, worker))
            _optimize(study, job, [])
        except SearchInterrupted as stop:
            raise SystemExit(stop.exit_code) from None


class LocalRunner(Runner):
    name = "local"

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        if job.config.search.workers <= 1:
            import torch

            torch.set_num_threads(1)
            _optimize(study, job, [lambda st, frozen: update()])
            return
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_worker_main, args=(job, w), name=f"autoprune-worker-{w}", daemon=False)
            for w in range(job.config.search.workers)
        ]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(2.0)
                update()
        except BaseException:  # interrupted, or too many failures: stop the workers before the driver cleans up
            for p in procs:
                p.terminate()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            raise
        for p in procs:
            p.join()
        update()


RUNNER = LocalRunner

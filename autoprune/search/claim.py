"""Exactly ``--trials`` counted trials, with any number of workers: every ask is a claim.

Optuna's ``MaxTrialsCallback`` checks the count after a trial, and the next ``ask`` comes later:
with two workers, one asks while the other's trial is about to complete the total, and the search
ends with total + 1 (or more) counted trials. :func:`claim` asks a trial only while trials that
count (complete, stopped early) plus trials still running (claimed, their outcome unknown) are
below the total, under a file lock shared by the search's processes on this machine and, on a
database server, a lock held in the server (drivers on several machines, each with its own runs
folder, take turns too: two of them ended with 7 trials of 6). A running trial that then fails
does not count: its worker claims again, so a failure is still replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Any, Optional, Tuple

from optuna.trial import TrialState

from autoprune.search import attrs
from autoprune.search.fidelity import Promoter
from autoprune.search.storage import storage_of
from autoprune.search.study import driver_id

__all__ = ["TotalReached", "NotYet", "counts_toward_total", "counted", "claim", "next_trial"]


class TotalReached(Exception):
    """:func:`claim` refused: the study holds (or is running) its total of trials."""


class NotYet(Exception):
    """:func:`claim` has nothing to start now (multi-fidelity waits for a trial to finish and be promoted)."""


def counts_toward_total() -> Tuple[TrialState, ...]:
    """The trial states ``trials`` counts: complete (feasible or not) and stopped early."""
    return (TrialState.COMPLETE, TrialState.PRUNED)


def counted(study: Any, running: bool = False) -> int:
    """Trials of the study that count toward the total (and, with ``running``, those still running)."""
    states = (*counts_toward_total(), TrialState.RUNNING) if running else counts_toward_total()
    return len(study.get_trials(deepcopy=False, states=states))


def claim(study: Any, total: int, lock_path: Path, promoter: Optional[Promoter] = None) -> Any:
    """``study.ask()`` unless counted plus running trials already reach ``total``; with a ``promoter``
    (multi-fidelity), a promotion first when one is due (:func:`next_trial`).

    Running trials of every process count, including those of a search on another machine on a
    shared database server (they may still complete the total); the lock only orders this machine's
    processes. Trials left RUNNING by a killed search are marked failed before the workers start.

    Raises:
        TotalReached: no trial is needed now (the caller's worker is done).
        NotYet: the rest of the budget is for promotions and none is due yet: claim again in a moment.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    store = storage_of(study)
    with open(lock_path, "a") as fh, (store.study_lock(study.study_name) if store else contextlib.nullcontext()):
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if counted(study, running=True) >= total:
            raise TotalReached
        return next_trial(study, promoter)


def next_trial(study: Any, promoter: Optional[Promoter] = None) -> Any:
    """The next trial to run (the caller holds the claim): an enqueued trial (the warm start, a promotion), a
    promotion now due, or a sampled trial.

    Raises:
        NotYet: only promotions are left to run, none is due, and running trials may still make one due.
    """
    if promoter is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # the queue first
        number = promoter.next_promotion(study)
        if number is not None:
            promoter.promote(study, number)
        elif promoter.sampled_budget_left(study) <= 0 and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            raise NotYet
    trial = study.ask()
    # who asked it, at once (before the policy's many storage calls): a search that dies now leaves a RUNNING
    # trial that the next run on a shared database can tell is its own to repair (search.study.mark_stale)
    trial.set_user_attr(attrs.DRIVER, driver_id())
    return trial

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
from typing import Any, Tuple

from optuna.trial import TrialState

from autoprune.search.storage import storage_of

__all__ = ["TotalReached", "counts_toward_total", "counted", "claim"]


class TotalReached(Exception):
    """:func:`claim` refused: the study holds (or is running) its total of trials."""


def counts_toward_total() -> Tuple[TrialState, ...]:
    """The trial states ``trials`` counts: complete (feasible or not) and stopped early."""
    return (TrialState.COMPLETE, TrialState.PRUNED)


def counted(study: Any, running: bool = False) -> int:
    """Trials of the study that count toward the total (and, with ``running``, those still running)."""
    states = (*counts_toward_total(), TrialState.RUNNING) if running else counts_toward_total()
    return len(study.get_trials(deepcopy=False, states=states))


def claim(study: Any, total: int, lock_path: Path) -> Any:
    """``study.ask()`` unless counted plus running trials already reach ``total``.

    Running trials of every process count, including those of a search on another machine on a
    shared database server (they may still complete the total); the lock only orders this machine's
    processes. Trials left RUNNING by a killed search are marked failed before the workers start.

    Raises:
        TotalReached: no trial is needed now (the caller's worker is done).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    store = storage_of(study)
    with open(lock_path, "a") as fh, (store.study_lock(study.study_name) if store else contextlib.nullcontext()):
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if counted(study, running=True) >= total:
            raise TotalReached
        return study.ask()

"""Exactly ``--trials`` counted trials with several local workers.

Optuna's ``MaxTrialsCallback`` checks the count after a trial, and the next ``ask`` comes later:
with two workers, one asks while the other's trial is about to complete the total, and the search
ends with total + 1 (or more) counted trials. Here every ``ask`` of a local search is a claim,
made under a file lock shared by the search's processes on this machine: trials that count
(complete, stopped early) plus trials still running (claimed, their outcome unknown) are counted,
and no trial is asked once they reach the total. A running trial that then fails does not count:
its worker goes on and asks again, so a failure is still replaced.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

from autoprune.search.study import counts_toward_total

__all__ = ["TotalReached", "claim_on_ask"]


class TotalReached(Exception):
    """Raised by a claiming ``ask`` once the study holds (or is running) its total of trials."""


def claim_on_ask(study: Any, total: int, lock_path: Path) -> None:
    """Make ``study.ask`` (the one ``study.optimize`` calls) a claim: refuse with ``TotalReached``
    when counted + running trials already reach ``total``. The caller catches ``TotalReached``.

    Running trials of every process count, including those of a search on another machine on a
    shared database server (they may still complete the total); the lock only orders this machine's
    processes. Trials left RUNNING by a killed search are marked failed before the workers start.
    """
    from optuna.trial import TrialState

    ask = study.ask
    states = (*counts_toward_total(), TrialState.RUNNING)
    lock_path.parent.mkdir(parents=True, exist_ok=True)

    def claiming_ask(*args: Any, **kwargs: Any) -> Any:
        with open(lock_path, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            if len(study.get_trials(deepcopy=False, states=states)) >= total:
                raise TotalReached
            return ask(*args, **kwargs)

    study.ask = claiming_ask

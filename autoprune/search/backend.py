"""Compatibility shim: the search moved into separate modules.

* ``autoprune.search.study``      storage, lock, sampler, stale-trial repair
* ``autoprune.search.objective``  checks before training and the Optuna objective
* ``autoprune.search.runners``    the Runner interface; ``local`` (in-process / worker processes), ``ray``
* ``autoprune.search.recording``  MLflow sync, front artifacts and plots, the summary
* ``autoprune.search.run``        ``run_search``: the orchestration of the four

New code should import from those modules.
"""

from autoprune.search.objective import check_latency_budget, make_objective
from autoprune.search.recording import SearchSummary, write_front_artifacts
from autoprune.search.run import run_search
from autoprune.search.study import (
    OBJECTIVE_DIRECTIONS as _OBJECTIVE_DIRECTIONS,
    StudyLock,
    counts_toward_total as _counts_toward_total,
    make_sampler as _make_sampler,
    mark_stale as _mark_stale,
    open_study,
    storage_for as _storage,
    study_paths,
)

__all__ = ["run_search", "SearchSummary", "open_study", "study_paths", "StudyLock", "make_objective", "check_latency_budget", "write_front_artifacts"]

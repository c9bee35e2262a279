"""A search's study: opening and creating it (with its sampler and warm start), the lock that keeps
one driver per study on this machine, the search's ``search.json``, and the repair of trials left
running by a killed search. Where it lives: :mod:`autoprune.search.storage`.

The Optuna study is the record that ``pareto``, ``export`` and resume read, whichever
runner filled it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, Tuple

import optuna
from optuna.trial import TrialState

from autoprune.config import StudyConfig
from autoprune.errors import ConfigError, TrialError
from autoprune.layout import study_paths
from autoprune.search import attrs
from autoprune.search.samplers import make_sampler
from autoprune.search.space import SPACE_VERSION, SearchSpace
from autoprune.search.storage import Storage, is_shared_storage

__all__ = ["OBJECTIVE_DIRECTIONS", "open_study", "StudyLock", "mark_stale", "create_study", "enqueue_warm_start", "update_meta", "driver_id"]

log = logging.getLogger(__name__)

#: the study attribute naming the search space whose parameters its trials have
SPACE_ATTR = "autoprune.space"

OBJECTIVE_DIRECTIONS = {"val_accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def open_study(study: str, runs_dir: str | os.PathLike = "runs") -> Tuple[optuna.Study, Dict[str, Any]]:
    """Load a searched study by name; returns (optuna study, search meta dict).

    Raises:
        TrialError: no search has been run for this study (lists the studies that have one), or its storage cannot be read.
    """
    paths = study_paths(runs_dir, study)
    if not paths.meta.is_file():
        known = sorted(p.parent.name for p in Path(runs_dir).glob("*/search.json")) if Path(runs_dir).is_dir() else []
        raise TrialError(
            f"unknown study '{study}' under {runs_dir}/: no search has been run for it"
            + (f"; studies with a search: {', '.join(known)}" if known else "; run `autoprune search CONFIG` first")
        )
    meta = json.loads(paths.meta.read_text())
    storage = Storage(meta["storage"]).relocated(paths.journal)
    try:
        return optuna.load_study(study_name=study, storage=storage.open()), meta
    except ValueError as err:  # json.JSONDecodeError included: a damaged journal
        raise TrialError(
            f"{storage.display()}: the study storage cannot be read ({type(err).__name__}: {str(err)[:200]}); "
            f"run `autoprune search` on the study again: it repairs a torn journal (keeping a backup)"
        ) from None


def update_meta(path: Path, **values: Any) -> Dict[str, Any]:
    """Merge ``values`` into the study's search.json (created when missing)."""
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta.update(values)
    path.write_text(json.dumps(meta, indent=2))
    return meta


class StudyLock:
    """An exclusive lock on a study's directory: a second search on the same study is refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: Any = None

    def __enter__(self) -> "StudyLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise TrialError(
                f"another search is already running on study '{self.path.parent.name}' ({holder}); "
                f"wait for it to finish, or give this one another --study name (use --workers N to search in parallel)"
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fh:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()


def driver_id() -> str:
    """``host:pid`` of the process that asked a trial (recorded as ``autoprune.driver``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _left_behind(trial: Any) -> bool:
    """On a shared storage: a RUNNING trial is ours to repair only when its driver ran on this machine
    and is gone (or is this process). Trials of searches on other machines are left alone."""
    host, _, pid = str(trial.user_attrs.get(attrs.DRIVER, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def mark_stale(study: Any, reason: str = "interrupted: the search process stopped during this trial") -> int:
    """Trials left RUNNING by a killed search: mark them FAIL with ``reason`` (we hold the study lock).

    On a journal file or SQLite (one machine, the lock held) that is every RUNNING trial; on a
    database server only those asked by this machine's dead (or this) search process.
    WAITING trials (enqueued warm-start policies not yet run) stay: the next optimize runs them.
    """
    n = 0
    shared = is_shared_storage(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if shared and not _left_behind(t):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, attrs.ERROR, reason)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        except Exception:  # another process finished it meanwhile
            pass
    return n


def create_study(config: StudyConfig, storage: Storage, space: Any) -> optuna.Study:
    """Create or resume the study; refuse other objectives, repair stale trials, enqueue the warm start.

    Raises:
        ConfigError: the stored study was searched with other objectives.
    """
    s = config.search
    directions = [OBJECTIVE_DIRECTIONS[o] for o in s.objectives]
    study = optuna.create_study(
        study_name=config.study, storage=storage.open(), directions=directions, sampler=make_sampler(config, 0), load_if_exists=True
    )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            f"study '{config.study}' was searched with objectives {[d.name.lower() for d in study.directions]}, "
            f"this config asks for {s.objectives}; use another --study name"
        )
    space_version = study.user_attrs.get(SPACE_ATTR)
    if study.get_trials(deepcopy=False) and space_version != SPACE_VERSION:
        raise ConfigError(
            f"study '{config.study}' was searched with an earlier search space of autoprune ({space_version or 'per-group sparsities'}); "
            f"this one ({SPACE_VERSION}: size first) cannot resume its trials; search it under another --study name"
        )
    study.set_user_attr(SPACE_ATTR, SPACE_VERSION)
    stale = mark_stale(study)
    if stale:
        log.info("marked %d trial(s) left running by an interrupted search as failed", stale)
    if s.warm_start and not study.get_trials(deepcopy=False):
        enqueue_warm_start(study, space, s.trials - 1)
    return study


def enqueue_warm_start(study: optuna.Study, space: SearchSpace, limit: int) -> None:
    """Enqueue the space's warm-start trials (at most ``limit``), marked as such; under multi-fidelity each
    carries its retraining as an attribute (the space does not sample recovery then)."""
    for params in space.warm_start_params()[: max(0, limit)]:
        user_attrs = {attrs.ORIGIN: attrs.WARM_START}
        if space.space.fidelity.enabled and "recovery" in params:
            user_attrs[attrs.RECOVERY] = params.pop("recovery")
        study.enqueue_trial(params, user_attrs=user_attrs, skip_if_exists=True)

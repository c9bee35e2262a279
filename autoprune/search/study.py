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
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import optuna
from optuna.trial import TrialState

from autoprune.config import StudyConfig, config_from_dict
from autoprune.errors import ConfigError, TrialError
from autoprune.layout import study_paths, write_atomic
from autoprune.search import attrs
from autoprune.search.samplers import make_sampler, stable_int
from autoprune.search.space import SPACE_VERSION, SearchSpace
from autoprune.search.storage import Storage, is_shared_storage

__all__ = ["OBJECTIVE_DIRECTIONS", "open_study", "StudyLock", "mark_stale", "check_same_reference", "create_study", "enqueue_warm_start", "run_salt",
           "read_meta", "update_meta", "driver_id"]

log = logging.getLogger(__name__)

#: the study attribute naming the search space whose parameters its trials have

OBJECTIVE_DIRECTIONS = {"val_accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def open_study(study: str, runs_dir: str | os.PathLike = "runs", storage: Optional[str] = None) -> Tuple[optuna.Study, Dict[str, Any]]:
    """Load a searched study by name; returns (optuna study, search meta dict).

    Args:
        storage: where the study lives (``--storage``), for a teammate without the runs folder the search wrote:
            the meta then comes from the study itself (its config, recorded on it by the search).

    Raises:
        TrialError: no search has been run for this study (lists the studies that have one), no such study in
            ``storage``, or its storage cannot be read.
    """
    paths = study_paths(runs_dir, study)
    meta = read_meta(paths.meta)
    if storage is not None:
        given = Storage.parse(storage)
        given.check_reachable()
        if not (meta.get("storage") and Storage(meta["storage"]).relocated(paths.journal).same_as(given)):
            meta = {"storage": given.recorded}  # another machine's study: what search.json would say comes from the study
        st = _load(study, given, f"no study '{study}' in {given.display()}")
        meta.setdefault("config", st.user_attrs.get(attrs.CONFIG))
        return st, meta
    if not meta:
        known = sorted(p.parent.name for p in Path(runs_dir).glob("*/search.json")) if Path(runs_dir).is_dir() else []
        raise TrialError(
            f"unknown study '{study}' under {runs_dir}/: no search has been run for it"
            + (f"; studies with a search: {', '.join(known)}" if known else "; run `autoprune search CONFIG` first, or give --storage where it lives")
        )
    stored = Storage(meta["storage"]).relocated(paths.journal)
    return _load(study, stored, f"no study '{study}' in {stored.display()} (recorded in {paths.meta})"), meta


def _load(study: str, storage: Storage, missing: str) -> optuna.Study:
    if storage.is_journal and not Path(storage.text).is_file():
        raise TrialError(f"{missing}: the journal file does not exist")
    try:
        return optuna.load_study(study_name=study, storage=storage.open())
    except KeyError:
        raise TrialError(missing) from None
    except ValueError as err:  # json.JSONDecodeError included: a damaged journal
        raise TrialError(
            f"{storage.display()}: the study storage cannot be read ({type(err).__name__}: {str(err)[:200]}); "
            f"run `autoprune search` on the study again: it repairs a torn journal (keeping a backup)"
        ) from None


def read_meta(path: Path) -> Dict[str, Any]:
    """The study's search.json ({} when there is none).

    Raises:
        TrialError: the file is not the JSON object autoprune wrote.
    """
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise TrialError(f"{path}: unreadable ({type(err).__name__}: {str(err)[:160]}); it is what `search` recorded about the study: restore it, or search under another --study name") from None
    if not isinstance(meta, dict):
        raise TrialError(f"{path}: not the JSON object `autoprune search` writes; restore it, or search under another --study name")
    return meta


def update_meta(path: Path, **values: Any) -> Dict[str, Any]:
    """Merge ``values`` into the study's search.json (created when missing).

    Written whole or not at all, readable by its owner only (mode 0600): it names the study's storage
    and tracking store (without their passwords: the callers pass :func:`autoprune.services.urls.written` URLs).
    """
    meta = read_meta(path)
    meta.update(values)
    write_atomic(path, json.dumps(meta, indent=2).encode())  # mode 0600
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


#: a RUNNING trial with no driver recorded this long after it started is left behind (a live driver records itself
#: right after the ask, in milliseconds: :func:`autoprune.search.claim.next_trial`)
_UNOWNED_AFTER_S = 60.0


def _left_behind(trial: Any) -> bool:
    """On a shared storage: a RUNNING trial is ours to repair only when its driver ran on this machine
    and is gone (or is this process). Trials of searches on other machines are left alone."""
    if attrs.DRIVER not in trial.user_attrs:  # asked, and its driver died before the next storage call: nobody's now
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - started > _UNOWNED_AFTER_S
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
            study._storage.set_trial_user_attr(t._trial_id, attrs.INTERRUPTED, True)  # not its own failure: a warm start runs again
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        except Exception:  # another process finished it meanwhile
            pass
    return n


def check_same_reference(config: StudyConfig, storage: Storage, key: str, meta: Dict[str, Any]) -> None:
    """Refuse, before anything is trained, to add trials on another dense model to a searched study (its model,
    task, training settings or seed changed in the YAML): one front needs one dense reference.

    Raises:
        ConfigError: one line naming the settings that changed and what to do.
    """
    if storage.is_journal and not Path(storage.text).is_file():
        return  # a new study (and opening a journal would create its file)
    try:
        known = optuna.load_study(study_name=config.study, storage=storage.open()).user_attrs.get(attrs.DENSE_KEY)
    except KeyError:  # no such study yet in this storage: nothing to mix with
        return
    if known is None and meta.get("dense_checkpoint"):  # a study searched before the key was recorded on it
        known = Path(meta["dense_checkpoint"]).parent.name
    if known is None or known == key:
        return
    raise ConfigError(
        f"study '{config.study}' was searched on another dense model ({_changed(meta.get('config'), config)}); the trials of one study "
        f"share one dense reference: search under another --study name, or put those settings back (the earlier dense model is kept "
        f"under {study_paths('.', config.study).dense.relative_to('.')}/{known}/)"
    )


def _changed(recorded: Any, config: StudyConfig) -> str:
    """What differs between the recorded config's dense settings and ``config``'s, as ``key old -> new``."""
    try:
        before = _flat(config_from_dict(recorded, source="search.json").dense_key())
    except Exception:  # a config from an older autoprune, or none recorded
        return "its task, model, training settings or seed changed"
    after = _flat(config.dense_key())
    diffs = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return ", ".join(diffs[:4]) + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "") if diffs else "the data files, torch or Lightning changed"


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def create_study(config: StudyConfig, storage: Storage, space: Any, dense_key: str) -> Tuple[optuna.Study, int]:
    """Create or resume the study, under the storage's study lock (drivers on other machines may be doing the
    same): refuse other objectives, repair stale trials, enqueue the warm start (again for warm-start trials an
    interrupt left unrun), name the objectives, and give this run its own sampler stream.

    Returns:
        (the study, this run's sampler salt: :func:`run_salt`, for the workers' samplers too).

    Raises:
        ConfigError: the stored study was searched with other objectives.
    """
    s = config.search
    directions = [OBJECTIVE_DIRECTIONS[o] for o in s.objectives]
    with storage.study_lock(config.study):
        study = optuna.create_study(study_name=config.study, storage=storage.open(), directions=directions, load_if_exists=True)
        _check_resumable(study, config)
        stale = mark_stale(study)
        if stale:
            log.info("marked %d trial(s) left running by an interrupted search as failed", stale)
        trials = study.get_trials(deepcopy=False)
        salt = run_salt(len(trials), storage.shared)
        study.sampler = make_sampler(config, 0, salt)
        if s.warm_start and not trials:
            enqueue_warm_start(study, space, s.trials - 1)
        for params, user_attrs in _unrun_enqueued(trials):
            study.enqueue_trial(params, user_attrs=user_attrs)
        for key, value in ((attrs.SPACE, SPACE_VERSION), (attrs.DENSE_KEY, dense_key), (attrs.CONFIG, config.to_dict())):
            if study.user_attrs.get(key) != value:  # DENSE_KEY: check_same_reference reads it on the next run, on any machine;
                study.set_user_attr(key, value)  # CONFIG: pareto / export from another machine (open_study(storage=...))
        if study.metric_names != list(s.objectives):
            with warnings.catch_warnings():  # "experimental since v3.2": stable in use, and a user cannot act on it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(s.objectives))  # Optuna Dashboard and the MLflow-free views name them
    return study, salt


def _check_resumable(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse a stored study searched with other objectives, or with a search space of an earlier autoprune.

    Raises:
        ConfigError: one line saying what to change.
    """
    stored = [d.name.lower() for d in study.directions]
    if stored != [OBJECTIVE_DIRECTIONS[o] for o in config.search.objectives]:
        raise ConfigError(f"study '{config.study}' was searched with objectives {stored}, this config asks for {config.search.objectives}; use another --study name")
    space_version = study.user_attrs.get(attrs.SPACE)
    if study.get_trials(deepcopy=False) and space_version != SPACE_VERSION:
        raise ConfigError(
            f"study '{config.study}' was searched with an earlier search space of autoprune ({space_version or 'per-group sparsities'}); "
            f"this one ({SPACE_VERSION}: size first) cannot resume its trials; search it under another --study name"
        )


def enqueue_warm_start(study: optuna.Study, space: SearchSpace, limit: int) -> None:
    """Enqueue the space's warm-start trials (at most ``limit``), marked as such; under multi-fidelity each
    carries its retraining as an attribute (the space does not sample recovery then)."""
    for params in space.warm_start_params()[: max(0, limit)]:
        user_attrs = {attrs.ORIGIN: attrs.WARM_START}
        if space.space.fidelity.enabled and "recovery" in params:
            user_attrs[attrs.RECOVERY] = params.pop("recovery")
        study.enqueue_trial(params, user_attrs=user_attrs, skip_if_exists=True)


def run_salt(n_trials: int, shared: bool) -> int:
    """What makes this run's sampler stream its own (:func:`autoprune.search.samplers.make_sampler`): 0 for a
    new study on one machine (a search is reproducible from its seed); a resumed study (``n_trials`` already in
    it) draws a new stream, or its seeded sampler proposes the very policies it ran before; on a database
    server each driver (host and pid) draws its own, or two machines propose the same policies."""
    if n_trials == 0 and not shared:
        return 0
    return stable_int(f"{n_trials}:{driver_id() if shared else ''}")


#: the attributes an enqueued trial carries (where it came from, its retraining, the trial it promotes)
_ENQUEUED_ATTRS = (attrs.ORIGIN, attrs.RECOVERY, attrs.PROMOTED_FROM)


def _unrun_enqueued(trials: List[Any]) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """Enqueued trials (the warm start, promotions) whose every run was interrupted (failed by :func:`mark_stale`)
    and none waits or ran to the end: ``(params, user attributes)`` to enqueue again, else a Ctrl-C during such
    a trial loses that policy (or promotion) for good."""
    def key(t: Any) -> Optional[str]:
        params = t.system_attrs.get("fixed_params")  # what Optuna's enqueue_trial recorded on the trial
        if not params:
            return None
        return json.dumps([params, {k: t.user_attrs.get(k) for k in _ENQUEUED_ATTRS}], sort_keys=True)

    covered = {key(t) for t in trials if t.state != TrialState.FAIL or not t.user_attrs.get(attrs.INTERRUPTED)}
    again: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
    for t in trials:
        k = key(t)
        if k and k not in covered and t.user_attrs.get(attrs.INTERRUPTED):
            again[k] = (t.system_attrs["fixed_params"], {a: t.user_attrs[a] for a in _ENQUEUED_ATTRS if a in t.user_attrs})
    return list(again.values())

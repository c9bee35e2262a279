"""Runners: how a search's trials get executed (local processes, Ray Tune).

A runner takes a ``SearchJob`` (plain, picklable settings) and the open study, and runs
trials until the study counts ``job.total`` complete or stopped-early trials (or the
deadline passes), calling ``update()`` whenever trials may have finished: the driver then
records them. Everything else (storage, the policy of a trial, the one tell path,
recording) is shared.

:data:`RUNNERS` is the one table of runner names: the config validates ``search.backend``
with it and :func:`get_runner` looks the runner up in it. Each entry imports its runner
only when asked, as Ray Tune's ``SEARCH_ALG_IMPORT`` does: the config reads the names
without loading torch, and the Ray runner needs the optional ``cluster`` extra.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Optional

from autoprune.errors import ConfigError

__all__ = ["SearchJob", "Runner", "RUNNERS", "get_runner", "machine_cores", "capped_workers"]

log = logging.getLogger(__name__)

#: resident memory of one worker process with torch and Lightning imported and a trial running (measured: 0.6-0.9 GB)
WORKER_GIB = 1.0


@dataclass
class SearchJob:
    """What a runner needs to run a search's trials (picklable: plain values and the config)."""

    config: Any  # StudyConfig
    runs_dir: str
    storage: str  # Optuna storage URL or journal file path
    total: int  # complete + stopped-early trials the study should reach
    dense_arch: Dict[str, Any]
    deadline: Optional[float]  # time.time() after which no trial starts
    dense_checkpoint: Optional[str] = None  # the dense model every trial starts from
    sampler_salt: int = 0  # this run's own sampler stream (search.study.run_salt): workers seed with it too
    promoter: Optional[Any] = None  # multi-fidelity: the search.fidelity.Promoter deciding promotions at each claim


class Runner:
    """The interface of a runner (subclass it in a module of this package and add it to :data:`RUNNERS`)."""

    name: ClassVar[str] = ""

    def check(self, job_config: Any, storage: Any) -> None:
        """Refuse bad settings before any training (for example an unreachable cluster). Default: nothing."""

    def prepare(self, config: Any) -> None:
        """Start what can start before the job is known (worker processes importing torch while the driver sets
        up); :meth:`stop` ends it if the search never runs. Default: nothing."""

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        """Run trials until the study reaches ``job.total`` (or the deadline).

        ``update()`` records finished trials and returns the status (``done``, ``total``, ...).
        An interrupt propagates to the caller, which calls :meth:`stop` and marks running trials failed.
        """
        raise NotImplementedError

    def stop(self) -> None:
        """Stop whatever this runner started (worker processes, a local Ray instance) after an
        interrupt or an error; safe to call when nothing runs. Default: nothing."""


#: runner name -> where its class lives, imported only when the runner is asked for (the config reads
#: the names without loading torch; the Ray runner needs the optional 'cluster' extra)
RUNNERS: Dict[str, str] = {
    "local": "autoprune.search.runners.local:LocalRunner",
    "ray": "autoprune.search.runners.ray:RayRunner",
}


def get_runner(name: str) -> Runner:
    """A runner instance by name.

    Raises:
        ConfigError: no runner of that name, or its optional dependencies are missing.
    """
    if name not in RUNNERS:
        raise ConfigError(f"unknown search backend {name!r}; valid: {', '.join(RUNNERS)}")
    module, _, cls = RUNNERS[name].partition(":")
    try:
        runner = getattr(importlib.import_module(module), cls)
    except ImportError as err:  # a runner whose engine is an optional extra (ray: the 'cluster' extra)
        raise ConfigError(f"search.backend {name}: {err}; install what it needs, e.g. pip install -c constraints.txt -e '.[cluster]'") from None
    return runner()


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _available_gib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return math.inf


def capped_workers(asked: int, trials_left: int, what: str, cpus_each: float = 1.0) -> int:
    """How many trials to run at once on this machine: ``asked``, but no more than its cores allow
    (``cpus_each`` per trial), than trials are left to run, and than its free memory holds (about
    :data:`WORKER_GIB` per worker process). Says so in one line when it starts fewer (issue 22 F7:
    64 workers on 2 cores for 4 trials finished nothing in 3 minutes and ran the memory low)."""
    limits = {
        f"{machine_cores()} CPU cores" + (f" at {cpus_each:g} per trial" if cpus_each != 1 else ""): int(machine_cores() // cpus_each),
        f"{trials_left} trials left to run": trials_left,
        f"{_available_gib():.1f} GiB of memory available, about {WORKER_GIB:g} per worker": int(_available_gib() // WORKER_GIB),
    }
    n = max(1, min(asked, *limits.values()))
    if n < asked:
        log.warning("%s %d: running %d at once (%s)", what, asked, n, "; ".join(k for k, v in limits.items() if v < asked))
    return n

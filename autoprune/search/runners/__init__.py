"""Runners: how a search's trials get executed.

A runner takes a ``SearchJob`` (plain, picklable settings) and the open study, and runs
trials until the study counts ``job.total`` complete or stopped-early trials (or the
deadline passes), calling ``update()`` whenever trials may have finished: the driver then
records them. Everything else (storage, objective, recording) is shared.

Each runner is one module of this package defining ``RUNNER``, a ``Runner`` subclass;
``search.backend: <module name>`` selects it. Adding a runner is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional

from autoprune.errors import ConfigError

__all__ = ["SearchJob", "Runner", "runner_names", "get_runner"]


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


class Runner:
    """The interface of a runner (subclass it in a new module of this package)."""

    name: ClassVar[str] = ""

    def check(self, job_config: Any, storage: str) -> None:
        """Refuse bad settings before any training (for example an unreachable cluster). Default: nothing."""

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        """Run trials until the study reaches ``job.total`` (or the deadline).

        ``update()`` records finished trials and returns the status (``done``, ``total``, ...).
        A KeyboardInterrupt propagates to the caller, which marks running trials failed.
        """
        raise NotImplementedError


def runner_names() -> List[str]:
    """The runners this installation has (module names of this package); imports none of them."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_runner(name: str) -> Runner:
    """A runner instance by name.

    Raises:
        ValueError: no runner of that name.
    """
    if name not in runner_names():
        raise ValueError(f"unknown search backend {name!r}; valid: {', '.join(runner_names())}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as err:  # a runner whose engine is an optional extra (ray: the 'cluster' extra)

        raise ConfigError(f"search.backend {name}: {err}; install what it needs, e.g. pip install -c constraints.txt -e '.[cluster]'") from None
    return module.RUNNER()

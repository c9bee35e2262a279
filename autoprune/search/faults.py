"""How a search survives failing trials and dying parents (signals: :mod:`autoprune.search.interrupts`).

* **Failing trials.** :class:`FailureWatch` prints one line per failed trial (the
  traceback only at debug level), and stops the search after
  ``search.max_consecutive_failures`` failures in a row (failed trials do not count toward
  ``trials``, so a search whose every trial fails would otherwise never end).
* **Workers** die with their parent (``die_with_parent``): a killed driver leaves no
  orphan writing to the study.
* **The machine or a server failing** (a full or read-only disk, a database or an MLflow server
  gone): :func:`environment_failure` says it in one line, which the CLI prints instead of the
  chain of tracebacks the libraries raise; what was recorded stays, and the same command resumes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import signal
from typing import Any, Iterator, List, Optional

from autoprune.errors import TrialError
from autoprune.search import attrs
from autoprune.services.urls import shown

__all__ = ["TooManyFailures", "FailureWatch", "die_with_parent", "kill_with_parent", "first_line", "environment_failure"]

log = logging.getLogger(__name__)


class TooManyFailures(TrialError):
    """The search stopped: too many trials in a row failed."""


def first_line(text: str, limit: int = 300) -> str:
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class FailureWatch:
    """Reports failed trials (one line each) and counts failures in a row.

    Args:
        limit: stop after this many consecutive failed trials (``search.max_consecutive_failures``).
        since: only trials that finished after this ``datetime`` count (not those of earlier, interrupted runs).
    """

    def __init__(self, limit: int, since: Any = None, study: str = "STUDY") -> None:
        self.limit = limit
        self.study = study
        self.since = since
        self.reported: set[int] = set()

    def _recent(self, trials: List[Any]) -> List[Any]:
        done = [t for t in trials if t.state.is_finished() and t.datetime_complete is not None]
        if self.since is not None:
            done = [t for t in done if t.datetime_complete >= self.since]
        return sorted(done, key=lambda t: (t.datetime_complete, t.number))

    def update(self, trials: List[Any]) -> None:
        """Print new failures; raise :class:`TooManyFailures` when the last ``limit`` finished trials all failed.

        Raises:
            TooManyFailures: names the count, the limit's key and the last trial's error.
        """
        recent = self._recent(trials)
        for t in recent:
            if t.state.name == "FAIL" and t.number not in self.reported:
                self.reported.add(t.number)
                error = t.user_attrs.get(attrs.ERROR) or "no error recorded (the trial process died?)"
                log.warning("trial %d failed: %s", t.number, first_line(error))
                tb = t.user_attrs.get(attrs.TRACEBACK)
                if tb:
                    log.debug("trial %d traceback:\n%s", t.number, tb)
        streak: List[Any] = []
        for t in reversed(recent):
            if t.state.name != "FAIL":
                break
            streak.append(t)
        if len(streak) >= self.limit:
            last = streak[0]
            error = first_line(last.user_attrs.get(attrs.ERROR) or "no error recorded")
            raise TooManyFailures(
                f"search stopped: the last {len(streak)} trials all failed (search.max_consecutive_failures={self.limit}); "
                f"last error (trial {last.number}): {error}; `autoprune pareto {self.study} --all` lists every trial's reason"
            )


def kill_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where it cannot (not Linux).

    The request survives ``exec``: as ``preexec_fn`` of ``subprocess.Popen`` it binds a command to its starter.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return False
    return True


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned workers); no-op elsewhere."""
    if not kill_with_parent():
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


#: errors of the machine, not of autoprune or its input
_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    link: Optional[BaseException] = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def environment_failure(err: BaseException) -> Optional[str]:
    """One line saying what failed when ``err`` (or an error it was raised from) means the machine or a server
    failed under autoprune: a disk full or read-only, no permission, a database or an MLflow server gone
    (MLflow's own message after its retries); None otherwise. Passwords are hidden."""
    # imported here: the CLI imports this module at start (through interrupts), and `autoprune --help` must not load SQLAlchemy
    import requests

    from autoprune.services.databases import database_failure

    for link in _chain(err):
        if isinstance(link, OSError) and link.errno in _ERRNOS:
            where = f" ({link.filename})" if link.filename else ""
            return f"{os.strerror(link.errno).lower()}{where}"
    failed = database_failure(err)
    if failed is not None:
        return f"the database failed: {failed}"
    for link in _chain(err):
        text = str(link)
        if isinstance(link, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) or ("API request to" in text and "failed with exception" in text):
            return f"lost the MLflow tracking server ({first_line(shown(text), 240)})"
        if "database or disk is full" in text or "readonly database" in text:
            return f"the MLflow store failed: {first_line(text, 200)}"
    return None

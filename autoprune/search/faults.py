"""How a search survives faults: signals, failing trials, dying parents.

* **Signals.** Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)`` and
  only notes a SIGTERM, so neither reaches the search as such. ``interrupt_handlers``
  installs SIGINT/SIGTERM handlers that raise :class:`SearchInterrupted`, a
  ``BaseException`` that Lightning re-raises unchanged and Optuna does not catch: the
  search then marks the running trial failed, ends the MLflow parent run KILLED, and the
  CLI exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Inside
  ``deferred()`` (the MLflow sync) a signal waits until the block ends, so no record is
  left half-written.
* **Failing trials.** :class:`FailureWatch` prints one line per failed trial (the
  traceback only at debug level), and stops the search after
  ``search.max_consecutive_failures`` failures in a row (failed trials do not count toward
  ``trials``, so a search whose every trial fails would otherwise never end).
* **Workers** die with their parent (``die_with_parent``): a killed driver leaves no
  orphan writing to the study.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional

from autoprune.errors import TrialError

__all__ = [
    "SearchInterrupted",
    "SearchStopped",
    "TooManyFailures",
    "interrupt_handlers",
    "deferred",
    "hold_signals",
    "release_signals",
    "FailureWatch",
    "quiet_optuna_failures",
    "die_with_parent",
    "ERROR_ATTR",
    "TRACEBACK_ATTR",
]

log = logging.getLogger(__name__)

ERROR_ATTR = "autoprune.error"
TRACEBACK_ATTR = "autoprune.traceback"

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _BySignal:
    signum: int

    @property
    def signal_name(self) -> str:
        return _signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class SearchInterrupted(_BySignal, BaseException):
    """Raised by the signal handler. A BaseException: Lightning and Optuna pass it through untouched."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {_signal_name(signum)}")
        self.signum = signum


class SearchStopped(_BySignal, KeyboardInterrupt):
    """What ``run_search`` raises after an interrupted search was cleaned up (carries the summary).

    A KeyboardInterrupt, so callers that caught Ctrl-C before keep working.
    """

    def __init__(self, summary: Any, signum: int = signal.SIGINT, marked: int = 0) -> None:
        super().__init__(summary)
        self.summary = summary
        self.signum = signum
        self.marked = marked  # running trials marked failed


class TooManyFailures(TrialError):
    """The search stopped: too many trials in a row failed."""


class _State:
    def __init__(self) -> None:
        self.received: Optional[int] = None  # first signal of this search
        self.defer_depth = 0
        self.pending: Optional[int] = None


_state = _State()


def _handler(signum: int, frame: Any) -> None:
    if _state.received is not None:
        return  # cleaning up after the first signal: let it finish
    if _state.defer_depth > 0:
        _state.pending = signum
        return
    _state.received = signum
    raise SearchInterrupted(signum)


@contextlib.contextmanager
def interrupt_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`SearchInterrupted` inside this block (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _HANDLED}
    _state.received = None
    _state.pending = None
    _state.defer_depth = 0
    for s in _HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def hold_signals() -> None:
    """From now on a signal waits (see ``release_signals``); pairs nest."""
    _state.defer_depth += 1


def release_signals() -> None:
    """End a ``hold_signals``; raise :class:`SearchInterrupted` for a signal that arrived meanwhile."""
    _state.defer_depth -= 1
    if _state.defer_depth == 0 and _state.pending is not None and _state.received is None:
        signum, _state.pending = _state.pending, None
        _state.received = signum
        raise SearchInterrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving inside this block is raised when the block ends (so writes finish)."""
    hold_signals()
    try:
        yield
    finally:
        release_signals()


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
                error = t.user_attrs.get(ERROR_ATTR) or "no error recorded (the trial process died?)"
                log.warning("trial %d failed: %s", t.number, first_line(error))
                tb = t.user_attrs.get(TRACEBACK_ATTR)
                if tb:
                    log.debug("trial %d traceback:\n%s", t.number, tb)
        streak: List[Any] = []
        for t in reversed(recent):
            if t.state.name != "FAIL":
                break
            streak.append(t)
        if len(streak) >= self.limit:
            last = streak[0]
            error = first_line(last.user_attrs.get(ERROR_ATTR) or "no error recorded")
            raise TooManyFailures(
                f"search stopped: the last {len(streak)} trials all failed (search.max_consecutive_failures={self.limit}); "
                f"last error (trial {last.number}): {error}; `autoprune pareto {self.study} --all` lists every trial's reason"
            )


def trial_error_attrs(err: BaseException) -> Dict[str, str]:
    """The user attributes recording why a trial failed: one line, and the traceback for --debug."""
    import traceback

    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {ERROR_ATTR: f"{type(err).__name__}: {err}"[:2000], TRACEBACK_ATTR: tb[-8000:]}


class _DropFailedTrialLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and str(record.msg).startswith("Trial ") and " failed" in str(record.msg))


_FILTER = _DropFailedTrialLogs()


def quiet_optuna_failures() -> None:
    """Drop Optuna's own per-trial failure warning (a full traceback each): FailureWatch prints one line instead."""
    logger = logging.getLogger("optuna.study._optimize")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned workers); no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)

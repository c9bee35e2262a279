"""One interrupt mechanism: :class:`SignalScope` owns SIGINT and SIGTERM, and :class:`Ending`
maps each way a search can end to what is recorded and to the exit code.

Lightning turns a KeyboardInterrupt inside ``fit`` into ``sys.exit(1)`` and only notes a
SIGTERM, so neither reaches the search as such. Inside a :class:`SignalScope` both signals
raise :class:`SearchInterrupted`, a ``BaseException`` that Lightning re-raises unchanged and
Optuna does not catch; inside ``scope.deferred()`` (an MLflow sync, the parent run's
creation) a signal waits until the block ends, so no record is left half-written. A signal
can surface as another exception when it lands inside Ray's Cython code or Optuna's journal
lock (seen: a ``SystemError`` from ``CoreWorker.wait`` with the interrupt as its cause, a
``FileNotFoundError`` raised while handling it): :func:`as_interrupt` finds it in the chain.

The CLI exits with :func:`exit_code`: 0 done, 2 a refused input or setting, or the disk or a server
failing under the command (one line), 128 + the signal number when interrupted (130 for SIGINT,
143 for SIGTERM), 1 a bug (traceback).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import Any, ContextManager, Iterator, Optional

from autoprune.errors import AutopruneError
from autoprune.search.faults import TooManyFailures, environment_failure

__all__ = ["SearchInterrupted", "SearchStopped", "SignalScope", "Ending", "as_interrupt", "exit_code", "signal_name"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _BySignal:
    signum: int

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class SearchInterrupted(_BySignal, BaseException):
    """Raised by the signal handler. A BaseException: Lightning and Optuna pass it through untouched."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
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


class SignalScope:
    """SIGINT and SIGTERM raise :class:`SearchInterrupted` inside this block (main thread only; elsewhere a no-op).

    Args:
        ignore_sigint: a worker process: Ctrl-C reaches the whole process group, the driver decides
            and terminates the workers (SIGTERM), so the worker ignores SIGINT.
    """

    #: the scope now owning this process's signals (signal handlers are per process)
    active: Optional["SignalScope"] = None

    def __init__(self, ignore_sigint: bool = False) -> None:
        self.ignore_sigint = ignore_sigint
        self.received: Optional[int] = None  # the first signal
        self._pending: Optional[int] = None
        self._depth = 0
        self._previous: dict = {}
        self._active = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            return  # cleaning up after the first signal: let it finish
        if self._depth > 0:
            self._pending = signum
            return
        self.received = signum
        raise SearchInterrupted(signum)

    def __enter__(self) -> "SignalScope":
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            self._previous = {s: signal.getsignal(s) for s in _HANDLED}
            for s in _HANDLED:
                signal.signal(s, self._handler)
            if self.ignore_sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            SignalScope.active = self
        return self

    @classmethod
    def take_back(cls) -> None:
        """The active scope takes the signals back after a library installed handlers of its own (``ray.init``)."""
        scope = cls.active
        if scope is not None and scope._active:
            for s in _HANDLED:
                signal.signal(s, scope._handler)
            if scope.ignore_sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    @classmethod
    def relay(cls, signum: int) -> None:
        """Raise, as the active scope's own, a signal a library's handler caught in its place (``ray.init``
        briefly installs one that exits with the signal's number).

        Raises:
            SearchInterrupted: always.
        """
        scope = cls.active
        if scope is not None and scope.received is None:
            scope.received = signum
        raise SearchInterrupted(signum)

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        if self._active:
            for s, h in self._previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            SignalScope.active = None
        if exc is not None and not isinstance(exc, SearchInterrupted):
            found = as_interrupt(exc)
            if found is not None:
                raise found from None
        return False

    @classmethod
    def held(cls) -> ContextManager[None]:
        """The active scope's :meth:`deferred` in its own (main) thread, else a no-op: for code that does
        not own the scope but writes a record a signal must not cut in half (the Ray driver's tells)."""
        scope = cls.active
        if scope is None or not scope._active or threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()
        return scope.deferred()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal arriving inside this block is raised when the block ends (so writes finish)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._pending is not None and self.received is None:
                signum, self._pending = self._pending, None
                self.received = signum
                raise SearchInterrupted(signum)


def as_interrupt(err: BaseException) -> Optional[SearchInterrupted]:
    """The interrupt ``err`` is, or was raised while handling (its cause / context chain), else None."""
    seen, link = set(), err
    while link is not None and id(link) not in seen:
        if isinstance(link, SearchInterrupted):
            return link
        if isinstance(link, SystemExit):
            return None  # a deliberate exit (a worker leaving with the interrupt's exit code) stays one
        seen.add(id(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return None


@dataclass(frozen=True)
class Ending:
    """How a search ended: ``finished``, ``interrupted`` (by signal ``signum``; None: a KeyboardInterrupt
    raised in the process), ``too_many_failures`` or ``failed``."""

    kind: str
    signum: Optional[int] = None

    @classmethod
    def of(cls, err: Optional[BaseException]) -> "Ending":
        """The ending an exception that left the search means (None: finished)."""
        if err is None:
            return cls("finished")
        found = as_interrupt(err)
        if found is not None:
            return cls("interrupted", found.signum)
        if isinstance(err, KeyboardInterrupt):
            return cls("interrupted", getattr(err, "signum", None))
        if isinstance(err, TooManyFailures):
            return cls("too_many_failures")
        return cls("failed")

    @property
    def interrupted(self) -> bool:
        return self.kind == "interrupted"

    @property
    def parent_status(self) -> str:
        """The MLflow parent run's final status."""
        return {"finished": "FINISHED", "interrupted": "KILLED"}.get(self.kind, "FAILED")

    @property
    def exit_code(self) -> int:
        return {"finished": 0, "interrupted": 128 + (self.signum or signal.SIGINT)}.get(self.kind, 1)

    @property
    def stale_reason(self) -> str:
        """Why trials still running at this ending are marked failed."""
        if self.interrupted:
            if self.signum is not None:
                return f"interrupted by {signal_name(self.signum)}: the search was stopped during this trial"
            return "interrupted: the search process stopped during this trial"
        if self.kind == "too_many_failures":
            return "stopped: the search stopped after too many consecutive failed trials"
        return "stopped: the search process failed"


def exit_code(err: BaseException) -> int:
    """The CLI's exit code for an exception that ended a command."""
    found = as_interrupt(err)
    if found is not None:
        return found.exit_code
    if isinstance(err, KeyboardInterrupt):
        return int(getattr(err, "exit_code", 130))
    if isinstance(err, AutopruneError) or (isinstance(err, Exception) and environment_failure(err) is not None):
        return 2
    return 1

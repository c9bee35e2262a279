"""Search progress for people: a live bar on a terminal, plain lines elsewhere, nothing with ``-q``.

:class:`SearchProgress` is the ``progress`` callback ``run_search`` calls with a status
dict after each finished trial (``done``, ``total``, ``front``, ``failed`` and, when
there is one, ``best``: the most accurate front model within the budget). On a terminal
it draws a tqdm bar that a timer keeps ticking between trials (elapsed time and ETA
move while a trial trains); otherwise it logs one line per change, so logs and CI
output stay readable.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Dict, Optional, TextIO

__all__ = ["SearchProgress", "describe_best", "format_eta"]

log = logging.getLogger("autoprune")


def format_eta(seconds: Optional[float]) -> str:
    """``1h02m``, ``3m05s``, ``42s`` or ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe_best(status: Dict[str, Any]) -> str:
    """The best model within the budget so far, in a few words."""
    best = status.get("best")
    if best:
        size = f", {best['size_ratio'] * 100:.1f} % of dense" if best.get("size_ratio") else ""
        return f"best trial {best['trial']} (val {best['val_accuracy']:.4f}{size})"
    if status.get("best_val_accuracy") is not None:
        return f"best val {status['best_val_accuracy']:.4f}"
    return "best -"


class SearchProgress:
    """Callable progress display for ``run_search``.

    Args:
        total: trials the search runs to (complete + stopped early, earlier runs included).
        study: the study name (the bar's label).
        quiet: show nothing.
        stream: where to draw (default stderr); a bar only when it is a terminal.
        refresh_s: how often the bar redraws between trials.
    """

    def __init__(self, total: int, study: str, quiet: bool = False, stream: Optional[TextIO] = None, refresh_s: float = 1.0) -> None:
        self.total = total
        self.study = study
        self.stream = stream or sys.stderr
        self.mode = "off" if quiet else ("bar" if _isatty(self.stream) else "lines")
        self._first: Optional[tuple] = None  # (time, done) of the first status: ETA counts this run's pace only
        self._last: Dict[str, Any] = {}
        self._bar: Any = None
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        self._refresh_s = refresh_s
        self._redirect: Any = None

    def _start_bar(self) -> None:
        """The bar appears with the first status (trials about to run), after the setup's log lines."""
        if self.mode == "bar" and self._bar is None:
            from tqdm import tqdm

            width = _columns(self.stream)  # a pty without a size (script, some CI) reports 0 columns: draw 100 wide
            self._bar = tqdm(
                total=self.total, desc=f"search {self.study}", unit="trial", file=self.stream, dynamic_ncols=width > 0, ncols=None if width > 0 else 100, nrows=None if width > 0 else 24,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )
            from tqdm.contrib.logging import logging_redirect_tqdm

            # log lines (a failed trial, a warning) print above the bar instead of through it
            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()], tqdm_class=tqdm)
            self._redirect.__enter__()
            self._ticker = threading.Thread(target=self._tick, args=(self._refresh_s,), name="autoprune-progress", daemon=True)
            self._ticker.start()

    def eta_s(self, done: int) -> Optional[float]:
        """Seconds left at this run's pace so far (None before the first trial of this run finished)."""
        if self._first is None:
            return None
        t0, d0 = self._first
        if done <= d0:
            return None
        per_trial = (time.time() - t0) / (done - d0)
        return max(0.0, per_trial * (self.total - done))

    def text(self, status: Dict[str, Any]) -> str:
        failed = f", failed {status['failed']}" if status.get("failed") else ""
        return f"front {status.get('front', 0)}, {describe_best(status)}{failed}, ETA {format_eta(self.eta_s(status.get('done', 0)))}"

    def __call__(self, status: Dict[str, Any]) -> None:
        if self._first is None:
            self._first = (time.time(), status.get("done", 0))
        self._last = dict(status)
        self._start_bar()
        if self.mode == "bar":
            self._bar.n = status.get("done", 0)
            self._bar.set_postfix_str(self.text(status), refresh=True)
        elif self.mode == "lines":
            log.info("trials %d/%d  %s", status.get("done", 0), status.get("total", self.total), self.text(status))

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            if self._last:
                self._bar.set_postfix_str(self.text(self._last), refresh=True)  # elapsed and ETA move between trials

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._bar is not None:
            self._bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def __enter__(self) -> "SearchProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _columns(stream: Any) -> int:
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0

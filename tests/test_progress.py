"""Search progress: a live bar on a terminal, plain lines elsewhere, nothing when quiet."""

from __future__ import annotations

import io
import logging
import time

from autoprune.progress import SearchProgress, describe_best, format_eta

STATUS = {"done": 2, "total": 10, "front": 2, "failed": 1, "best_val_accuracy": 0.95, "best": {"trial": 3, "val_accuracy": 0.95, "size_ratio": 0.214}}


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_shows_trials_front_best_and_eta():
    out = _Tty()
    bar = SearchProgress(10, "s", stream=out, refresh_s=0.05)
    assert bar.mode == "bar"
    bar({**STATUS, "done": 0})
    time.sleep(0.1)
    bar(STATUS)
    time.sleep(0.15)  # the timer redraws between trials
    bar.close()
    text = out.getvalue()
    assert "search s" in text and "2/10" in text
    assert "front 2, best trial 3 (val 0.9500, 21.4 % of dense), failed 1, ETA " in text
    assert "ETA ?" not in text.rsplit("\r", 1)[-1]  # known after the first trial of this run
    assert text.count("\r") >= 3


def test_plain_lines_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    bar = SearchProgress(10, "s", stream=io.StringIO())
    assert bar.mode == "lines"
    bar({**STATUS, "done": 0, "front": 0, "best": None, "best_val_accuracy": None, "failed": 0})
    bar(STATUS)
    bar.close()
    assert [r.getMessage() for r in caplog.records] == [
        "trials 0/10  front 0, best -, ETA ?",
        f"trials 2/10  front 2, best trial 3 (val 0.9500, 21.4 % of dense), failed 1, ETA {format_eta(bar.eta_s(2))}",
    ]


def test_quiet_shows_nothing(caplog):
    caplog.set_level(logging.INFO, logger="autoprune")
    out = _Tty()
    bar = SearchProgress(10, "s", quiet=True, stream=out)
    bar(STATUS)
    bar.close()
    assert out.getvalue() == "" and not caplog.records


def test_eta_and_best_text():
    assert [format_eta(s) for s in (None, 42, 185, 3720)] == ["?", "42s", "3m05s", "1h02m"]
    assert describe_best({"best_val_accuracy": 0.9}) == "best val 0.9000"
    bar = SearchProgress(10, "s", quiet=True)
    bar({"done": 4})
    bar._first = (time.time() - 20, 4)
    assert 39 <= bar.eta_s(6) <= 41  # 2 trials in 20 s: 10 s a trial, 4 left

"""The Ray driver's Ctrl-C stays an interrupt (exit 130) when it lands inside Ray's Cython code."""

from __future__ import annotations

import signal

import pytest

pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")

from autoprune.search.interrupts import SearchInterrupted  # noqa: E402
from autoprune.search.runners.ray import _fit  # noqa: E402


class _Tuner:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def fit(self) -> None:
        raise self.error


def _as_cython_wait_raises(cause: BaseException) -> SystemError:
    # what Python makes of our signal handler's exception raised inside CoreWorker.wait (seen in the Ctrl-C test)
    try:
        try:
            raise cause
        except BaseException as inner:
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from inner
    except SystemError as err:
        return err


def test_an_interrupt_inside_ray_code_is_raised_as_the_interrupt():
    with pytest.raises(SearchInterrupted) as info:
        _fit(_Tuner(_as_cython_wait_raises(SearchInterrupted(signal.SIGINT))))
    assert info.value.exit_code == 130


def test_an_error_while_handling_the_interrupt_is_the_interrupt():
    # the signal inside Optuna's journal lock release: its cleanup then raised FileNotFoundError
    try:
        try:
            raise SearchInterrupted(signal.SIGTERM)
        except BaseException:
            raise FileNotFoundError("optuna.journal.lock...rename")
    except FileNotFoundError as err:
        error = err
    with pytest.raises(SearchInterrupted) as info:
        _fit(_Tuner(error))
    assert info.value.exit_code == 143


def test_other_errors_pass_unchanged():
    with pytest.raises(SystemError):
        _fit(_Tuner(_as_cython_wait_raises(ValueError("not an interrupt"))))
    with pytest.raises(SystemError):
        _fit(_Tuner(SystemError("no cause")))

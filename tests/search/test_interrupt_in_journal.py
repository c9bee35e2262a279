"""A Ctrl-C that lands inside Optuna's journal lock must end the search as an interrupt.

Seen in CI: the Ray driver got SIGINT while telling a finished trial. Our handler raised
``SearchInterrupted`` inside ``JournalFileSymlinkLock.release``, whose ``except BaseException``
then failed on its own ``os.unlink`` with a ``FileNotFoundError``; ``run_and_tell`` recorded that
as the trial's failure, the interrupt was gone, and the search ran to its end (exit 0, not 130).
"""

import os
import signal
import threading
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autoprune.search.interrupts import SearchInterrupted, SignalScope
from autoprune.search.storage import HeldJournalFile, Storage
from autoprune.search.tell import run_and_tell

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(tmp_path):
    return optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal"))))


def test_an_interrupt_inside_the_journal_lock_is_raised_as_the_interrupt(tmp_path, monkeypatch):
    study = _study(tmp_path)
    trial = study.ask()
    real_rename = os.rename

    def rename_hit_by_a_signal(src, dst):  # the handler runs at this point of Optuna's release()
        if str(src).endswith(".lock"):
            monkeypatch.setattr(os, "rename", real_rename)  # once
            raise SearchInterrupted(signal.SIGINT)
        return real_rename(src, dst)

    def compute():
        monkeypatch.setattr(os, "rename", rename_hit_by_a_signal)
        trial.set_user_attr("autoprune.node", "n1")  # a journal write, as record_result's
        return 1.0

    with pytest.raises(SearchInterrupted) as info:
        run_and_tell(study, trial, compute)
    assert info.value.signum == signal.SIGINT
    # not told FAIL with a FileNotFoundError: still RUNNING, for the driver to mark with the signal's name
    assert study.get_trials(deepcopy=False)[0].state == TrialState.RUNNING


def test_other_errors_still_fail_the_trial(tmp_path):
    study = _study(tmp_path)
    trial = study.ask()
    assert run_and_tell(study, trial, lambda: (_ for _ in ()).throw(FileNotFoundError("missing.csv"))) == TrialState.FAIL
    assert "FileNotFoundError" in study.get_trials(deepcopy=False)[0].user_attrs["autoprune.error"]


def test_held_defers_a_signal_until_the_write_is_done(tmp_path):
    study = _study(tmp_path)
    with pytest.raises(SearchInterrupted):
        with SignalScope():
            with SignalScope.held():
                os.kill(os.getpid(), signal.SIGINT)  # delivered here, raised only when the block ends
                trial = study.ask()
                study.tell(trial, 0.5)
            pytest.fail("the held signal was not raised when the block ended")
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE]
    assert not (tmp_path / "optuna.journal.lock").exists()


def test_held_outside_a_scope_is_a_no_op():
    with SignalScope.held():
        pass
    assert SignalScope.active is None


def test_a_signal_while_waiting_for_the_journal_lock_waits_for_the_record(tmp_path):
    """The study's own journal storage holds signals while it appends: a worker told to stop (SIGTERM) while it
    waits for the lock another process holds leaves that lock alone (Optuna's acquire() removes it on an
    exception raised as it tries the lock) and writes its record before the signal ends it (without the
    hold, the record is lost)."""
    storage = Storage.parse(str(tmp_path / "optuna.journal")).open()
    assert isinstance(storage._backend, HeldJournalFile)
    study = optuna.create_study(study_name="s", storage=storage)
    lock = tmp_path / "optuna.journal.lock"
    os.symlink(tmp_path / "optuna.journal", lock)  # another process holds the lock

    still_held = []

    def other_process_releases():
        time.sleep(0.5)
        still_held.append(lock.is_symlink())
        if lock.is_symlink():
            lock.unlink()

    threading.Thread(target=other_process_releases, daemon=True).start()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()  # arrives while the append waits
    with pytest.raises(SearchInterrupted) as info:
        with SignalScope():
            study.ask()  # waits for the lock; the signal is held, raised once the record is appended
            pytest.fail("the held signal was not raised after the append")
    assert info.value.signum == signal.SIGTERM
    time.sleep(0.6)
    assert still_held == [True]  # the waiting process did not remove the lock it did not hold
    assert len(study.get_trials(deepcopy=False)) == 1  # the trial's record was written
    assert not lock.exists()

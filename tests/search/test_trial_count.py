"""`--trials N` with several local workers ends with exactly N counted trials (not N + 1).

The workers are threads here, each with its own handle on one journal file (as the spawned worker
processes have), running the local runner's own optimize loop with a fast fake objective."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.search.claim import TotalReached, claim, counts_toward_total
from autoprune.search.runners import SearchJob
from autoprune.search.runners import local as objective_module  # the local runner builds its objective from here
from autoprune.search.runners.local import _optimize
from autoprune.search.storage import storage_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(journal):
    return optuna.create_study(study_name="count", storage=storage_for(str(journal)), load_if_exists=True)


def _counted(study) -> int:
    return len(study.get_trials(deepcopy=False, states=counts_toward_total()))


def test_a_claim_is_refused_while_running_trials_can_reach_the_total(tmp_path):
    journal, lock = tmp_path / "count" / "optuna.journal", tmp_path / "count" / "ask.lock"
    journal.parent.mkdir()
    mine, other = _study(journal), _study(journal)
    for _ in range(2):
        other.tell(other.ask(), 1.0)
    running = other.ask()  # the other worker's trial: it may complete the total of 3
    with pytest.raises(TotalReached):
        claim(mine, 3, lock)
    other.tell(running, state=TrialState.FAIL)  # it failed: a trial is needed again
    assert claim(mine, 3, lock).number == 3


@pytest.mark.parametrize("failing", [(), (2, 5)])
def test_two_workers_end_with_exactly_the_total(tmp_path, monkeypatch, failing):
    total = 8

    def fake_objective(config, runs_dir, dense_arch):
        def objective(trial):
            # the workers run at different speeds: one is always mid-trial when the other finishes one
            time.sleep(0.05 if threading.current_thread().name == "fast" else 0.13)
            if trial.number in failing:
                raise RuntimeError("this trial failed")  # failures do not count and get replaced
            return 1.0

        return objective

    monkeypatch.setattr(objective_module, "make_objective", fake_objective)
    journal = tmp_path / "count" / "optuna.journal"
    journal.parent.mkdir()
    _study(journal)
    job = SearchJob(SimpleNamespace(study="count"), str(tmp_path), str(journal), total, {}, None)
    errors = []

    def worker():
        try:
            _optimize(_study(journal), job, [])
        except BaseException as err:  # pragma: no cover - shown by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker, name=name) for name in ("fast", "slow")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = _study(journal)
    assert not errors
    assert _counted(study) == total
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

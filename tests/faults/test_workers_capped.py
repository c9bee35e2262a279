"""Issue 22 F7: ``--workers 64`` on a small machine for a 4-trial study started 64 processes, none of which
finished a trial in 3 minutes, and ran the memory low. The workers are capped at what the machine's cores,
its free memory and the trials left allow, and the search says so in one line."""

from __future__ import annotations

import logging

import pytest

from autoprune.search import runners
from autoprune.search.runners import capped_workers

from .conftest import load_study, run_cli, study_yaml

pytestmark = pytest.mark.faults


@pytest.fixture
def machine(monkeypatch):
    """A machine of 2 cores and 8 GiB free."""
    monkeypatch.setattr(runners, "machine_cores", lambda: 2)
    monkeypatch.setattr(runners, "_available_gib", lambda: 8.0)


def test_the_workers_are_capped_by_cores_trials_and_memory(machine, caplog):
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        assert capped_workers(64, 4, "search.workers / --workers") == 2
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("search.workers / --workers 64: running 2 at once (") and "2 CPU cores" in line and "4 trials left to run" in line
    assert "8.0 GiB of memory available" in line
    caplog.clear()
    assert capped_workers(64, 1, "w") == 1  # one trial left: one worker
    assert capped_workers(2, 10, "w") == 2 and capped_workers(1, 0, "w") == 1
    assert capped_workers(8, 10, "c", cpus_each=0.25) == 8  # Ray: fractional CPUs per trial fit 8 on 2 cores
    expected = "w 64: running 1 at once (2 CPU cores; 1 trials left to run; 8.0 GiB of memory available, about 1 per worker)"
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_memory_caps_too(monkeypatch):
    monkeypatch.setattr(runners, "machine_cores", lambda: 64)
    monkeypatch.setattr(runners, "_available_gib", lambda: 3.5)
    assert capped_workers(16, 100, "w") == 3


@pytest.mark.slow
def test_workers_64_for_4_trials(work):
    cfg = study_yaml(work / "s.yaml", search={"trials": 4, "population_size": 4, "finetune": {"epochs": [2, 2]}, "early_stop": {"after_epochs": None}})
    res = run_cli(["--runs-dir", "runs", "search", str(cfg), "--workers", "64"], work, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if "--workers 64: running" in ln]
    assert len(lines) == 1, res.stderr[-3000:]
    started = int(lines[0].split("running ")[1].split()[0])
    assert 1 <= started <= min(4, runners.machine_cores())
    study = load_study(work / "runs")
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4
    assert len({t.user_attrs["autoprune.driver"] for t in done}) <= started  # no more processes ran trials than were started

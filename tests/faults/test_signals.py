"""Cases 10 and 11: SIGINT / SIGTERM to a real ``autoprune search`` process, during a trial and
outside one, with one worker and with ``--workers 2``: a message, the trial FAIL, its MLflow
run ended, the parent run KILLED, exit 130 / 143, and the next search resumes."""

from __future__ import annotations

import signal

import pytest
from optuna.trial import TrialState

from .conftest import load_study, mlflow_runs, processes_in, run_cli, running_trials, start_cli, study_yaml, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: trials that take long enough (40 fine-tune epochs) for a signal to land inside one
SLOW_SEARCH = {"finetune": {"epochs": [40, 40]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A runs/ folder with the tiny dense model already trained (copied per test)."""
    root = tmp_path_factory.mktemp("signals")
    (root / "runs").mkdir()
    cfg = study_yaml(root / "tiny.yaml", search={**_search(), **SLOW_SEARCH})
    res = run_cli(["--runs-dir", "runs", "train", str(cfg), "-q"], root)
    assert res.returncode == 0, res.stderr
    return root


def _search() -> dict:
    from .conftest import TINY

    return dict(TINY["search"])


def _meta(runs) -> dict:
    import json

    try:
        return json.loads((runs / "tiny" / "search.json").read_text())
    except (OSError, ValueError):
        return {}


def _copy(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "runs", tmp_path / "runs")
    shutil.copy(trained / "tiny.yaml", tmp_path / "tiny.yaml")
    return tmp_path


# the two signals take the same path; each is sent once in-process (workers 1) and once to a driver with workers
@pytest.mark.parametrize("sig, code, workers", [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1), (signal.SIGTERM, 143, 2)])
def test_signal_during_a_trial(trained, tmp_path, sig, code, workers):
    work = _copy(trained, tmp_path)
    runs = work / "runs"
    proc = start_cli(["--runs-dir", "runs", "search", "tiny.yaml", "--workers", str(workers)], work)
    try:
        wait_for(lambda: running_trials(runs), 120, "a running trial")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (work / "stderr.log").read_text()
    assert proc.returncode == code, err[-2000:]
    assert f"interrupted by {sig.name}" in err and "run the same command again" in err
    assert "Traceback" not in err
    study = load_study(runs)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert TrialState.RUNNING not in states
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["autoprune.error"].startswith(f"interrupted by {sig.name}") for t in failed)
    parents, nested = mlflow_runs(runs)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(r.info.status != "RUNNING" for r in nested)
    assert sorted(int(r.data.tags["autoprune.trial"]) for r in nested if r.info.status == "FAILED") == sorted(t.number for t in failed)
    assert all(r.data.tags["autoprune.error"].startswith("interrupted") for r in nested if r.info.status == "FAILED")
    if workers > 1:  # the workers stopped with the driver
        assert processes_in(work) == []


def test_sigterm_outside_a_trial_ends_the_parent_run(trained, tmp_path):
    """As soon as the parent run exists (setup, the MLflow sync, between trials): it must still end KILLED."""
    work = _copy(trained, tmp_path)
    runs = work / "runs"
    proc = start_cli(["--runs-dir", "runs", "search", "tiny.yaml"], work)
    try:
        # search.json names the parent run once it exists (reading MLflow before that would race its table creation)
        wait_for(lambda: "mlflow_parent_run_id" in _meta(runs), 120, "the parent run")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (work / "stderr.log").read_text()
    assert proc.returncode == 143, err[-2000:]
    parents, nested = mlflow_runs(runs)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(r.info.status != "RUNNING" for r in nested)
    assert not running_trials(runs)


def test_signal_while_training_the_dense_model(tmp_path):
    """Before any study exists: exit 143 with a message, nothing left locked."""
    cfg = study_yaml(tmp_path / "tiny.yaml", train={"epochs": 2000})
    (tmp_path / "runs").mkdir()
    proc = start_cli(["--runs-dir", "runs", "search", "tiny.yaml"], tmp_path)
    try:
        wait_for(lambda: "Epoch" in (tmp_path / "stderr.log").read_text() or (tmp_path / "runs" / "tiny" / "search.lock").exists(), 120, "training")
        import time

        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny" / "search.json").exists()
    assert cfg.is_file()

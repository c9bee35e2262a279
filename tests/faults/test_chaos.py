"""The chaos run of issue 13: a 30-trial quickstart search with ``--workers 2``, SIGKILLed five
times at random moments and resumed each time (the driver alone, whose workers must die with it,
or the whole process group). At the end: no completed trial lost, nothing left RUNNING in Optuna
or MLflow, exactly one nested MLflow run per finished trial, the total reached, and the default
export works. Bounded: each leg and the final run have timeouts; the test stops by itself."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from .conftest import REPO, cli_env, load_study, mlflow_runs, processes_in, run_cli, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILLS = 5
TOTAL = 30
FINAL_TIMEOUT_S = 900


def _start(work, log):
    cmd = [sys.executable, "-m", "autoprune", "--runs-dir", "runs", "search", str(REPO / "search_spaces" / "quickstart.yaml"), "--workers", "2", "--trials", str(TOTAL), "-q"]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=open(log, "a"), env=cli_env(), start_new_session=True)


def _finished(runs) -> dict:
    """number -> (state, values) of every finished trial in the study (empty before the study exists)."""
    if not (runs / "quickstart" / "search.json").is_file():
        return {}
    try:
        trials = load_study(runs, "quickstart").get_trials(deepcopy=False)
    except Exception:  # the study is not created yet
        return {}
    return {t.number: (t.state, tuple(t.values or ())) for t in trials if t.state.is_finished()}


def _kill_targets(rng) -> list[int]:
    """How many trials must be finished before each kill: spread over the first two thirds of the
    search, so that a fast machine cannot finish it between kills (kills paced by wall time did)."""
    step = (2 * TOTAL // 3) // KILLS
    return [step * (k + 1) - rng.randint(0, step // 2) for k in range(KILLS)]


def _counted(runs) -> int:
    return sum(1 for state, _ in _finished(runs).values() if state in (TrialState.COMPLETE, TrialState.PRUNED))


def test_chaos_sigkill_five_times_then_resume(tmp_path):
    work = tmp_path
    runs = work / "runs"
    runs.mkdir()
    log = work / "search.log"
    rng = random.Random(13)
    seen: dict = {}
    for kill, target in enumerate(_kill_targets(rng)):
        proc = _start(work, log)
        try:
            # the first leg also trains the dense model; then a random moment inside the next trials
            wait_for(lambda: _counted(runs) >= target or proc.poll() is not None, 600, f"{target} finished trials", every=0.1)
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            if proc.poll() is None:
                if kill % 2:
                    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must die with it
                else:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group
            proc.wait(30)
        wait_for(lambda: processes_in(work) == [], 20, "the killed search's workers to exit")
        seen.update({n: s for n, s in _finished(runs).items() if s[0] in (TrialState.COMPLETE, TrialState.PRUNED)})
        assert len(seen) < TOTAL, f"the search finished before kill {kill + 1}: the trials are faster than the polling"

    final = _start(work, log)
    try:
        final.wait(FINAL_TIMEOUT_S)
    finally:
        if final.poll() is None:
            os.killpg(final.pid, signal.SIGKILL)
    assert final.returncode == 0, log.read_text()[-3000:]

    study = load_study(runs, "quickstart")
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    for number, (state, values) in seen.items():  # no completed trial lost
        assert by_number[number].state == state and tuple(by_number[number].values or ()) == values
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # exactly the total: every worker's ask claims a trial under a lock (autoprune/search/claim.py)
    assert counted == TOTAL
    parents, nested = mlflow_runs(runs, "quickstart")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not [r for r in nested if r.info.status == "RUNNING"]
    logged = sorted(int(r.data.tags["autoprune.trial"]) for r in nested)
    assert logged == sorted(t.number for t in trials if t.state.is_finished())  # exactly one nested run per trial
    res = run_cli(["--runs-dir", "runs", "export", "quickstart", "--format", "state_dict"], work, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]

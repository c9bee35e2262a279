"""Searches whose every trial fails (issue 13, case 1 and 'a failed trial's reason is invisible'):
one line per failed trial (the traceback only with --debug), the reason in `pareto --all` and as
an `autoprune.error` tag, and the search stops after search.max_consecutive_failures with its
parent run FAILED, instead of running forever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from .conftest import cli_env, load_study, mlflow_runs, run_cli, study_yaml

pytestmark = pytest.mark.faults

HERE = Path(__file__).parent
REASON = "ValueError: max_seq_len must be >= 1, got -3"


def _failing(args, cwd, debug=False):
    cmd = [sys.executable, str(HERE / "failing_cli.py"), *(["--debug"] if debug else []), "--runs-dir", "runs", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=cli_env())


@pytest.fixture(scope="module")
def failed_search(tmp_path_factory):
    work = tmp_path_factory.mktemp("failing")
    (work / "runs").mkdir()
    cfg = study_yaml(work / "s.yaml", search={"trials": 4, "max_consecutive_failures": 3, "warm_start": False})
    return work, cfg, _failing(["search", str(cfg)], work)


@pytest.mark.slow
def test_search_stops_after_consecutive_failures(failed_search):
    work, _, res = failed_search
    assert res.returncode == 2, res.stderr[-3000:]
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert err == [
        f"error: search stopped: the last 3 trials all failed (search.max_consecutive_failures=3); last error (trial 2): {REASON} "
        f"(a window length no sequence has); `autoprune pareto tiny --all` lists every trial's reason"
    ]
    study = load_study(work / "runs")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    parents, nested = mlflow_runs(work / "runs")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert sorted(int(r.data.tags["autoprune.trial"]) for r in nested) == [0, 1, 2]
    assert all(r.info.status == "FAILED" and r.data.tags["autoprune.error"].startswith(REASON) for r in nested)


@pytest.mark.slow
def test_one_line_per_failed_trial_and_no_traceback(failed_search):
    _, _, res = failed_search
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("trial ")]
    assert lines == [f"trial {n} failed: {REASON} (a window length no sequence has)" for n in range(3)]
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_reason_in_pareto_all(failed_search):
    work, _, _ = failed_search
    res = run_cli(["--runs-dir", "runs", "pareto", "tiny", "--all"], work)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.strip().splitlines()
    assert len(rows) == 3 and all("failed" in r and REASON in r for r in rows)


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "runs").mkdir()
    cfg = study_yaml(tmp_path / "s.yaml", search={"trials": 2, "max_consecutive_failures": 1, "warm_start": False})
    res = _failing(["search", str(cfg)], tmp_path, debug=True)
    assert "trial 0 failed: " + REASON in res.stderr
    assert "trial 0 traceback:\nTraceback (most recent call last):" in res.stderr and 'failing_cli.py", line' in res.stderr


def test_max_consecutive_failures_is_validated(tmp_path):
    cfg = study_yaml(tmp_path / "s.yaml", search={"max_consecutive_failures": 0})
    res = run_cli(["search", str(cfg)], tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {cfg}: search.max_consecutive_failures: Input should be greater than or equal to 1 (got 0)"


def test_a_success_resets_the_count():
    """Failures separated by a success never stop the search; a run of `limit` does."""
    from datetime import datetime, timedelta

    from autoprune.search.faults import FailureWatch, TooManyFailures

    class T:
        def __init__(self, n, state):
            self.number, self.state = n, TrialState[state]
            self.datetime_complete = datetime(2026, 1, 1) + timedelta(seconds=n)
            self.user_attrs = {"autoprune.error": f"E{n}"}

    watch = FailureWatch(3, study="s")
    watch.update([T(0, "FAIL"), T(1, "FAIL"), T(2, "COMPLETE"), T(3, "FAIL"), T(4, "FAIL"), T(5, "RUNNING")])
    with pytest.raises(TooManyFailures, match=r"last 3 trials all failed .* last error \(trial 6\): E6"):
        watch.update([T(0, "FAIL"), T(1, "FAIL"), T(2, "COMPLETE"), T(3, "FAIL"), T(4, "FAIL"), T(6, "FAIL")])
    old = FailureWatch(2, since=datetime(2026, 1, 1, 0, 0, 10), study="s")  # failures of an earlier run do not count
    old.update([T(0, "FAIL"), T(1, "FAIL"), T(11, "FAIL")])

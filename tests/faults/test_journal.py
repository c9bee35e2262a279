"""Case 12: a journal whose last record is torn (power loss, SIGKILL mid-write). The next search
detects it, keeps a backup, repairs, says so and continues; pareto and export keep working."""

from __future__ import annotations

import json
import os

import pytest

from autoprune.errors import TrialError
from autoprune.search.journal import repair_journal

from .conftest import load_study, run_cli, study_yaml

pytestmark = pytest.mark.faults

R1 = json.dumps({"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}, separators=(",", ":"))
R2 = json.dumps({"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_start": "2026-01-01T00:00:00"}, separators=(",", ":"))
R3 = json.dumps({"op_code": 6, "worker_id": "b", "trial_id": 0, "state": 1, "values": [0.5, 10.0]}, separators=(",", ":"))


def test_clean_journal_is_left_alone(tmp_path):
    path = tmp_path / "j"
    path.write_text(f"{R1}\n{R2}\n")
    report = repair_journal(path)
    assert not report.repaired and path.read_text() == f"{R1}\n{R2}\n" and list(tmp_path.iterdir()) == [path]


def test_torn_tail_is_dropped_with_a_backup(tmp_path):
    path = tmp_path / "j"
    path.write_text(f"{R1}\n{R2}\n{R3[:-37]}")
    report = repair_journal(path)
    assert report.repaired and report.dropped_bytes == len(R3) - 37 and report.recovered_records == 0
    assert path.read_text() == f"{R1}\n{R2}\n"
    assert open(report.backup).read() == f"{R1}\n{R2}\n{R3[:-37]}"


def test_a_torn_tail_already_appended_to_is_recovered(tmp_path):
    """What the old code did: the next append lands behind the torn bytes, on the same line."""
    path = tmp_path / "j"
    path.write_text(f"{R1}\n{R2[:-20]}{R3}\n")
    report = repair_journal(path)
    assert report.recovered_records == 1 and path.read_text() == f"{R1}\n{R3}\n"


def test_unrecoverable_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "j"
    path.write_text(f"{R1}\ngarbage\n{R3}\n")
    with pytest.raises(TrialError, match=r"j: line 2 is not a journal record and cannot be recovered"):
        repair_journal(path)
    assert path.read_text() == f"{R1}\ngarbage\n{R3}\n"


@pytest.mark.slow
def test_search_after_a_torn_journal_repairs_and_continues(work):
    cfg = study_yaml(work / "s.yaml", search={"trials": 2})
    first = run_cli(["--runs-dir", "runs", "search", str(cfg), "-q"], work)
    assert first.returncode == 0, first.stderr[-2000:]
    journal = work / "runs" / "tiny" / "optuna.journal"
    before = journal.read_bytes()
    os.truncate(journal, len(before) - 37)  # `truncate -s -37 runs/<study>/optuna.journal`
    assert run_cli(["--runs-dir", "runs", "pareto", "tiny"], work).returncode == 0
    kept = {t.number: t.state for t in load_study(work / "runs").get_trials(deepcopy=False)}

    again = run_cli(["--runs-dir", "runs", "search", str(cfg), "--trials", "3"], work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "repaired the study journal" in again.stderr and "a torn last record of" in again.stderr
    backups = list(journal.parent.glob("optuna.journal.torn-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == before[:-37]
    trials = load_study(work / "runs").get_trials(deepcopy=False)
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3
    for number, state in kept.items():  # what was readable before the repair is still there
        assert trials[number].state == state or state.name == "RUNNING"
    for args in (["pareto", "tiny", "--all"], ["export", "tiny", "--format", "state_dict"]):
        res = run_cli(["--runs-dir", "runs", *args], work)
        assert res.returncode == 0, (args, res.stderr[-2000:])


def test_reading_a_damaged_journal_says_how_to_repair(tmp_path):
    from autoprune.search.study import open_study

    root = tmp_path / "runs" / "s"
    root.mkdir(parents=True)
    (root / "search.json").write_text(json.dumps({"storage": "elsewhere/s/optuna.journal"}))
    (root / "optuna.journal").write_text(f"{R1}\n{R2[:-20]}{R3}\n{R2}\n")
    with pytest.raises(TrialError, match=r"optuna\.journal: the study storage cannot be read .* run `autoprune search` on the study again"):
        open_study("s", tmp_path / "runs")

"""Helpers of the fault suite: a tiny study as YAML, the CLI as a real subprocess, MLflow and Optuna views."""

from __future__ import annotations

import copy
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

_spec = importlib.util.spec_from_file_location("_autoprune_tests_root_conftest_faults", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)

#: the tiny study of tests/conftest.py (trains in about a second), with a 4-trial search of short fine-tunes
TINY = {
    **copy.deepcopy(_root.TINY_STUDY),
    "search": {
        "trials": 4,
        "population_size": 4,
        "finetune": {"epochs": [2, 3]},
        "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0},
        "early_stop": {"after_epochs": None},
    },
}

REPO = Path(__file__).resolve().parents[2]


def study_yaml(path: Path, **sections) -> Path:
    """Write the tiny study with ``sections`` merged in (one level deep) and return the path."""
    data = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra or {})
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``autoprune ARGS`` as a real process (exit codes and signals as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env(env)
    )


def start_cli(args: list[str], cwd: Path, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """``autoprune ARGS`` in the background; stderr goes to ``log`` (default: cwd/stderr.log)."""
    log = log or cwd / "stderr.log"
    return subprocess.Popen(
        [sys.executable, "-m", "autoprune", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=cli_env(env)
    )


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_trials(runs: Path, study: str = "tiny") -> list:
    """Trials RUNNING in the study's journal right now (read-only)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    journal = runs / study / "optuna.journal"
    if not journal.is_file():
        return []
    try:
        st = optuna.load_study(study_name=study, storage=JournalStorage(JournalFileBackend(str(journal))))
    except Exception:
        return []
    return st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def load_study(runs: Path, study: str = "tiny"):
    import optuna

    from autoprune.search.study import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_study(study, runs)[0]


def mlflow_runs(runs: Path, study: str = "tiny"):
    """(parent runs, nested runs) of the study's experiment in the embedded store."""
    from mlflow import MlflowClient

    from autoprune.tracking.tracker import default_tracking_uri

    client = MlflowClient(default_tracking_uri(runs))
    exp = client.get_experiment_by_name(study)
    all_runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    parents = [r for r in all_runs if r.data.tags.get("autoprune.search") == "true"]
    nested = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parents, nested


def kill_tree(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def work(tmp_path):
    """A working folder holding runs/ for CLI runs."""
    (tmp_path / "runs").mkdir()
    return tmp_path


def processes_in(cwd: Path) -> list[int]:
    """PIDs of live processes (not zombies) whose working directory is ``cwd`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(entry / "cwd") == str(cwd) and "\nState:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found

"""Issue 22, servers failing mid-search (C1: PostgreSQL stopped, C3: the MLflow server killed): one line
within a bounded time, the search resumable, nothing recorded lost; and a teammate without the runs
folder lists and exports a study from its storage and tracking server (pareto/export --storage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import requests
from optuna.trial import TrialState

from .conftest import PostgresServer, free_port, write_study

pytestmark = pytest.mark.slow
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _start(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoprune", *args], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=_env())


def _run(args, cwd=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, timeout=timeout, env=_env(), cwd=cwd)


def _wait_counted(load, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if len([t for t in load().get_trials(deepcopy=False) if t.state in COUNTED]) >= n:
                return
        except Exception:  # the study is being created
            pass
        time.sleep(0.3)
    raise AssertionError(f"the search did not reach {n} counted trials (rc {proc.poll()})")


def _one_error(log: Path) -> str:
    text = log.read_text()
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in text and len(errors) == 1, text[-4000:]
    return errors[0]


def test_c1_postgresql_stopped_mid_search(tmp_path):
    server = PostgresServer()
    try:
        url = server.url("c1")
        runs = tmp_path / "runs"
        cfg = write_study(tmp_path / "tiny.yaml", trials=6, finetune={"epochs": [6, 8]})
        log = tmp_path / "c1.log"
        proc = _start(["--runs-dir", str(runs), "search", str(cfg), "--storage", url], log)
        _wait_counted(lambda: optuna.load_study(study_name="tiny", storage=url), 2, proc)
        server.stop()
        stopped = time.time()
        proc.wait(180)
        assert proc.returncode == 2 and time.time() - stopped < 120
        line = _one_error(log)
        assert line.startswith("error: the database failed: ") and "run the same command again" in line
        server.start()
        res = _run(["--runs-dir", str(runs), "search", str(cfg), "--storage", url, "--json"])
        assert res.returncode == 0, res.stderr[-3000:]
        study = optuna.load_study(study_name="tiny", storage=url)
        assert len([t for t in study.get_trials(deepcopy=False) if t.state in COUNTED]) == 6
        assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    finally:
        server.close()


def _mlflow_server(port: int, root: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
                            env=env, stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError("the MLflow server did not start")


def test_c3_mlflow_server_killed_mid_search(tmp_path):
    port, store = free_port(), tmp_path / "mlflow_store"
    store.mkdir()
    server = _mlflow_server(port, store)
    uri = f"http://127.0.0.1:{port}"
    runs = tmp_path / "runs"
    cfg = write_study(tmp_path / "tiny.yaml", trials=6, finetune={"epochs": [6, 8]})
    log = tmp_path / "c3.log"
    try:
        proc = _start(["--runs-dir", str(runs), "search", str(cfg), "--tracking-uri", uri], log)
        journal = runs / "tiny" / "optuna.journal"

        def load():
            return optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))

        _wait_counted(load, 2, proc)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        killed = time.time()
        proc.wait(300)
        waited = time.time() - killed
        assert proc.returncode == 2 and waited < 120, (proc.returncode, waited)  # it retried for about 9.5 minutes
        line = _one_error(log)
        assert "lost the MLflow tracking server" in line and "run the same command again" in line
        kept = {t.number for t in load().get_trials(deepcopy=False) if t.state in COUNTED}
        assert len(kept) >= 2

        server = _mlflow_server(port, store)
        res = _run(["--runs-dir", str(runs), "search", str(cfg), "--tracking-uri", uri, "--json"])
        assert res.returncode == 0, res.stderr[-3000:]
        study = load()
        counted = {t.number for t in study.get_trials(deepcopy=False) if t.state in COUNTED}
        assert len(counted) == 6 and kept <= counted
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("tiny")
        logged = {int(r.data.tags["autoprune.trial"]) for r in client.search_runs([exp.experiment_id], max_results=1000) if "autoprune.trial" in r.data.tags}
        assert counted <= logged  # the trials the lost server missed were synced on resume
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


def test_teammate_lists_and_exports_from_the_storage_and_the_tracking_server(tmp_path, postgres, mlflow_server):
    url = postgres("teammate")
    cfg = write_study(tmp_path / "tiny.yaml", trials=2)
    res = _run(["--runs-dir", str(tmp_path / "runs_a"), "search", str(cfg), "--storage", url, "--tracking-uri", mlflow_server, "-q"])
    assert res.returncode == 0, res.stderr[-3000:]
    elsewhere = tmp_path / "teammate"
    elsewhere.mkdir()
    res = _run(["--runs-dir", "runs", "pareto", "tiny", "--json", "--storage", url], cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    front = json.loads(res.stdout)
    assert front
    res = _run(["--runs-dir", "runs", "export", "tiny", "--trial", str(front[0]["trial"]), "--format", "state_dict", "--out", "model",
                "--storage", url, "--tracking-uri", mlflow_server, "--json"], cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["verified"] and (elsewhere / "model" / "model_state.pt").is_file()
    res = _run(["--runs-dir", "runs", "pareto", "tiny"], cwd=elsewhere)  # without --storage: one line that says where to look
    assert res.returncode == 2 and "give --storage where it lives" in res.stderr

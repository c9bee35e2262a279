"""``autoprune dashboard STUDY``: Optuna Dashboard on the study's storage, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
import requests
from click.testing import CliRunner

from autoprune.cli import cli
from autoprune.search.storage import storage_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def searched(runs_dir):
    """A study as a search leaves it: search.json naming a journal storage with two finished trials."""
    root = runs_dir / "tiny"
    root.mkdir()
    journal = str(root / "optuna.journal")
    (root / "search.json").write_text(json.dumps({"storage": journal}))
    st = optuna.create_study(study_name="tiny", storage=storage_for(journal), directions=["maximize", "minimize"])
    st.add_trial(optuna.trial.create_trial(values=[0.9, 1000.0], params={}, distributions={}))
    st.add_trial(optuna.trial.create_trial(values=[0.8, 500.0], params={}, distributions={}))
    return runs_dir


def test_dashboard_serves_the_study_on_localhost(searched):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "--runs-dir", str(searched), "dashboard", "tiny", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"Optuna Dashboard: http://127.0.0.1:{port}/dashboard/studies/0 ")
        deadline = time.time() + 60
        while True:
            try:
                studies = requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=2).json()["study_summaries"]
                break
            except requests.RequestException:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["tiny"]
        trials = requests.get(f"http://127.0.0.1:{port}/api/studies/0?after=0", timeout=5).json()["trials"]
        assert len(trials) == 2
        if shutil.which("ss"):  # listening on the loopback address only
            bound = [line for line in subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout.splitlines() if f":{port} " in line]
            assert bound and all("127.0.0.1:" in line for line in bound)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_dashboard_unknown_study_is_one_line(runs_dir):
    res = CliRunner().invoke(cli, ["--runs-dir", str(runs_dir), "dashboard", "nope"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: unknown study 'nope'") and res.stderr.count("\n") == 1

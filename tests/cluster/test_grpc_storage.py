"""A search through Optuna's gRPC storage proxy (``--storage grpc://HOST:PORT``) in front of a real
PostgreSQL server, both started by the test on 127.0.0.1: two local workers ask and tell through it,
the study in the database is the one record (``pareto`` reads it back through the proxy), and a proxy
that does not answer is refused in one line before anything runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
from click.testing import CliRunner

from autoprune.cli import cli
from autoprune.search.storage import Storage, is_shared_storage

from .conftest import free_port, write_study

pytest.importorskip("grpc", reason="grpcio missing (Optuna's gRPC storage proxy): pip install -c constraints.txt -e '.[cluster]'")


@pytest.fixture
def grpc_proxy(postgres):
    """Optuna's gRPC storage proxy in its own process, in front of a fresh PostgreSQL database; yields (grpc URL, database URL)."""
    db = postgres(f"grpc_{int(time.time() * 1000)}")
    port = free_port()
    code = (
        "import optuna; from optuna.storages import RDBStorage, run_grpc_proxy_server; "
        f"run_grpc_proxy_server(RDBStorage({db!r}), host='127.0.0.1', port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the gRPC proxy did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.3)
    try:
        yield f"grpc://127.0.0.1:{port}", db
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_a_search_through_the_grpc_proxy(tmp_path, grpc_proxy):
    url, db = grpc_proxy
    runs = tmp_path / "runs"
    cfg = write_study(tmp_path / "tiny.yaml", trials=4)
    res = CliRunner().invoke(cli, ["--runs-dir", str(runs), "search", str(cfg), "--storage", url, "--workers", "2", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["storage"] == url

    # the record is the database behind the proxy
    study = optuna.load_study(study_name="tiny", storage=db)
    counted = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4 and all("autoprune.policy" in t.user_attrs and "autoprune.result" in t.user_attrs for t in counted)
    # the worker processes asked and told through the proxy, not this (the driver's) process. Which of the two workers
    # takes which trial is a race (a tiny trial takes about a second; under load one worker may take all four), so the
    # test does not ask for both: each driver is a spawned worker on this machine.
    drivers = {t.user_attrs["autoprune.driver"] for t in counted}
    assert 1 <= len(drivers) <= 2 and f"{socket.gethostname()}:{os.getpid()}" not in drivers, drivers
    assert all(d.startswith(f"{socket.gethostname()}:") for d in drivers), drivers
    assert is_shared_storage(optuna.load_study(study_name="tiny", storage=Storage(url).open()))  # resume repairs only its own trials

    res = CliRunner().invoke(cli, ["--runs-dir", str(runs), "pareto", "tiny", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {r["trial"] for r in json.loads(res.stdout)} <= {t.number for t in counted}


def test_a_proxy_that_does_not_answer_is_refused_in_one_line(tmp_path):
    cfg = write_study(tmp_path / "tiny.yaml", trials=1)
    port = free_port()
    res = subprocess.run([sys.executable, "-m", "autoprune", "--runs-dir", str(tmp_path / "runs"), "search", str(cfg), "--storage", f"grpc://127.0.0.1:{port}"],
                         check=False, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert f"grpc://127.0.0.1:{port}: no gRPC storage proxy answers there" in lines[0]
    assert not (tmp_path / "runs" / "tiny" / "search.json").exists()


@pytest.mark.parametrize("bad", ["grpc://nohost", "grpc://127.0.0.1:70000", "grpc://user:S3cret@127.0.0.1:13000"])
def test_a_bad_grpc_address_is_refused_without_echoing_a_password(bad):
    from autoprune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"grpc://HOST:PORT") as info:
        Storage.parse(bad)
    assert "S3cret" not in str(info.value)

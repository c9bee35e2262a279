"""Cases 8, 9 and 13: `autoprune ui` validates its port, refuses a port in use (exit 2), and a
SIGTERM or SIGINT to its own PID stops the MLflow server child too."""

from __future__ import annotations

import signal
import socket
import urllib.request

import pytest

from .conftest import processes_in, run_cli, start_cli, wait_for

pytestmark = pytest.mark.faults


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_case8_port_out_of_range(work, port):
    res = run_cli(["--runs-dir", "runs", "ui", "--port", port], work)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --port {port}: a TCP port must be in [1, 65535] (the default is 5000)"
    assert "MLflow UI" not in res.stdout


def test_case9_port_in_use(work):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli(["--runs-dir", "runs", "ui", "--port", str(port)], work)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --port {port}: the port is already in use on 127.0.0.1 (another MLflow UI?); stop that process or give another --port"
    assert "MLflow UI" not in res.stdout


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_case13_signal_to_ui_stops_the_server(work, sig, code):
    port = _free_port()
    proc = start_cli(["--runs-dir", "runs", "ui", "--port", str(port)], work)
    try:
        wait_for(lambda: _health(port), 90, "the MLflow server", every=0.5)
        assert len(processes_in(work)) >= 2  # ui and its server
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    wait_for(lambda: processes_in(work) == [], 15, "the server to exit")
    assert not _health(port)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_server_that_cannot_start_exits_non_zero(monkeypatch):
    import sys

    from autoprune.tracking.server import serve

    assert serve([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3

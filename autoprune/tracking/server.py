"""Starting and stopping the MLflow server behind ``autoprune ui``.

* the port is checked before anything starts: in range, and free on 127.0.0.1
  (MLflow would print the URL, then ``address already in use``, and exit 0);
* the server runs in its own process group, and a SIGINT or SIGTERM to ``autoprune ui``
  stops that whole group (the server and its workers) before ``ui`` exits 130 / 143, so
  no server is left orphaned and listening;
* ``ui`` exits with the server's non-zero code when the server fails.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
from typing import Dict, List, Optional

from autoprune.errors import ConfigError

__all__ = ["check_port", "serve"]


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a port out of range or already in use on ``host``.

    Raises:
        ConfigError: one line naming the port and what to do.
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: a TCP port must be in [1, 65535] (the default is 5000)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not "in use"
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--port {port}: the port is already in use on {host} (another MLflow UI?); "
                    f"stop that process or give another --port"
                ) from None
            if err.errno == errno.EACCES:
                raise ConfigError(f"--port {port}: not allowed to listen on this port (ports below 1024 need root); give another --port") from None
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port}: {err.strerror}") from None


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the server
    except ProcessLookupError:
        pass
    proc.wait()


def serve(cmd: List[str], env: Optional[Dict[str, str]] = None) -> int:
    """Run the server until it exits or this process gets SIGINT/SIGTERM.

    Returns:
        The exit code for ``ui``: the server's own when it exits by itself (non-zero when it
        could not start), 128 + the signal number when stopped by a signal.
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: List[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        return code
    except KeyboardInterrupt:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not leave the server half-stopped
        _stop_group(proc)
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        if proc.poll() is None:
            _stop_group(proc)
        for s, h in previous.items():
            signal.signal(s, h)

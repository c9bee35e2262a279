"""Starting and stopping the MLflow server behind ``autoprune ui``.

* the port is checked before anything starts: in range, and free on 127.0.0.1
  (MLflow would print the URL, then ``address already in use``, and exit 0);
* the server runs in its own process group, and a SIGINT or SIGTERM to ``autoprune ui``
  stops that whole group (the server and its workers) before ``ui`` exits 130 / 143, so
  no server is left orphaned and listening (the signals are ``ui``'s: :func:`serve` stops the
  group on whatever ends its wait);
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
    """Run the server until it exits; however this process is stopped (the caller owns SIGINT/SIGTERM:
    ``autoprune ui`` runs this inside :class:`~autoprune.search.interrupts.SignalScope`, whose exception
    propagates), the server's whole process group is stopped first.

    Returns:
        The server's own exit code (non-zero when it could not start).
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            _stop_group(proc)

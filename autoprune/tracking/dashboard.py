"""``autoprune dashboard STUDY``: Optuna Dashboard on the study's own storage, bound to 127.0.0.1.

For people who look at Optuna studies there: every trial's parameters (the policy), the
two or three objectives, the Pareto front and the user attributes autoprune records
(``autoprune.result``, ``autoprune.state``). It reads the same storage ``pareto`` and
``export`` read (the journal file under ``runs/<study>/`` or the ``--storage`` URL the
search used). Local only: the dashboard has no authentication.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from optuna_dashboard import run_server

from autoprune.tracking.server import check_port

__all__ = ["HOST", "dashboard_url", "serve_dashboard"]

HOST = "127.0.0.1"


def dashboard_url(port: int, study_id: Optional[int] = None) -> str:
    """The dashboard's address, on the study's page when its id is known."""
    base = f"http://{HOST}:{port}/dashboard"
    return f"{base}/studies/{study_id}" if study_id is not None else base


def serve_dashboard(study: Any, port: int, announce: Callable[[str], Any] = print) -> None:
    """Serve Optuna Dashboard for an opened study (``search.study.open_study``) until interrupted.

    Raises:
        ConfigError: the port is out of range or already in use (one line, before anything is printed).
    """
    storage = study._storage  # the storage object the search wrote (journal file or RDB), as Optuna opened it
    check_port(port, HOST)  # before the link is printed: in range and free (the server would fail after it, with a traceback)
    announce(f"Optuna Dashboard: {dashboard_url(port, study._study_id)}  (study '{study.study_name}'; Ctrl-C stops it)")
    run_server(storage, host=HOST, port=port)

"""Issue 22, secrets: a database password given in --storage or --tracking-uri appears nowhere autoprune
writes or prints (A2 A3 A5 A7 A9 A10), and a stored study's storage is used again or a different one
refused (C5). The servers are real: a PostgreSQL that asks for the password, the study and the MLflow
store in it; the CLI runs as a user runs it (a subprocess), and every file written under the runs
folder, the console, both databases and the MLflow server's argv are searched for the planted password."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import PLANTED_PASSWORD, free_port, write_study

pytestmark = pytest.mark.slow


def _cli(args, cwd, env=None, timeout=600):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("MLFLOW_TRACKING_URI", "AUTOPRUNE_STORAGE", "PGPASSWORD"):
        full_env.pop(key, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "autoprune", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def _files_with(root: Path, needle: str) -> list:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    found.append(str(path.relative_to(root)))
            except OSError:
                continue
    return found


def _dump(pg, db: str) -> str:
    """Every row of every table of database ``db`` as text, to search the study and the MLflow store."""
    import psycopg

    out = []
    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=apuser password={PLANTED_PASSWORD} dbname={db}") as conn:
        tables = [r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")]
        assert tables
        for table in tables:
            out += [repr(row) for row in conn.execute(f'select * from "{table}"')]
    return "\n".join(out)


def test_planted_password_appears_nowhere(tmp_path, postgres_pw):
    storage, tracking = postgres_pw.url("secrets_optuna"), postgres_pw.url("secrets_mlflow")
    runs, cwd = tmp_path / "runs", tmp_path / "cwd"
    cwd.mkdir()
    cfg = write_study(tmp_path / "tiny.yaml", trials=2)
    res = _cli(["--runs-dir", str(runs), "search", str(cfg), "--storage", storage, "--tracking-uri", tracking, "--json"], cwd)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(res.stdout)
    assert summary["storage"] == storage.replace(PLANTED_PASSWORD, "***") and summary["tracking_uri"] == tracking.replace(PLANTED_PASSWORD, "***")
    console = [res.stdout + res.stderr]

    # A3: search.json names both stores without the password, and only its owner can read it
    meta_path = runs / "tiny" / "search.json"
    meta = json.loads(meta_path.read_text())
    assert meta["storage"] == storage.replace(f":{PLANTED_PASSWORD}", "") and meta["tracking_uri"] == tracking.replace(f":{PLANTED_PASSWORD}", "")
    assert stat.S_IMODE(meta_path.stat().st_mode) == 0o600

    # C5: the same command without --storage resumes in PostgreSQL (the password from PGPASSWORD), never in a new journal
    res = _cli(["--runs-dir", str(runs), "search", str(cfg), "--trials", "3", "--json"], cwd, env={"PGPASSWORD": PLANTED_PASSWORD})
    assert res.returncode == 0, res.stderr[-4000:]
    console.append(res.stdout + res.stderr)
    assert json.loads(res.stdout)["n_complete"] + json.loads(res.stdout)["n_stopped_early"] == 3
    assert not (runs / "tiny" / "optuna.journal").exists()
    # ... without a password anywhere it says where one comes from, in one line
    res = _cli(["--runs-dir", str(runs), "search", str(cfg), "--trials", "3"], cwd)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert res.returncode == 2 and len(lines) == 1 and "cannot connect to the database" in lines[0] and "PGPASSWORD" in lines[0], res.stderr[-3000:]
    console.append(res.stdout + res.stderr)
    # ... and another storage is refused, naming the recorded one
    res = _cli(["--runs-dir", str(runs), "search", str(cfg), "--trials", "3", "--storage", str(tmp_path / "other.journal")], cwd)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert "was searched with postgresql+psycopg://apuser@127.0.0.1" in lines[0] and "give that one again" in lines[0]
    console.append(res.stdout + res.stderr)
    assert json.loads(meta_path.read_text())["storage"] == meta["storage"]  # search.json kept

    # pareto / export on another machine's view: the storage and the tracking store given, no search.json needed
    res = _cli(["--runs-dir", str(runs), "pareto", "tiny", "--json"], cwd, env={"PGPASSWORD": PLANTED_PASSWORD})
    assert res.returncode == 0, res.stderr[-3000:]
    console.append(res.stdout + res.stderr)

    # A9: `autoprune ui` prints the store hidden and gives it to the MLflow server through its environment
    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "PGPASSWORD": PLANTED_PASSWORD}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as fh:
        ui = subprocess.Popen([sys.executable, "-m", "autoprune", "--runs-dir", str(runs), "ui", "tiny", "--port", str(port)], cwd=cwd,
                              stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        argv = []
        while time.time() < deadline and not argv:
            argv = [a for a in _cmdlines() if "mlflow" in a and "server" in a and f"--port {port}" in a]
            time.sleep(0.5)
        assert argv, log.read_text()
        assert not [a for a in argv if PLANTED_PASSWORD in a or "secrets_mlflow" in a]
    finally:
        os.killpg(ui.pid, 2)
        ui.wait(60)
    console.append(log.read_text())
    assert "(store postgresql+psycopg://apuser@" in console[-1] or "(store postgresql+psycopg://apuser:***@" in console[-1]

    # the grep: every file under the runs folder and the working directory, the console, both databases
    assert _files_with(runs, PLANTED_PASSWORD) == []
    assert _files_with(cwd, PLANTED_PASSWORD) == []
    assert not [c for c in console if PLANTED_PASSWORD in c]
    assert PLANTED_PASSWORD not in _dump(postgres_pw, "secrets_optuna")
    assert PLANTED_PASSWORD not in _dump(postgres_pw, "secrets_mlflow")
    # A10: with a database tracking store the artifacts stay under --runs-dir, never ./mlruns of the working directory
    assert not (cwd / "mlruns").exists() and list(cwd.iterdir()) == []
    assert (runs / "mlartifacts" / "tiny").is_dir()


def _cmdlines() -> list:
    """Every process's argv, as `ps` shows it to any user."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return out


def test_ray_backend_writes_no_password(tmp_path, postgres_pw):
    """A5: Tune pickles the searcher and the job (tuner.pkl, the object store): nothing it writes holds the password."""
    pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")
    runs = tmp_path / "runs"
    cfg = write_study(tmp_path / "tiny.yaml", trials=2)
    res = _cli(["--runs-dir", str(runs), "search", str(cfg), "--backend", "ray", "--concurrency", "1", "--storage", postgres_pw.url("secrets_ray")], tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert list((runs / "tiny" / "ray_results").rglob("tuner.pkl"))  # Tune did write its experiment
    assert _files_with(runs, PLANTED_PASSWORD) == []
    ray_dir = (runs / "tiny" / "ray").resolve()
    if ray_dir.is_dir():  # a short /tmp folder when runs/<study>/ray is a link
        assert _files_with(ray_dir, PLANTED_PASSWORD) == []
    assert PLANTED_PASSWORD not in res.stdout + res.stderr

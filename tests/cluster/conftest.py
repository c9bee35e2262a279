"""Real servers for the scale-out tests: a throwaway PostgreSQL cluster, an MLflow tracking
server backed by it, and a 2-node Ray cluster on this machine. Each starts once per session
(or module) on 127.0.0.1 and a free port, and stops after; tests that need a missing binary
skip with the reason."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under ~/.ray for the test clusters

#: the tiny study of tests/conftest.py with a short search (recipe check off: it trains once more)
TINY = {
    "study": "tiny",
    "seed": 0,
    "task": {"name": "synthetic:sines", "batch_size": 32, "options": {"n_train": 120, "n_test": 60, "max_len": 12}},
    "model": {"cell": "lstm", "hidden_sizes": [16]},
    "train": {"epochs": 3, "lr": 0.01, "lr_schedule": "none"},
    "measure": {"repeats": 3, "warmup": 1},
    "search": {
        "trials": 4,
        "population_size": 4,
        "finetune": {"epochs": [2, 3]},
        "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0},
        "early_stop": {"after_epochs": None},
        "recipe_check": {"enabled": False},
    },
}


def study_dict(**search) -> dict:
    data = copy.deepcopy(TINY)
    data["search"].update(search)
    return data


def write_study(path: Path, **search) -> Path:
    path.write_text(yaml.safe_dump(study_dict(**search), sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user() -> list:
    """initdb refuses root: run the server as 'nobody' when we are root."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("runuser"):
        pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as an unprivileged user")
    return ["runuser", "-u", "nobody", "--"]


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (run as 'nobody' when we are root).

    Args:
        password: when given, the cluster's user ``apuser`` has it and TCP connections must give it
            (scram-sha-256, as on a shared server); else user ``postgres`` with trust authentication.
    """

    def __init__(self, password: str | None = None) -> None:
        import glob

        # Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin
        path = os.pathsep.join([os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)])
        for tool in ("initdb", "pg_ctl"):
            if not shutil.which(tool, path=path):
                pytest.skip(f"PostgreSQL server binaries missing ({tool} neither on PATH nor in /usr/lib/postgresql/*/bin): apt-get install -y postgresql (CI's .ci/run does)")
        pytest.importorskip("psycopg", reason="psycopg missing: pip install -c constraints.txt -e '.[cluster]'")
        self.pg_ctl = shutil.which("pg_ctl", path=path)
        self.prefix = _as_postgres_user()
        self.password = password
        self.user = "apuser" if password else "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))  # under /tmp, not pytest's 0700 folders: 'nobody' must reach it
        self.data = self.root / "data"
        auth = ["--auth=trust"]
        if password:
            pwfile = self.root / "pw"
            pwfile.write_text(password + "\n")
            auth = [f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust"]
        if self.prefix:
            for item in (self.root, *self.root.iterdir()):
                shutil.chown(item, "nobody")
        subprocess.run(self.prefix + [shutil.which("initdb", path=path), "-D", str(self.data), "-U", self.user, *auth, "-E", "UTF8"], check=True, capture_output=True)
        if password:
            (self.root / "pw").unlink()
        self.port = free_port()
        self.made: set = set()
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], capture_output=True)

    def url(self, db: str, password: bool = True) -> str:
        """``postgresql+psycopg://...`` of database ``db`` (created on first use), with the password unless asked not to."""
        import psycopg

        auth = f"{self.user}:{self.password}" if self.password else self.user
        if db not in self.made:
            with psycopg.connect(f"postgresql://{auth}@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            self.made.add(db)
        return f"postgresql+psycopg://{auth if password else self.user}@127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server; yields ``make_url(dbname) -> postgresql+psycopg://...`` (creates the database)."""
    server = PostgresServer()
    make_url = server.url
    try:
        yield make_url
    finally:
        server.close()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server on 127.0.0.1 (PostgreSQL backend store, proxied artifacts); yields its URL."""
    import requests

    port = free_port()
    artifacts = tmp_path_factory.mktemp("mlflow_artifacts")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(artifacts.parent / "mlflow_server.log", "w")
    cmd = [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", postgres("mlflow"), "--artifacts-destination", str(artifacts)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the MLflow server did not start: see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of two nodes (one CPU each) on this machine; the test process is not connected."""
    pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cluster.worker = worker
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


#: the password of :func:`postgres_pw`'s user: every test that uses it greps for it in what autoprune wrote and printed
PLANTED_PASSWORD = "Pl4nted_S3cret_Zq7"


@pytest.fixture(scope="session")
def postgres_pw():
    """A throwaway PostgreSQL server that asks for a password over TCP (scram-sha-256), as a shared server does;
    yields the :class:`PostgresServer` (``.url(db)``: ``postgresql+psycopg://apuser:PLANTED_PASSWORD@...``)."""
    server = PostgresServer(password=PLANTED_PASSWORD)
    try:
        yield server
    finally:
        server.close()

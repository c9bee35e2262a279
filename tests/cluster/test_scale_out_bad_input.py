"""Bad scale-out input: one line, exit code 2, before any training (nothing trained under runs/)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from autoprune.cli import cli

from .conftest import free_port, write_study


def _search(tmp_path, *args, **search):
    cfg = write_study(tmp_path / "tiny.yaml", **search)
    runs = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["--runs-dir", str(runs), "search", str(cfg), *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    assert not (runs / "tiny" / "dense").exists()  # refused before training
    return lines[0]


@pytest.mark.parametrize(
    "args, search, expected",
    [
        (["--backend", "ray", "--workers", "2"], {}, r"workers=2 starts local worker processes; with backend ray set ray.concurrency \(--concurrency\) instead"),
        (["--backend", "ray", "--concurrency", "0"], {}, r"search.ray.concurrency.*greater than or equal to 1"),
        (["--backend", "ray", "--cpus-per-trial", "0"], {}, r"search.ray.cpus_per_trial.*greater than 0"),
        (["--backend", "ray", "--ray-address", "nohost"], {}, r"search.ray.address.*must be auto or HOST:PORT"),
        (["--backend", "ray", "--ray-address", "ray://head:10001"], {}, r"search.ray.address.*Ray Client addresses are not supported"),
        ([], {"backend": "slurm"}, r"search.backend.*unknown search backend 'slurm'; valid: local, ray"),
    ],
)
def test_bad_backend_settings(tmp_path, args, search, expected):
    import re

    line = _search(tmp_path, *args, **search)
    assert re.search(expected, line), line


def test_unreachable_ray_address(tmp_path):
    port = free_port()
    line = _search(tmp_path, "--backend", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert f"--ray-address 127.0.0.1:{port}: no Ray head answers there" in line and f"ray start --head --port {port}" in line


def test_unreachable_postgresql(tmp_path):
    port = free_port()
    line = _search(tmp_path, "--storage", f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/optuna")
    assert f"--storage postgresql+psycopg://postgres:***@127.0.0.1:{port}/optuna: cannot connect to the database" in line
    assert "secret" not in line


def test_unreachable_mlflow_server(tmp_path):
    port = free_port()
    line = _search(tmp_path, "--backend", "ray", "--tracking-uri", f"http://127.0.0.1:{port}")
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in line


def test_ray_address_auto_without_a_cluster(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where `ray start` would have left /tmp/ray/ray_current_cluster
    line = _search(tmp_path, "--backend", "ray", "--ray-address", "auto")
    assert "--ray-address auto: no Ray cluster runs on this machine" in line

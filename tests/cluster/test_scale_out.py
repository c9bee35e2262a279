"""The search on a real 2-node Ray cluster, with the study in a real PostgreSQL server and the
runs in a real MLflow tracking server; mixing backends on one study; the driver interrupted
and resumed; a node dying mid-trial; shared-storage repair that leaves other machines alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from autoprune.cli import cli
from autoprune.config import config_from_dict
from autoprune.search.run import run_search
from autoprune.search.study import open_study

from .conftest import study_dict, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _counted(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in COUNTED)


def _invoke(args, **kw):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)


@pytest.mark.slow
def test_two_node_cluster_with_postgres_and_mlflow_server(tmp_path, ray_cluster, postgres, mlflow_server):
    runs = tmp_path / "runs"
    cfg = write_study(tmp_path / "tiny.yaml", trials=6)
    storage = postgres("study_two_nodes")
    res = _invoke(["--runs-dir", str(runs), "search", str(cfg), "--backend", "ray", "--ray-address", ray_cluster.address,
                   "--concurrency", "2", "--storage", storage, "--tracking-uri", mlflow_server, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["storage"] == storage and summary["tracking_uri"] == mlflow_server

    study, meta = open_study("tiny", runs)
    assert meta["storage"] == storage  # the study lives in PostgreSQL: nothing of it in a local journal
    assert not (runs / "tiny" / "optuna.journal").exists()
    trials = study.get_trials(deepcopy=False)
    assert _counted(study) == 6
    assert {t.user_attrs["autoprune.backend"] for t in trials} == {"ray"}
    ran_on = {t.user_attrs.get("autoprune.node") for t in trials if t.state in COUNTED}
    # every trial ran on a node of the cluster and said which. Not "on both nodes": with reuse_actors, Tune gives a
    # finished trial's process to a waiting trial even when that trial's own process is still starting on the other
    # node (and stops that start), so one-second trials on loaded cores may all run on whichever node came up first
    # (seen once in CI). That a trial runs on the worker node is shown with long trials by the node-death test below.
    assert ran_on and ran_on <= {ray_cluster.head_node.node_id, ray_cluster.worker.node_id}

    # every trial one nested run of the parent, on the server; the front tags agree with `pareto --json`
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tiny")
    runs_found = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs_found if r.data.tags.get("autoprune.search") == "true"]
    nested = [r for r in runs_found if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["autoprune.trial"]) for r in nested) == sorted(t.number for t in trials if t.state.is_finished())
    res = _invoke(["--runs-dir", str(runs), "pareto", "tiny", "--json"])
    assert res.exit_code == 0, res.output
    front = sorted(r["trial"] for r in json.loads(res.stdout))
    assert front and front == sorted(int(r.data.tags["autoprune.trial"]) for r in nested if r.data.tags["autoprune.pareto"] == "true")
    assert all("val_accuracy" in r.data.metrics and r.data.params for r in nested if r.data.tags["autoprune.state"] == "complete")

    # export from another working directory; then with the trial folders gone, from the MLflow server's copy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        res = _invoke(["--runs-dir", str(runs), "export", "tiny", "--pick", "knee", "--format", "state_dict", "--out", "first"])
        assert res.exit_code == 0, res.output
        shutil.rmtree(runs / "tiny" / "trials")
        res = _invoke(["--runs-dir", str(runs), "export", "tiny", "--pick", "knee", "--format", "state_dict", "--out", "second"])
        assert res.exit_code == 0, res.output
    finally:
        os.chdir(cwd)
    assert (elsewhere / "second").is_dir() and any((elsewhere / "second").iterdir())


@pytest.mark.slow
def test_failing_ray_trials_are_failed_with_their_error_and_the_guard_stops(tmp_path, ray_cluster, monkeypatch):
    """A trial that cannot see the runs folder (as on a node without the shared path) fails with that
    message; the consecutive-failure guard stops the search from inside Tune, and the parent run is FAILED."""
    import dataclasses

    from autoprune.errors import TrialError
    from autoprune.search.runners import ray as ray_runner

    real_run = ray_runner.RayRunner.run

    def unshared(self, job, study, update):
        return real_run(self, dataclasses.replace(job, dense_checkpoint=str(tmp_path / "elsewhere" / "checkpoint.pt")), study, update)

    monkeypatch.setattr(ray_runner.RayRunner, "run", unshared)
    runs = tmp_path / "runs"
    cfg = config_from_dict(study_dict(trials=6, max_consecutive_failures=2), source="tiny.yaml")
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"backend": "ray", "ray": cfg.search.ray.model_copy(update={"address": ray_cluster.address})})})
    with pytest.raises(TrialError, match=r"search stopped: the last \d+ trials all failed \(search.max_consecutive_failures=2\)"):
        run_search(cfg, str(runs))
    study, meta = open_study("tiny", runs)
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(failed) >= 2 and _counted(study) == 0
    assert all("is not visible on node" in t.user_attrs["autoprune.error"] and "--runs-dir must be one shared path" in t.user_attrs["autoprune.error"] for t in failed)
    client = MlflowClient(f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    assert client.get_run(meta["mlflow_parent_run_id"]).info.status == "FAILED"


@pytest.mark.slow
def test_node_death_marks_its_trial_failed_and_the_search_goes_on(tmp_path, ray_cluster):
    """The worker node is removed while both nodes run a trial: that trial is FAIL, the head finishes the search."""
    runs = tmp_path / "runs"
    cfg = config_from_dict(study_dict(trials=3, finetune={"epochs": [600, 800]}, warm_start=False), source="tiny.yaml")
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"backend": "ray", "ray": cfg.search.ray.model_copy(update={"address": ray_cluster.address})})})
    killed = threading.Event()
    worker_node = ray_cluster.worker.node_id

    def kill_worker_node() -> None:
        # each Ray trial writes trials/<n>/node.json as it starts training: remove the worker node as soon as
        # a trial is known to be running there (a fixed wait missed it on a quiet machine, where trials end sooner)
        trials_dir = runs / "tiny" / "trials"
        deadline = time.time() + 240
        while time.time() < deadline:
            for marker in trials_dir.glob("*/node.json"):
                try:
                    on_worker = json.loads(marker.read_text())["node"] == worker_node
                except (OSError, ValueError, KeyError):  # written this instant
                    continue
                if on_worker and not (marker.parent / "model.pt").exists():
                    ray_cluster.remove_node(ray_cluster.worker)
                    killed.set()
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_worker_node, daemon=True)
    thread.start()
    summary = run_search(cfg, str(runs))
    thread.join(5)
    assert killed.is_set()
    study, _ = open_study("tiny", runs)
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(failed) >= 1 and all("stopped before reporting" in t.user_attrs["autoprune.error"] for t in failed)
    assert _counted(study) == 3 and summary.n_failed == len(failed)


@pytest.mark.slow
def test_driver_interrupted_then_resumed_by_the_other_backend(tmp_path):
    """Ctrl-C of a Ray driver (a local Ray instance under runs/<study>/ray): running trials FAIL, the parent
    run KILLED, completed trials kept; the local backend resumes the same study to its total (backends mix)."""
    runs = tmp_path / "runs"
    # trials long enough (seconds, once a Ray worker has torch imported) that the state waited for below lasts:
    # with 6-8 epochs the last three trials completed within 0.3 s of each other and the search ended unseen
    cfg = write_study(tmp_path / "tiny.yaml", trials=4, finetune={"epochs": [200, 240]})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the driver's output goes to a file, not a pipe: nobody reads a pipe while we wait, and a full one would stall
    # the driver; the file also keeps the output for the failure message whatever goes wrong
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "autoprune", "--runs-dir", str(runs), "search", str(cfg), "--backend", "ray", "--concurrency", "2"],
                                stdout=log_file, stderr=subprocess.STDOUT, text=True, env=env)
    journal = runs / "tiny" / "optuna.journal"
    deadline = time.time() + 300
    study = None
    while time.time() < deadline and proc.poll() is None:
        if journal.exists():
            try:
                study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))
            except KeyError:  # the journal file exists a moment before the study's first record
                study = None
            if study is not None and _counted(study) >= 1 and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
        time.sleep(0.1)
    assert proc.poll() is None, log_path.read_text()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the Ray driver did not exit within 300 s of SIGINT:\n" + log_path.read_text()[-6000:])
    out = log_path.read_text()
    assert proc.returncode == 130, out
    assert (runs / "tiny" / "ray").exists()  # Ray's files stayed under the study's folder

    study, _ = open_study("tiny", runs)
    trials = study.get_trials(deepcopy=False)
    kept = {t.number for t in trials if t.state in COUNTED}
    assert kept and not [t for t in trials if t.state == TrialState.RUNNING]
    assert any(t.state == TrialState.FAIL and "interrupt" in t.user_attrs.get("autoprune.error", "") for t in trials)
    client = MlflowClient(f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], filter_string="tags.`autoprune.search` = 'true'")[0]
    assert parent.info.status == "KILLED"

    res = _invoke(["--runs-dir", str(runs), "search", str(cfg), "--backend", "local", "--json"])
    assert res.exit_code == 0, res.output
    study, _ = open_study("tiny", runs)
    trials = study.get_trials(deepcopy=False)
    assert _counted(study) == 4 and kept <= {t.number for t in trials if t.state in COUNTED}
    assert {t.user_attrs.get("autoprune.backend") for t in trials if t.state in COUNTED} == {"ray", "local"}


def test_shared_storage_repair_leaves_other_machines_trials_alone(postgres):
    """On a database server, a new search marks failed only the trials of this machine's dead search."""
    from autoprune.search.study import mark_stale

    study = optuna.create_study(study_name="repair", storage=postgres("study_repair"), directions=["maximize", "minimize"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owners = {"other": "another-machine:123", "dead": f"{socket.gethostname()}:{dead.pid}", "alive": f"{socket.gethostname()}:{os.getppid()}"}
    for name, driver in owners.items():
        t = study.ask()
        t.set_user_attr("autoprune.driver", driver)
        t.set_user_attr("name", name)
    assert mark_stale(study) == 1
    states = {t.user_attrs["name"]: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {"other": TrialState.RUNNING, "dead": TrialState.FAIL, "alive": TrialState.RUNNING}

"""The local Ray instance a ``--backend ray`` search starts (issue 22 A23, A24, D4): it listens on
127.0.0.1 only and leaves no process behind after a ``kill -9`` of the driver; its files sit in a folder
only the user can enter, never in one someone else made; SIGTERM ends the driver as it ends a local
search (exit 143, "interrupted by SIGTERM", the parent run KILLED), during ``ray.init`` and during a trial."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoprune.layout import study_paths
from autoprune.search.runners.ray import _private_temp_dir

from .conftest import write_study

pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")

LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _trials(runs: Path) -> list:
    """The study's trials now (empty before the study exists)."""
    import optuna

    from autoprune.search.study import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return open_study("tiny", runs)[0].get_trials(deepcopy=False)
    except Exception:  # not created yet, or the journal's first record not written yet
        return []


def _parent_runs(runs: Path) -> list:
    from mlflow import MlflowClient

    from autoprune.tracking.tracker import default_tracking_uri

    client = MlflowClient(default_tracking_uri(runs))
    exp = client.get_experiment_by_name("tiny")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _session_of(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]
    except (OSError, IndexError):
        return None


def _in_session(sid: int) -> list[int]:
    """Live processes (not zombies) of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session_of(entry.name) == str(sid):
            try:
                if "\nState:\tZ" not in (entry / "status").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _listeners(sid: int) -> list[str]:
    """``address program`` of every TCP socket listened on by a process of session ``sid`` (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        pids = re.findall(r"pid=(\d+)", line)
        if any(_session_of(p) == str(sid) for p in pids):
            found.append(" ".join(line.split()[3:4] + re.findall(r'\(\("([^"]+)"', line)))
    return found


def _start(work: Path, *extra: str, epochs: int = 60) -> subprocess.Popen:
    cfg = write_study(work / "tiny.yaml", trials=6, finetune={"epochs": [epochs, epochs]})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "autoprune", "--runs-dir", "runs", "search", str(cfg), "--backend", "ray", "--concurrency", "2", *extra],
        cwd=work, stdout=subprocess.DEVNULL, stderr=open(work / "stderr.log", "w"), env=env, start_new_session=True,
    )


def _trial_started(runs: Path) -> bool:
    return any((runs / "tiny" / "trials").glob("*/node.json"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is missing: cannot list listening sockets")
def test_local_instance_listens_on_loopback_only_and_dies_with_a_killed_driver(tmp_path):
    proc = _start(tmp_path)
    try:
        wait_for(lambda: _trial_started(tmp_path / "runs") or proc.poll() is not None, 240, "a trial on a Ray worker")
        assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-3000:]
        heard = set()
        for _ in range(3):  # the agents and workers come up over the first seconds
            heard |= set(_listeners(proc.pid))
            time.sleep(1)
        assert any("gcs_server" in h for h in heard) and any("raylet" in h for h in heard), heard  # the listing sees Ray's servers
        assert [h for h in heard if not h.startswith(LOOPBACK)] == []
        proc.kill()  # kill -9: no clean-up runs in the driver
        proc.wait(30)
        wait_for(lambda: not _in_session(proc.pid), 30, "no process of the search left")
        assert _listeners(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["ray.init", "trial"])
def test_sigterm_ends_a_ray_driver_as_a_local_one(tmp_path, moment):
    runs = tmp_path / "runs"
    proc = _start(tmp_path)
    try:
        if moment == "ray.init":  # Ray's temp folder appears as ray.init starts; it takes seconds to finish
            wait_for(lambda: (runs / "tiny" / "ray" / "r").exists() or proc.poll() is not None, 240, "ray.init starting")
        else:
            wait_for(lambda: _trial_started(runs) or proc.poll() is not None, 240, "a running trial")
        assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM" in err and "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    found = _parent_runs(runs)
    assert [r.info.status for r in found if r.data.tags.get("autoprune.search") == "true"] == ["KILLED"]
    assert all(r.info.status != "RUNNING" for r in found)
    trials = _trials(runs)
    assert all(t.state.name != "RUNNING" for t in trials)
    if moment == "trial":
        assert any(t.state.name == "FAIL" and t.user_attrs.get("autoprune.error", "").startswith("interrupted by SIGTERM") for t in trials)
    wait_for(lambda: not _in_session(proc.pid), 30, "no process of the search left")


def _paths(tmp_path: Path, long: bool):
    runs = tmp_path / ("runs_with_a_name_long_enough_to_need_a_short_link" if long else "r")
    return study_paths(runs, "s")


def _private(path: Path) -> bool:
    st = path.lstat()
    return path.is_dir() and not path.is_symlink() and st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700


def test_ray_files_go_to_a_private_folder(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="apt"))  # a short path: Ray's files stay under the runs folder
    try:
        short = study_paths(base / "r", "s")
        temp = _private_temp_dir(short)
        assert temp == short.ray.resolve() / "r" and _private(short.ray)
    finally:
        shutil.rmtree(base)

    long = _paths(tmp_path, long=True)
    temp = _private_temp_dir(long)
    assert long.ray.is_symlink() and Path(os.readlink(long.ray)) == temp.parent
    assert temp.parent.name.startswith("ap-ray-") and _private(temp.parent)
    assert _private_temp_dir(long) == temp  # ours: used again
    shutil.rmtree(temp.parent)


@pytest.mark.parametrize("planted", ["other user", "open to others", "a link"])
def test_a_folder_not_ours_is_never_used(tmp_path, planted):
    import hashlib
    import tempfile

    paths = _paths(tmp_path, long=True)
    predictable = Path(tempfile.gettempdir()) / ("ap-ray-" + hashlib.sha1(str(paths.ray.parent.resolve() / "ray").encode()).hexdigest()[:10])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "a link":
        predictable.symlink_to(elsewhere)
    else:
        predictable.mkdir(mode=0o700)
        (predictable / "planted").write_text("x")
        if planted == "other user":
            if os.geteuid() != 0:
                pytest.skip("making a folder owned by another user needs root")
            os.chown(predictable, 65534, 65534)  # nobody
        else:
            os.chmod(predictable, 0o777)
    try:
        temp = _private_temp_dir(paths)
        assert temp.parent != predictable and _private(temp.parent)
        assert Path(os.readlink(paths.ray)) == temp.parent
        assert predictable.is_symlink() or (predictable / "planted").is_file()  # left as it was
        assert not any(elsewhere.iterdir())
        shutil.rmtree(temp.parent)
    finally:
        if predictable.is_symlink():
            predictable.unlink()
        else:
            shutil.rmtree(predictable, ignore_errors=True)


def test_a_local_instance_runs_no_more_trials_at_once_than_the_machine_allows(monkeypatch):
    """F7 for Ray: the local instance's concurrency is capped like --workers; a cluster's is its own."""
    import optuna

    from autoprune.config import config_from_dict
    from autoprune.search import runners
    from autoprune.search.runners import SearchJob
    from autoprune.search.runners.ray import _capped

    from .conftest import study_dict

    monkeypatch.setattr(runners, "machine_cores", lambda: 2)
    monkeypatch.setattr(runners, "_available_gib", lambda: 64.0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    config = config_from_dict({**study_dict(), "search": {**study_dict()["search"], "backend": "ray", "ray": {"concurrency": 64}}})
    job = SearchJob(config, "runs", "x.journal", 4, {}, None)
    assert _capped(job, study).search.ray.concurrency == 2
    joined = config.model_copy(update={"search": config.search.model_copy(update={"ray": config.search.ray.model_copy(update={"address": "10.0.0.5:6379"})})})
    assert _capped(SearchJob(joined, "runs", "x.journal", 4, {}, None), study).search.ray.concurrency == 64


def test_a_sigterm_during_ray_init_is_held_until_it_returns(tmp_path, monkeypatch):
    """D4, deterministically: ray.init first installs a SIGTERM handler of its own (sys.exit, lost when it
    lands in an at-fork hook) and its C++ core a failure handler (abort); the driver's handler must stay,
    hold the signal while ray.init runs, and raise it once ray.init has returned."""
    from ray._private import ray_constants
    from ray._private import utils as ray_utils

    from autoprune.config import config_from_dict
    from autoprune.search.interrupts import SearchInterrupted, SignalScope
    from autoprune.search.runners import SearchJob
    from autoprune.search.runners import ray as ray_runner

    from .conftest import study_dict

    done = []

    def fake_init(**kwargs):
        ray_utils.set_sigterm_handler(lambda *a: sys.exit(signal.SIGTERM))  # what ray.init does first
        assert ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER and not ray_constants.ENABLE_RAY_CLUSTER
        assert kwargs["_node_ip_address"] == "127.0.0.1"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler has run by now
        done.append(kwargs["_temp_dir"])

    monkeypatch.setattr(ray_runner.ray, "init", fake_init)
    monkeypatch.setattr(ray_runner.Reaper, "start", lambda self, marker: None)
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    job = SearchJob(config_from_dict(study_dict()), str(tmp_path / "runs"), "x.journal", 4, {}, None)
    with SignalScope():
        with pytest.raises(SearchInterrupted) as info:
            ray_runner.RayRunner()._start_local(job)
    assert info.value.signum == signal.SIGTERM and len(done) == 1  # raised after ray.init returned, not inside it
    assert ray_constants.ENABLE_RAY_CLUSTER == cluster and ray_utils.set_sigterm_handler.__name__ == "set_sigterm_handler"

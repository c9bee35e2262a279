"""ray_scaling's workloads load from the shipped studies and give every trial the same work."""

from __future__ import annotations

import pytest

from benchmarks import ray_scaling as rs


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("workload", rs.WORKLOADS, ids=lambda w: w.name)
def test_every_trial_of_a_workload_does_the_same_work(workload, quick):
    config = workload.config(quick)  # the shipped study with the overrides: valid, or this raises
    s = config.search
    assert not s.fidelity.enabled  # no promotions: a promoted trial retrains, the others only fine-tune
    assert not s.warm_start
    assert s.early_stop.after_epochs is None or s.early_stop.max_drop >= 1.0  # no trial stops early
    assert s.distillation is None
    assert s.granularities == ["unstructured"] and s.methods == ["magnitude"] and s.quantize == ["none"]
    assert s.finetune.epochs[0] == s.finetune.epochs[1]  # fixed epochs
    assert len(s.recovery) == 1


def test_sampler_choice_variants_load_and_can_be_chosen(monkeypatch):
    """Every sampler_choice search of a full run is a valid config; AUTOPRUNE_SC_VARIANTS keeps the named ones."""
    from benchmarks import sampler_choice as sc
    from benchmarks import search_quality as sq

    monkeypatch.delenv("AUTOPRUNE_SC_VARIANTS", raising=False)
    names = [name for name, _ in sc.variants("mnist1d")]
    shipped = sq.base_config("mnist1d").search.fidelity.share
    assert names[: len(sc.SAMPLERS)] == sc.SAMPLERS and sc.NO_FIDELITY in names
    shares = [x for x in sc.SHARES if x != shipped]
    assert [n for n in names if n.startswith("share_")] == [f"share_{round(x * 100)}" for x in shares]
    for name, job in sc.variants("mnist1d"):
        config = sq.base_config("mnist1d", **(job.get("extra") or {}), **({"search.sampler": job["sampler"]} if job["sampler"] else {}))
        if name.startswith("share_"):
            assert config.search.fidelity.enabled and config.search.fidelity.share == int(name.split("_")[1]) / 100
        if name.startswith("upto_"):
            cap = name.split("_")[1]
            assert config.search.fidelity.max_size_ratio == (None if cap == "all" else int(cap) / 100)
        if name.startswith("rung_"):
            epochs = name.split("_")[1]
            assert config.search.fidelity.finetune_epochs == (None if epochs == "all" else int(epochs))
            assert config.search.trials == sq.base_config("mnist1d").search.trials
        if name.startswith("trials_"):
            assert config.search.trials == int(name.split("_")[1]) != sq.base_config("mnist1d").search.trials
    caps = [x for x in sc.MAX_SIZES if x != sq.base_config("mnist1d").search.fidelity.max_size_ratio]
    assert [n for n in names if n.startswith("upto_")] == [sc._upto(x) for x in caps] and len(caps) == len(sc.MAX_SIZES) - 1
    assert [n for n in names if n.startswith("rung_")] == [sc._rung(x) for x in sc.RUNGS]  # the shipped rung too
    assert [n for n in names if n.startswith("trials_")] == [f"trials_{n}" for n in sc.TRIALS if n != sq.base_config("mnist1d").search.trials]
    monkeypatch.setenv("AUTOPRUNE_SC_VARIANTS", f"tpe,share_{round(shares[0] * 100)}")
    assert [name for name, _ in sc.variants("mnist1d")] == ["tpe", f"share_{round(shares[0] * 100)}"]
    monkeypatch.setenv("AUTOPRUNE_SC_VARIANTS", "tpe,jv:rung_all,mnist1d:rung_6")
    assert [name for name, _ in sc.variants("mnist1d")] == ["tpe", "rung_6"] and [name for name, _ in sc.variants("jv")] == ["tpe", "rung_all"]
    monkeypatch.setenv("AUTOPRUNE_SC_VARIANTS", "tpe,share_99")
    with pytest.raises(ValueError, match=r"AUTOPRUNE_SC_VARIANTS: unknown variant\(s\) \['share_99'\] for mnist1d; known: nsga2, tpe"):
        sc.variants("mnist1d")


def test_ray_scaling_roles_of_processes(monkeypatch):
    """CPU seconds are counted by role: a fork that still shows the driver's command line gets its role later, and a
    path that merely contains "ray" (the benchmark's own runs folder) is not one of Ray's services."""
    driver = "/v/bin/python /v/bin/autoprune --runs-dir /tmp/b/runs/ray_scaling -q search x.yaml --backend local"
    cmds = {
        1: driver,
        2: driver,  # forked, not yet exec'd
        3: "/v/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5) --multiprocessing-fork",
        4: "/v/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ap-ray-1/r",
        5: "ray::ImplicitFunc.train",
        6: "/usr/bin/sh -c tail /tmp/b/runs/ray_scaling/log",
    }
    monkeypatch.setattr(rs, "_cmdline", lambda pid: cmds.get(pid))
    roles = {pid: rs._role(pid, 1, driver) for pid in cmds}
    assert roles == {1: "driver", 2: None, 3: "trial processes", 4: "Ray services", 5: "trial processes", 6: "other"}
    assert rs._role(7, 1, driver) == "other"  # gone


def test_search_ab_compares_what_the_searches_found_not_their_timings():
    from benchmarks.search_ab import first_difference

    rows = [{"trial": 0, "val_accuracy": 0.9, "size_ratio": 0.05, "completed_s": 3.0, "checkpoint": "/a/0"},
            {"trial": 1, "val_accuracy": 0.8, "size_ratio": 0.01, "completed_s": 5.0, "checkpoint": "/a/1"}]
    timed_else = [{**r, "completed_s": r["completed_s"] * 2, "checkpoint": r["checkpoint"].replace("/a", "/b")} for r in reversed(rows)]
    assert first_difference(rows, timed_else) is None  # other timings, paths and order: the same trials
    other = [rows[0], {**rows[1], "val_accuracy": 0.81}]
    assert first_difference(rows, other) == "trial 1: val_accuracy 0.8 against 0.81"
    assert first_difference(rows, rows[:1]) == "2 complete trials against 1"


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: it waits only for its reaper
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["pool", "command"])
def test_a_killed_benchmark_takes_its_jobs_with_it(kind, tmp_path):
    """The benchmarks' job processes (process_pool's workers, search_ab's two searches) die with a SIGKILLed
    benchmark: left running they keep the cores busy and spoil every timing taken after."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pids = tmp_path / "pids"
    job = {
        "pool": ("from benchmarks._common import process_pool\n"
                 "import os, time\n"
                 "if __name__ == '__main__':\n"
                 "    with process_pool(2) as pool:\n"
                 "        futs = [pool.submit(os.getpid) for _ in range(8)]\n"
                 f"        open({str(pids)!r}, 'w').write(' '.join(str(f.result()) for f in futs))\n"
                 "        pool.submit(time.sleep, 600); time.sleep(600)\n"),
        "command": ("from autoprune.search.faults import kill_with_parent\n"
                    "import subprocess, sys, time\n"
                    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], preexec_fn=kill_with_parent)\n"
                    f"open({str(pids)!r}, 'w').write(str(p.pid)); time.sleep(600)\n"),
    }[kind]
    script = tmp_path / "bench.py"
    script.write_text(job)
    repo = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, str(script)], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        deadline = time.time() + 120
        while not (pids.exists() and pids.read_text().strip()) and time.time() < deadline and parent.poll() is None:
            time.sleep(0.2)
        children = {int(p) for p in pids.read_text().split()}
        assert children and all(_pid_alive(p) for p in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.time() + 30
        while any(_pid_alive(p) for p in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_pid_alive(p) for p in children), f"left running after their benchmark was killed: {children}"
    finally:
        parent.kill()
        for p in {int(p) for p in pids.read_text().split()} if pids.exists() else ():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

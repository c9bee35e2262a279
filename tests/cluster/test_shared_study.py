"""Issue 22, one study shared by drivers on several machines (each with its own runs folder) in a real
PostgreSQL: the total is exact (C2), no policy is run twice, and drivers starting at once on a fresh
database both start (C2race)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from .conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _claimer(url: str, lock_dir: str, total: int, out) -> None:
    """One 'machine': its own lock file folder, claiming trials of the shared study as fast as it can."""
    from autoprune.search.claim import TotalReached, claim
    from autoprune.search.storage import Storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="shared", storage=Storage(url).open())
    n = 0
    while True:
        try:
            trial = claim(study, total, Path(lock_dir) / "ask.lock")
        except TotalReached:
            break
        study.tell(trial, [0.5, float(trial.number)])
        n += 1
    out.put(n)


def test_claims_from_several_machines_stop_at_the_total(postgres, tmp_path):
    """Four processes with four runs folders (file locks that order nothing between them) claim at once."""
    from autoprune.search.storage import Storage

    url = postgres("claims_shared")
    optuna.create_study(study_name="shared", storage=Storage(url).open(), directions=["maximize", "minimize"])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, str(tmp_path / f"machine{i}"), 24, out)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert all(p.exitcode == 0 for p in procs)
    study = optuna.load_study(study_name="shared", storage=url)
    assert sum(out.get(timeout=5) for _ in procs) == 24
    assert len([t for t in study.get_trials(deepcopy=False) if t.state in COUNTED]) == 24


def test_server_lock_is_exclusive_across_connections(postgres):
    import threading
    import time

    from autoprune.services.databases import server_lock

    url = postgres("lock_probe")
    inside, overlaps = [], []

    def hold():
        with server_lock(url, "probe"):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.2)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not overlaps


@pytest.mark.slow
def test_two_drivers_on_a_fresh_database_end_exact_and_distinct(tmp_path, postgres):
    """C2race + C2: two drivers start at once on an empty database (Optuna creates its tables) and search the
    same study to 6 trials from two runs folders: both exit 0, 6 counted trials, no policy twice."""
    url = postgres("two_drivers_fresh")
    cfg = write_study(tmp_path / "tiny.yaml", trials=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-m", "autoprune", "-q", "--runs-dir", str(tmp_path / f"runs_{m}"), "search", str(cfg), "--storage", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for m in ("a", "b")]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    study = optuna.load_study(study_name="tiny", storage=url)
    counted = [t for t in study.get_trials(deepcopy=False) if t.state in COUNTED]
    assert len(counted) == 6
    policies = [json.dumps(t.user_attrs["autoprune.policy"], sort_keys=True) for t in counted]
    assert len(set(policies)) == 6, policies
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]

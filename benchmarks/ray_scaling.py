"""ray_scaling: the Ray Tune backend against the local one on the JapaneseVowels study.

Three searches of the same N trials (random sampler, fine-tune epochs fixed, distinct study
names, the same cached dense model), each run as a user runs it, as a CLI subprocess:

* ``--backend local --workers 1``           the baseline
* ``--backend ray --concurrency 2``         a local Ray instance (started by the search), 1 CPU per trial
* ``--backend local --workers 2``           the same concurrency without Ray

1. Throughput: trials per hour of Ray at 2 concurrent trials against local with 1 worker.
2. Per-trial overhead at the same concurrency: search seconds per trial, Ray against local
   ``--workers 2`` (the target); beside it the median trial duration as the study records it
   (Ray: asked → told on the driver, which includes the wait of the one trial asked ahead so
   that Tune reuses trial processes; local: start → end in the worker process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

from benchmarks._common import REPO, Context, header, load_study_config, log, median, one_thread, search_key_supported, shared_dense, table, verdict, write_result

NAME = "ray_scaling"
TARGET_THROUGHPUT = 1.7
TARGET_OVERHEAD = 1.15
EPOCHS = 8
CANDIDATES = {
    "local, 1 worker": ["--backend", "local", "--workers", "1"],
    "ray, 2 concurrent": ["--backend", "ray", "--concurrency", "2", "--cpus-per-trial", "1"],
    "local, 2 workers": ["--backend", "local", "--workers", "2"],
}


def _search(config_path: Path, runs_dir: Path, study: str, trials: int, args: List[str]) -> Dict[str, Any]:
    exe = Path(sys.executable).with_name("autoprune")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "autoprune"])]
    cmd += ["--runs-dir", str(runs_dir), "-q", "search", str(config_path), "--study", study, "--trials", str(trials), "--sampler", "random", "--json", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    counted = out["n_complete"] + out["n_stopped_early"]
    from autoprune.search.study import open_study

    study_obj, _ = open_study(study, runs_dir)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study_obj.get_trials(deepcopy=False) if t.datetime_complete and t.datetime_start and t.state.name in ("COMPLETE", "PRUNED")]
    return {
        "wall_s": wall,
        "search_s": out["duration_s"],
        "counted": counted,
        "failed": out["n_failed"],
        "per_hour": counted / out["duration_s"] * 3600,
        "per_hour_wall": counted / wall * 3600,
        "trial_s": median(durations),
    }


def run(ctx: Context) -> None:
    one_thread()
    rd = ctx.runs(NAME)
    n_trials = 6 if ctx.quick else 12
    rounds = list(CANDIDATES) if ctx.quick else [*CANDIDATES, *reversed(CANDIDATES)]
    overrides: Dict[str, Any] = {"search.finetune.epochs": [EPOCHS, EPOCHS]}
    if search_key_supported("recipe_check"):
        overrides["search.recipe_check.enabled"] = False  # the same for all; it runs before the trials
    fixed = load_study_config("japanese_vowels_lstm", overrides)
    cfg_path = rd / "japanese_vowels_lstm_fixed_epochs.yaml"
    cfg_path.write_text(yaml.safe_dump(fixed.to_dict(), sort_keys=False))
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in CANDIDATES}
    load_start = os.getloadavg()
    stamp = time.strftime("%m%d%H%M%S")
    for i, name in enumerate(rounds):
        # a fresh study each time: an existing one would resume, and its earlier trials count toward --trials
        study = f"rs{stamp}_{i}_{name.split(',')[0]}_{name.split()[-2]}"
        shared_dense(fixed.model_copy(update={"study": "dense_jv"}), ctx.runs_root / "dense_cache", rd, [study])
        log(f"{NAME}: autoprune search {' '.join(CANDIDATES[name])} --trials {n_trials} (study {study})")
        runs[name].append(_search(cfg_path, rd, study, n_trials, CANDIDATES[name]))

    def m(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    base, ray, same = "local, 1 worker", "ray, 2 concurrent", "local, 2 workers"
    throughput = m(ray, "per_hour") / m(base, "per_hour")
    overhead = m(ray, "trial_s") / m(same, "trial_s")
    per_trial_search = (m(ray, "search_s") / m(ray, "counted")) / (m(same, "search_s") / m(same, "counted"))
    rows = [
        [name, len(runs[name]), int(m(name, "counted")), m(name, "search_s"), m(name, "wall_s"), m(name, "per_hour"), m(name, "per_hour_wall"), m(name, "trial_s"), sum(r["failed"] for r in runs[name])]
        for name in CANDIDATES
    ]
    lines = header(
        "ray_scaling: the Ray Tune backend against the local one",
        ctx,
        [
            f"`autoprune --runs-dir runs/bench/{NAME} -q search <JapaneseVowels study, fine-tune epochs fixed to {EPOCHS}, recipe check off> "
            f"--study <distinct> --trials {n_trials} --sampler random --json <backend flags>`, each a subprocess, in the order {rounds}. "
            "`search (s)`: the `duration_s` the search reports (from the study lock to the end; for Ray it includes starting and stopping the local Ray instance); "
            "`process (s)` adds interpreter start and imports. `trial (s)`: median trial duration as the study records it "
            "(Ray: asked to told on the driver, including Tune's dispatch and the queue wait of the trial asked ahead; local: start to end in the worker). "
            f"This machine has {os.cpu_count()} cores shared with other jobs; load average at the start {load_start[0]:.1f}, {load_start[1]:.1f}, {load_start[2]:.1f}.",
        ],
    )
    lines += table(["backend", "runs", "trials", "search (s)", "process (s)", "trials / hour (search)", "trials / hour (process)", "trial (s)", "failed trials"], rows)
    lines += [
        "",
        f"**Target: Ray at 2 concurrent trials >= {TARGET_THROUGHPUT}x the trials per hour of local with 1 worker.** "
        f"Measured {m(ray, 'per_hour'):.0f} / {m(base, 'per_hour'):.0f} = {throughput:.2f}x (search time; "
        f"{m(ray, 'per_hour_wall') / m(base, 'per_hour_wall'):.2f}x by process wall time) → {verdict(throughput >= TARGET_THROUGHPUT)}.",
        "",
        f"**Target: per-trial overhead of Ray <= {TARGET_OVERHEAD}x local at the same concurrency (2).** "
        f"Search seconds per trial {per_trial_search:.2f}x → {verdict(per_trial_search <= TARGET_OVERHEAD)} "
        f"(median recorded trial duration {m(ray, 'trial_s'):.2f} s / {m(same, 'trial_s'):.2f} s = {overhead:.2f}x, Ray's including its queue wait).",
    ]
    write_result(ctx, NAME, lines)

"""ray_scaling: does running trials side by side pay, with Ray Tune and with local workers, at short and long trials?

For each workload three searches of the same N trials run as a user runs them (a CLI
subprocess each, random sampler, distinct study names, the same cached dense model):

* ``--backend local --workers 1``                     the baseline
* ``--backend ray --concurrency 2 --cpus-per-trial 1`` a local Ray instance started by the search
* ``--backend local --workers 2``                     the same concurrency without Ray

Workloads (every trial does the same work: unstructured magnitude pruning, fixed epochs, no
early stop, no warm start, no multi-fidelity promotions, so that trial length does not depend on the sampled policy):

* ``short``: the JapaneseVowels study (bi-LSTM 128x2), 8 fine-tune epochs: about 3 s per trial;
* ``long``: the MNIST-1D study (bi-GRU 64x2, attention), 6 fine-tune epochs then rewinding
  over 10 epochs: the shipped study's promoted trial at its longest fine-tune (about 60 s on one free core).

Reported per run: search seconds, trials per hour, the median trial duration as ``run_trial``
measures it (its own work), the per-trial overhead in seconds (search seconds x concurrency /
trials - trial duration: everything a trial costs beyond its own work, start-up included), how
many processes ran trials (start-up paid once per worker: 2 for 12 trials, not 12), and the
CPU seconds of every process of the search by role (the driver; Ray's services; the processes
that ran trials), sampled from /proc: on a shared machine CPU seconds move much less than
wall time, and on 2 cores every CPU second outside the trials is taken from them.
From the per-trial overhead ``o`` and the slowdown ``c`` of a trial when two run at once, the
trial length at which a backend reaches 1.7x one worker is ``T = 1.7 o / (2 - 1.7 c)`` (none when
``c >= 2/1.7``: the cores themselves do not scale).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from benchmarks._common import (
    REPO, Context, header, load_study_config, log, median, one_thread, search_key_supported, shared_dense, table, verdict, write_result,
)

NAME = "ray_scaling"
TARGET_THROUGHPUT = 1.7
TARGET_OVERHEAD = 1.10
CONCURRENCY = 2
BASE, RAY, LOCAL2 = "local, 1 worker", "ray, 2 concurrent", "local, 2 workers"
CANDIDATES = {
    BASE: ["--backend", "local", "--workers", "1"],
    RAY: ["--backend", "ray", "--concurrency", str(CONCURRENCY), "--cpus-per-trial", "1"],
    LOCAL2: ["--backend", "local", "--workers", str(CONCURRENCY)],
}
#: every trial the same work (trial length must not depend on the sampled policy)
SAME_WORK = {
    "search.granularities": ["unstructured"],
    "search.methods": ["magnitude"],
    "search.quantize": ["none"],
    "search.early_stop.max_drop": 1.0,  # no trial is stopped early (no accuracy is below dense - 1.0)
    "search.warm_start": False,
    # no promotions: with multi-fidelity on, most trials fine-tune only and the promoted ones retrain, and a promotion
    # waits for the trials that may earn it (the shipped studies have it on)
    "search.fidelity.enabled": False,
}


@dataclass
class Workload:
    name: str
    study: str  # search_spaces/<study>.yaml
    overrides: Dict[str, Any]
    trials: int  # full mode
    quick_trials: int
    quick_overrides: Dict[str, Any] = field(default_factory=dict)  # quick mode: shorter trials, to validate the pipeline

    def config(self, quick: bool) -> Any:
        overrides = {**SAME_WORK, **self.overrides, **(self.quick_overrides if quick else {})}
        if search_key_supported("recipe_check"):
            overrides["search.recipe_check.enabled"] = False  # the same for all; it runs before the trials
        return load_study_config(self.study, overrides)


WORKLOADS = [
    Workload("short", "japanese_vowels_lstm", {"search.finetune.epochs": [8, 8], "search.recovery": ["finetune"]}, trials=12, quick_trials=6),
    Workload(
        "long",
        "mnist1d_gru",
        {"search.finetune.epochs": [6, 6], "search.recovery": ["rewind"], "search.recovery_epochs": 10},
        trials=8,
        quick_trials=4,
        quick_overrides={"search.finetune.epochs": [1, 1], "search.recovery_epochs": 1},
    ),
]


# --------------------------------------------------------------------------- CPU seconds by process role

_CLK = os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> Optional[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _role(pid: int, leader: int, leader_cmd: Optional[str] = None) -> Optional[str]:
    """The role of a process of the search's session, or None while it is a fork of the driver that has not yet
    exec'd its own program (its command line is still the driver's; asked again at the next scan)."""
    if pid == leader:
        return "driver"
    cmd = _cmdline(pid)
    if cmd is None:
        return "other"
    if "default_worker.py" in cmd or cmd.startswith(("ray::ImplicitFunc", "ray::IDLE", "ray::_")) or "spawn_main" in cmd:
        return "trial processes"
    if leader_cmd is not None and cmd == leader_cmd:
        return None
    # Ray's programs live under site-packages/ray/ (gcs_server, raylet, the agents): not any path with "ray" in it
    # (the runs folder of this very benchmark is .../ray_scaling)
    if "/ray/" in cmd or cmd.startswith("ray::"):
        return "Ray services"
    return "other"


class SessionCPU(threading.Thread):
    """CPU seconds (user + system) of every process in the session of ``leader`` (the search started with
    ``start_new_session``: Ray's services, its workers and local workers are all in it), by role."""

    def __init__(self, leader: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.leader, self.every = leader, every
        self.seen: Dict[tuple, List[Any]] = {}  # (pid, start tick) -> [role, cpu seconds]
        self._done = threading.Event()
        self._leader_cmd = _cmdline(leader)  # Popen returns once the search has exec'd: its own command line

    def run(self) -> None:
        while not self._done.is_set():
            self.scan()
            self._done.wait(self.every)

    def scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) != self.leader:  # the session id
                continue
            key = (int(entry), fields[19])
            cpu = (int(fields[11]) + int(fields[12])) / _CLK
            row = self.seen.setdefault(key, [None, 0.0])
            if row[0] is None:  # new, or a fork of the driver not yet exec'd when last seen
                row[0] = _role(int(entry), self.leader, self._leader_cmd)
            row[1] = max(row[1], cpu)

    def stop(self) -> Dict[str, float]:
        self._done.set()
        self.join(5)
        out: Dict[str, float] = {}
        for role, cpu in self.seen.values():
            role = role or "forks of the driver"  # never exec'd while sampled
            out[role] = out.get(role, 0.0) + cpu
        return out


# --------------------------------------------------------------------------- one search


def _search(config_path: Path, runs_dir: Path, study: str, trials: int, args: List[str]) -> Dict[str, Any]:
    exe = Path(sys.executable).with_name("autoprune")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "autoprune"])]
    cmd += ["--runs-dir", str(runs_dir), "-q", "search", str(config_path), "--study", study, "--trials", str(trials), "--sampler", "random", "--json", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    sampler = SessionCPU(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    cpu = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out[out.index("{"):])
    return {"wall_s": wall, "cpu": cpu, **_from_study(study, runs_dir, summary)}


def _from_study(study: str, runs_dir: Path, summary: Dict[str, Any]) -> Dict[str, Any]:
    from autoprune.search import attrs
    from autoprune.search.study import open_study

    counted = summary["n_complete"] + summary["n_stopped_early"]
    study_obj, _ = open_study(study, runs_dir)
    done = [t for t in study_obj.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    # the process that ran the trial: Ray records the worker's host:pid, the local runner the asking (= running) process
    ran_in = {t.user_attrs.get(attrs.HOST) or t.user_attrs.get(attrs.DRIVER) for t in done}
    return {
        "search_s": summary["duration_s"],
        "counted": counted,
        "failed": summary["n_failed"],
        "per_hour": counted / summary["duration_s"] * 3600,
        "trial_s": median([float((t.user_attrs.get(attrs.RESULT) or {}).get("duration_s") or 0.0) for t in done]),
        "processes": len(ran_in),
    }


# --------------------------------------------------------------------------- the workloads


def _workloads() -> List[Workload]:
    """``AUTOPRUNE_RS_WORKLOADS`` (comma list of names, e.g. ``long``) runs a subset; default: all."""
    only = [w for w in os.environ.get("AUTOPRUNE_RS_WORKLOADS", "").split(",") if w]
    unknown = set(only) - {w.name for w in WORKLOADS}
    if unknown:
        raise ValueError(f"AUTOPRUNE_RS_WORKLOADS: unknown workload(s) {sorted(unknown)}; known: {[w.name for w in WORKLOADS]}")
    return [w for w in WORKLOADS if not only or w.name in only]


def _one_round() -> bool:
    """``AUTOPRUNE_RS_ROUNDS=1``: each backend once (full mode runs the order and then reversed)."""
    return os.environ.get("AUTOPRUNE_RS_ROUNDS", "2") == "1"


def _run_workload(ctx: Context, wl: Workload, rd: Path) -> Dict[str, List[Dict[str, Any]]]:
    cfg = wl.config(ctx.quick)
    n_trials = wl.quick_trials if ctx.quick else wl.trials
    cfg_path = rd / f"{wl.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    rounds = list(CANDIDATES) if ctx.quick or _one_round() else [*CANDIDATES, *reversed(CANDIDATES)]
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in CANDIDATES}
    stamp = time.strftime("%m%d%H%M%S")
    for i, name in enumerate(rounds):
        # a fresh study each time: an existing one would resume, and its earlier trials count toward --trials
        study = f"rs{stamp}_{wl.name}_{i}_{name.split(',')[0]}_{name.split()[-2]}"
        shared_dense(cfg.model_copy(update={"study": f"dense_{wl.study}"}), ctx.runs_root / "dense_cache", rd, [study])
        log(f"{NAME} [{wl.name}]: autoprune search {' '.join(CANDIDATES[name])} --trials {n_trials} (study {study})")
        runs[name].append(_search(cfg_path, rd, study, n_trials, CANDIDATES[name]))
        r = runs[name][-1]
        log(f"  {r['search_s']:.1f} s, {r['counted']} trials, trial {r['trial_s']:.1f} s, CPU s {json.dumps({k: round(v, 1) for k, v in r['cpu'].items()})}")
    return runs


def _crossover(overhead_s: float, slowdown: float) -> Optional[float]:
    """Trial length at which concurrency 2 reaches 1.7x one worker: 2T / (cT + o) = 1.7."""
    room = CONCURRENCY - TARGET_THROUGHPUT * slowdown
    return None if room <= 0 else TARGET_THROUGHPUT * max(overhead_s, 0.0) / room


def _report(wl: Workload, runs: Dict[str, List[Dict[str, Any]]], n_trials: int) -> tuple[List[str], List[str]]:
    def m(name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    def cpu(name: str, role: str) -> float:
        return median([r["cpu"].get(role, 0.0) / max(r["counted"], 1) for r in runs[name]])

    def overhead(name: str, conc: int) -> float:
        return m(name, "search_s") * conc / m(name, "counted") - m(name, "trial_s")

    rows = []
    for name in CANDIDATES:
        conc = 1 if name == BASE else CONCURRENCY
        rows.append([
            wl.name, name, len(runs[name]), int(m(name, "counted")), m(name, "search_s"), m(name, "per_hour"), m(name, "per_hour") / m(BASE, "per_hour"),
            m(name, "trial_s"), overhead(name, conc), int(m(name, "processes")),
            cpu(name, "driver"), cpu(name, "Ray services"), cpu(name, "trial processes"), sum(r["failed"] for r in runs[name]),
        ])
    per_trial = {n: m(n, "search_s") / m(n, "counted") for n in CANDIDATES}
    lines = []
    for name in (RAY, LOCAL2):
        ratio = m(name, "per_hour") / m(BASE, "per_hour")
        slowdown = m(name, "trial_s") / m(BASE, "trial_s")
        t_star = _crossover(overhead(name, CONCURRENCY), slowdown)
        lines.append(
            f"- **{wl.name}, {name}: {ratio:.2f}x** the trials per hour of one local worker (target >= {TARGET_THROUGHPUT}x: "
            f"{verdict(ratio >= TARGET_THROUGHPUT)}); a trial runs {slowdown:.2f}x as long beside another; overhead "
            f"{overhead(name, CONCURRENCY):.2f} s per trial; 1.7x reached at trials of "
            + (f"{t_star:.1f} s" if t_star is not None else "no length (the two trials slow each other too much)")
            + "."
        )
    ratio = per_trial[RAY] / per_trial[LOCAL2]
    lines.append(
        f"- **{wl.name}: per-trial overhead of Ray against local at the same concurrency: {ratio:.2f}x** (search seconds per trial, "
        f"target <= {TARGET_OVERHEAD}x: {verdict(ratio <= TARGET_OVERHEAD)})."
    )
    return rows, lines


def run(ctx: Context) -> None:
    one_thread()
    rd = ctx.runs(NAME)
    load_start = os.getloadavg()
    rows, verdicts = [], []
    workloads = _workloads()
    for wl in workloads:
        runs = _run_workload(ctx, wl, rd)
        r, v = _report(wl, runs, wl.quick_trials if ctx.quick else wl.trials)
        rows += r
        verdicts += v
    lines = header(
        "ray_scaling: trials side by side, with Ray Tune and with local workers",
        ctx,
        [
            "Each search: `autoprune --runs-dir runs/bench/ray_scaling -q search <workload> --study <distinct> --trials N --sampler random --json "
            "<backend flags>`, "
            "a subprocess in its own session, in the order local 1 / ray 2 / local 2"
            + ("" if ctx.quick or _one_round() else ", then reversed")
            + ". Workloads: "
            + "; ".join(f"`{w.name}`: {w.study}, {_describe(w, ctx.quick)}, {w.quick_trials if ctx.quick else w.trials} trials" for w in workloads)
            + ". Every trial does the same work (unstructured magnitude pruning, fixed epochs, no early stop, no warm start, no multi-fidelity promotions). "
            "`search (s)`: the `duration_s` the search reports (from the study lock to the end; Ray's includes starting and stopping its local instance). "
            "`trial (s)`: median trial duration as `run_trial` measures it (its own work). `overhead (s)`: search seconds x concurrency / trials - trial, "
            "everything a trial costs beyond its own work, start-up included. `processes`: how many processes ran trials (start-up is paid once per process). "
            "`CPU s / trial`: CPU seconds of the search's processes by role, sampled from /proc every 0.25 s, divided by the trials. "
            f"This machine has {os.cpu_count()} cores; load average at the start {load_start[0]:.1f}, {load_start[1]:.1f}, {load_start[2]:.1f} "
            "(wall times on a shared machine are noisy: compare the ratios within one run).",
        ],
    )
    lines += table(
        ["workload", "backend", "runs", "trials", "search (s)", "trials / hour", "vs 1 worker", "trial (s)", "overhead (s)", "processes",
         "driver CPU s / trial", "Ray services CPU s / trial", "trial processes CPU s / trial", "failed"],
        rows,
    )
    lines += ["", *verdicts]
    write_result(ctx, NAME, lines)


def _describe(wl: Workload, quick: bool) -> str:
    o = {**wl.overrides, **(wl.quick_overrides if quick else {})}
    text = f"{o['search.finetune.epochs'][0]} fine-tune epochs"
    if o.get("search.recovery") == ["rewind"]:
        text += f" + rewinding over {o['search.recovery_epochs']} epochs"
    return text

"""trial_overhead: the cost of one autoprune trial against the same work as a plain loop, and search workers.

1. ``run_trial`` with a fixed policy (taylor hidden-unit pruning of half the units of every
   layer, one shot, 8 fine-tune epochs, Adam lr 1e-3, clip norm 1.0) on the JapaneseVowels
   study model, against the same prune-then-fine-tune as a plain PyTorch loop: load the
   dense checkpoint and the data, Taylor unit scores |w·∂L/∂w| on 8 training batches,
   unit masks, 8 epochs with masked gradients and weights re-zeroed after every step,
   validation every epoch keeping the best epoch, compaction, size, validation and
   test accuracy. Interleaved repeats, medians, ratio.
2. ``autoprune search`` (the CLI, as a user runs it) with ``--workers 1`` and ``--workers 2``,
   the same N trials, random sampler, distinct study names: trials per hour and ratio.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

from benchmarks._common import REPO, Context, header, interleave, load_study_config, log, median, one_thread, shared_dense, spread, table, verdict, write_result

NAME = "trial_overhead"
TARGET_OVERHEAD = 1.25
TARGET_WORKERS = 1.7
EPOCHS, LR, SPARSITY, CALIBRATION = 8, 1e-3, 0.5, 8


def policy(config: Any):
    from autoprune.pruning.policy import policy_from_dict

    clip = config.train.grad_clip
    return policy_from_dict({
        "method": "taylor",
        "granularity": "hidden_unit",
        "sparsity": SPARSITY,
        "schedule": {"kind": "one_shot", "start_epoch": 0},
        "grad_clip": {"value": clip.value, "algorithm": clip.algorithm},
        "finetune": {"epochs": EPOCHS, "lr": LR},
        "calibration_batches": CALIBRATION,
    })


def plain_trial(config: Any, checkpoint: str) -> Dict[str, Any]:
    """Prune-then-fine-tune as a plain loop (the package only for loading, bookkeeping of unit groups, compaction and size)."""
    import torch
    import torch.nn.functional as F

    from autoprune.tasks import build_datamodule
    from autoprune.reference.cache import load_dense_model
    from autoprune.pruning.compact import compact
    from autoprune.pruning.groups import ModelGroups
    from autoprune.runtime.measure import size_bytes

    torch.manual_seed(config.seed)
    dm = build_datamodule(config)
    model, _ = load_dense_model(checkpoint)
    groups = ModelGroups(model)
    names = sorted({p for layer in groups.iter_layers() for p in (*layer.row_params, layer.hh, *(c.param for c in layer.consumers))})
    params = {n: groups.params[n] for n in names}

    # Taylor unit scores |w * dL/dw| summed over each unit's weights, on a few training batches
    model.eval()
    scores = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, lengths, y in itertools.islice(iter(dm.train_dataloader()), CALIBRATION):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, lengths), y).backward()
        with torch.no_grad():
            for n, p in params.items():
                scores[n] += (p * p.grad).abs()
    model.zero_grad(set_to_none=True)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    for layer in groups.iter_layers():
        s = groups.unit_reduce(layer, scores)
        keep = torch.ones(layer.hidden, dtype=torch.bool)
        keep[torch.topk(s, int(round(SPARSITY * layer.hidden)), largest=False).indices] = False
        groups.apply_unit_mask(layer, keep, masks)
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(masks[n])

    # fine-tune with masked gradients, re-zeroing pruned weights after every step
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    clip = config.train.grad_clip
    loader = dm.train_dataloader()
    xv, lv, yv = dm.tensors("val")
    best, best_state = None, None
    for epoch in range(EPOCHS):
        model.train()
        for x, lengths, y in loader:
            loss = F.cross_entropy(model(x, lengths), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for n, p in params.items():
                p.grad.mul_(masks[n])
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip.value)
            opt.step()
            with torch.no_grad():
                for n, p in params.items():
                    p.mul_(masks[n])
        model.eval()
        with torch.no_grad():
            logits = model(xv[:, : int(lv.max())], lv)
            score = (float((logits.argmax(1) == yv).float().mean()), -float(F.cross_entropy(logits, yv)))
        if best is None or score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    small = compact(model)

    def acc(split: str) -> float:
        x, lengths, y = dm.tensors(split)
        with torch.no_grad():
            return float((small(x[:, : int(lengths.max())], lengths).argmax(1) == y).float().mean())

    return {"val_accuracy": acc("val"), "test_accuracy": acc("test"), "size_bytes": size_bytes(small), "hidden_sizes": small.hidden_sizes}


def _cli_search(config_path: Path, runs_dir: Path, study: str, trials: int, workers: int) -> Dict[str, Any]:
    exe = Path(sys.executable).with_name("autoprune")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "autoprune"])]
    cmd += ["--runs-dir", str(runs_dir), "-q", "search", str(config_path), "--study", study, "--trials", str(trials), "--workers", str(workers), "--sampler", "random", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    counted = out["n_complete"] + out["n_stopped_early"]
    return {"wall_s": wall, "search_s": out["duration_s"], "counted": counted, "failed": out["n_failed"], "per_hour": counted / out["duration_s"] * 3600, "per_hour_wall": counted / wall * 3600}


def run(ctx: Context) -> None:
    one_thread()
    from autoprune.trial.result import TrialOptions
    from autoprune.trial.run import run_trial
    from autoprune.models.fitting import quiet_lightning

    quiet_lightning()
    rd = ctx.runs(NAME)
    config = load_study_config("japanese_vowels_lstm", {"study": "to_trial"})
    dense = shared_dense(config.model_copy(update={"study": "dense_jv"}), ctx.runs_root / "dense_cache", rd, [config.study])
    pol = policy(config)
    repeats = 3 if ctx.quick else 5

    # ---- 1. run_trial vs plain loop
    results: Dict[str, List[Dict[str, Any]]] = {"run_trial": [], "plain loop": []}

    def via_run_trial() -> float:
        t0 = time.perf_counter()
        r = run_trial(config, pol, TrialOptions(runs_dir=str(rd), trial_dir=None, threads=1, measure_latency=False))
        dt = time.perf_counter() - t0
        results["run_trial"].append({"val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "size_bytes": r.size_bytes, "hidden_sizes": r.hidden_sizes})
        return dt

    def via_plain() -> float:
        t0 = time.perf_counter()
        r = plain_trial(config, str(dense.checkpoint))
        dt = time.perf_counter() - t0
        results["plain loop"].append(r)
        return dt

    log(f"{NAME}: warm-up, then {repeats} interleaved repeats of run_trial and the plain loop")
    via_run_trial(), via_plain()
    results = {"run_trial": [], "plain loop": []}
    times = interleave({"run_trial": via_run_trial, "plain loop": via_plain}, repeats)
    t_rt, t_pl = median(times["run_trial"]), median(times["plain loop"])
    ratio = t_rt / t_pl
    trial_rows = []
    for key in ("run_trial", "plain loop"):
        rs = results[key]
        trial_rows.append([key, median(times[key]), spread(times[key]), len(times[key]), median([r["val_accuracy"] for r in rs]), median([r["test_accuracy"] for r in rs]), rs[-1]["size_bytes"], str(rs[-1]["hidden_sizes"])])

    # ---- 2. search workers
    n_trials = 4 if ctx.quick else 16  # quick: a smoke run of the code (CI), not a measurement
    rounds = [1, 2] if ctx.quick else [1, 2, 2, 1]
    fixed = load_study_config("japanese_vowels_lstm", {"search.finetune.epochs": [EPOCHS, EPOCHS]})
    cfg_path = rd / "japanese_vowels_lstm_fixed_epochs.yaml"
    cfg_path.write_text(yaml.safe_dump(fixed.to_dict(), sort_keys=False))
    worker_runs: Dict[int, List[Dict[str, Any]]] = {1: [], 2: []}
    stamp = time.strftime("%m%d%H%M%S")
    for i, w in enumerate(rounds):
        # a fresh study each run: an existing one would resume, and its earlier trials count toward --trials
        study = f"to{stamp}_workers{w}_{i}"
        shared_dense(fixed.model_copy(update={"study": "dense_jv"}), ctx.runs_root / "dense_cache", rd, [study])
        log(f"{NAME}: autoprune search --workers {w} --trials {n_trials} (study {study})")
        worker_runs[w].append(_cli_search(cfg_path, rd, study, n_trials, w))
    w1 = median([r["per_hour"] for r in worker_runs[1]])
    w2 = median([r["per_hour"] for r in worker_runs[2]])
    w1_wall = median([r["per_hour_wall"] for r in worker_runs[1]])
    w2_wall = median([r["per_hour_wall"] for r in worker_runs[2]])
    wratio = w2 / w1
    worker_rows = [
        [f"--workers {w}", len(worker_runs[w]), int(median([r["counted"] for r in worker_runs[w]])), median([r["search_s"] for r in worker_runs[w]]),
         median([r["wall_s"] for r in worker_runs[w]]), median([r["per_hour"] for r in worker_runs[w]]), median([r["per_hour_wall"] for r in worker_runs[w]]),
         sum(r["failed"] for r in worker_runs[w])]
        for w in (1, 2)
    ]

    lines = header(
        "trial_overhead: one trial vs a plain loop, and search workers",
        ctx,
        [
            f"Policy: taylor, hidden_unit, {SPARSITY:.0%} of the units of every layer, one shot at epoch 0 ({CALIBRATION} calibration batches), "
            f"{EPOCHS} fine-tune epochs, Adam lr {LR}, clip norm {config.train.grad_clip.value}, on the JapaneseVowels study model (bi-LSTM 128x2, dense cached). "
            "`run_trial` runs with `measure_latency=False` (the plain loop measures no latency either) and `trial_dir=None`. "
            "Both sides load the dense checkpoint and build the data module inside the stopwatch. "
            f"{repeats} interleaved repeats after one untimed warm-up of each; medians.",
        ],
    )
    lines += table(["candidate", "median (s)", "min–max (s)", "repeats", "val acc (median)", "test acc (median)", "size (B)", "hidden sizes"], trial_rows, align="lrrrrrrl")
    lines += [
        "",
        f"**Target: run_trial / plain loop <= {TARGET_OVERHEAD}.** Measured {t_rt:.3f} s / {t_pl:.3f} s = {ratio:.2f}x → {verdict(ratio <= TARGET_OVERHEAD)}.",
        "",
        "## Search workers",
        "",
        f"`autoprune --runs-dir runs/bench/trial_overhead -q search <JapaneseVowels study, fine-tune epochs fixed to {EPOCHS}> --study <distinct> --trials {n_trials} "
        f"--workers W --sampler random --json`, run as a subprocess, in the order {rounds} (interleaved). "
        "`search (s)` is the `duration_s` the search reports (from taking the study lock to the end: dense cache check, MLflow setup, trials, front artifacts); "
        "`process (s)` adds interpreter start and imports. Trials = complete + stopped early. "
        f"This machine has {os.cpu_count()} cores, shared with other jobs.",
        "",
    ]
    lines += table(["workers", "runs", "trials", "search (s)", "process (s)", "trials / hour (search)", "trials / hour (process)", "failed trials"], worker_rows)
    lines += [
        "",
        f"**Target: --workers 2 >= {TARGET_WORKERS}x the trials per hour of --workers 1.** Measured {w2:.0f} / {w1:.0f} = {wratio:.2f}x (search time; "
        f"{w2_wall / w1_wall:.2f}x by process wall time) → {verdict(wratio >= TARGET_WORKERS)}.",
    ]
    write_result(ctx, NAME, lines)

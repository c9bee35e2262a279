"""recovery_choice: which recovery after pruning helps at small sizes? (chooses the shipped studies' defaults)

``python -m benchmarks.recovery_choice [--task jv|mnist1d] [--seeds 0 1] [--results-dir DIR]``

One task, a few seeds (the dense model and the trials seeded together): uniform hidden-unit pruning (Taylor, AGP, the search's fine-tune
budget) to the largest width that fits 5 % and 2 % of the dense size, then each recovery
(``finetune``, ``rewind``, ``scratch``), each with and without distillation from the dense
model (weight 0.5). Not part of ``python -m benchmarks`` (it is a measurement that set the
defaults, not a headline); it writes ``results/recovery_choice_<task>.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from benchmarks._common import REPO, Context, header, log, one_thread, quiet, table, write_result

NAME = "recovery_choice"
LEVELS = [0.05, 0.02]
VARIANTS = [("finetune", 0.0), ("finetune", 0.5), ("rewind", 0.0), ("rewind", 0.5), ("scratch", 0.0), ("scratch", 0.5)]


def parse_variant(text: str) -> Tuple[str, float]:
    """``rewind`` or ``rewind:0.5`` (recovery, distillation weight)."""
    from autoprune.pruning.recovery import RECOVERIES

    kind, _, distill = text.partition(":")
    if kind not in RECOVERIES:
        raise argparse.ArgumentTypeError(f"unknown recovery {kind!r}; allowed: {', '.join(RECOVERIES)} (optionally :<distillation weight>)")
    return kind, float(distill or 0.0)


def run(ctx: Context, task: str, seed: int, variants=VARIANTS, recovery_epochs: Optional[int] = None) -> Tuple[List[str], List[List[Any]]]:
    from benchmarks import search_quality as sq
    from benchmarks._common import shared_dense
    from autoprune.pruning.recovery import recovery_epochs as recovery_epochs_of
    from autoprune.trial.result import TrialOptions
    from autoprune.trial.run import run_trial

    overrides: Dict[str, Any] = {"search.seed": seed}
    if recovery_epochs:
        overrides["search.recovery_epochs"] = recovery_epochs
    config = sq.base_config(task, seed, study=f"rc_{task}_s{seed}", **overrides)
    retrain = recovery_epochs_of(config)
    rd = ctx.runs(NAME, fresh=False)
    dense = shared_dense(sq.base_config(task, seed, study=f"dense_{task}"), sq.dense_cache(ctx), rd, [config.study])  # the search_quality cache
    epochs = sq.FINETUNE_EPOCHS
    rows: List[List[Any]] = []
    for level in LEVELS:
        width = sq.width_for_level(dense.arch, level)
        frac = 1.0 - width / max(max(h) for h in dense.arch.hidden_sizes)
        for recovery, distill in variants:
            policy = sq.uniform_unit_policy("taylor", frac, config, recovery=recovery, distill=distill)
            log(f"{NAME}: {task} ≤ {level:.0%} (width {width}) {recovery} distill {distill}")
            t0 = time.perf_counter()
            r = run_trial(config, policy, TrialOptions(runs_dir=str(rd), threads=1, measure_latency=False))
            rows.append([f"≤ {level:.0%}", width, f"{100 * r.size_bytes / (dense.metrics['params'] * 4):.2f} %", recovery, distill,
                         r.val_accuracy, r.test_accuracy, time.perf_counter() - t0])
    lines = [
        f"## {sq.TASKS[task]['label']}, seed {seed}",
        "",
        f"Dense: validation {dense.metrics['val_accuracy']:.4f}, test {dense.metrics['test_accuracy']:.4f}. Every row: Taylor hidden-unit "
        f"pruning of the same fraction of units in every layer, AGP over {epochs} fine-tune epochs at lr {sq.BASELINE_LR}, then the recovery; "
        f"rewind and scratch retrain with the study's dense schedule ({retrain} epochs, lr {config.train.lr}, {config.train.lr_schedule}). "
        "Distillation weight 0.5 (temperature 2) applies to the fine-tune and to the retraining.",
        "",
    ]
    lines += table(["level", "width", "size", "recovery", "distillation", "val acc", "test acc", "wall (s)"], rows, align="lrllrrrr")
    return lines, rows


def summary(per_seed: List[List[List[Any]]]) -> List[str]:
    """Mean test (and validation) accuracy over the seeds, per level and variant."""
    import statistics

    out = [f"## Mean over {len(per_seed)} seeds", ""]
    rows = []
    for i, first in enumerate(per_seed[0]):
        vals = [seed_rows[i] for seed_rows in per_seed]
        rows.append(first[:5] + [statistics.fmean(v[5] for v in vals), statistics.fmean(v[6] for v in vals), " / ".join(f"{v[6]:.3f}" for v in vals)])
    return out + table(["level", "width", "size", "recovery", "distillation", "mean val acc", "mean test acc", "test acc per seed"], rows, align="lrllrrrl")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery_choice")
    parser.add_argument("--task", default="jv", choices=["jv", "mnist1d"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=VARIANTS, help="recoveries to measure, e.g. finetune rewind rewind:0.5 (default: all six)")
    parser.add_argument("--recovery-epochs", type=int, default=None, help="search.recovery_epochs for the retraining (default: the study's)")
    parser.add_argument("--name", default=None, help="results file name (default recovery_choice_<task>)")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    os.chdir(REPO)
    one_thread()
    quiet()
    command = "python -m benchmarks.recovery_choice " + " ".join(argv if argv is not None else sys.argv[1:])
    ctx = Context(quick=False, runs_root=Path(args.runs_dir), results_dir=Path(args.results_dir), command=command.strip())
    body: List[str] = []
    per_seed = []
    for seed in args.seeds:
        lines, rows = run(ctx, args.task, seed, args.variants, args.recovery_epochs)
        body += lines + [""]
        per_seed.append(rows)
    body = summary(per_seed) + [""] + body
    write_result(ctx, args.name or f"{NAME}_{args.task}", header(f"recovery_choice: fine-tune vs rewind vs scratch, with and without distillation ({args.task})", ctx) + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

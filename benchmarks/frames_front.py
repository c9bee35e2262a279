"""frames_front: the per-frame task's Pareto front (issue 20) against a small dense model and uniform pruning, 3 seeds.

The task is ``search_spaces/jv_speaker_frames.yaml``: JapaneseVowels utterances joined into sequences
of 2-4 speakers, every frame labelled with who is speaking, a 2-layer LSTM 64 tagging each frame
(accuracy per frame over the true lengths). The contenders and their rules are search_quality's
(same dense model per seed, chosen by validation accuracy, reported on test):

* ``autoprune``: ``run_search`` with the study's space, N trials (12 quick, 30 full), fine-tune epochs fixed;
* ``scratch``: a small dense model from scratch at each level's uniform width (the study's dense recipe);
* ``uniform_taylor`` / ``uniform_magnitude``: the same fraction of hidden units removed from every layer (AGP),
  then the recovery the study's warm start gives uniform units.

Reported: mean and standard deviation over the seeds of the test accuracy at ≤ 10 / 5 / 2 % of the
dense size and of the hypervolume (search_quality's definitions), the chosen points, wall time, a plot.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, List, Tuple

from benchmarks import search_quality as sq
from benchmarks._common import Context, header, one_thread, table, verdict, write_result

NAME = "frames_front"
TASK = "frames"
CONTENDERS = [
    ("autoprune", "autoprune (NSGA-II)"),
    ("scratch", "small dense from scratch"),
    ("uniform_taylor", "uniform hidden units, Taylor (AGP)"),
    ("uniform_magnitude", "uniform hidden units, magnitude (AGP)"),
]


def _report(ctx: Context, seeds: List[int], res: Dict[Tuple[str, int, str], Dict[str, Any]]) -> List[str]:
    a = sq.analyse(TASK, seeds, res, CONTENDERS)
    n = len(seeds)
    dense = [res[(TASK, s, "dense")]["metrics"] for s in seeds]
    dense_test = sum(d["test_accuracy"] for d in dense) / n
    lines = [f"## {sq.TASKS[TASK]['label']}", ""]
    lines.append(
        f"Dense models (one per seed): validation {sq.pm([d['val_accuracy'] for d in dense], n, 4)}, test {sq.pm([d['test_accuracy'] for d in dense], n, 4)} "
        f"(per frame), {dense[0]['params']:,} parameters, {dense[0]['n_train']} / {dense[0]['n_val']} / {dense[0]['n_test']} train / validation / test "
        f"sequences. Searches: {sq.trials_for(ctx, TASK)} trials each, fine-tune epochs fixed to {sq.FINETUNE_EPOCHS}; baselines as in search_quality."
    )
    rows = []
    for key, label in CONTENDERS:
        counts = "/".join(str(sum(res[(TASK, s, key)][k] for s in seeds)) for k in ("n_complete", "n_stopped_early", "n_failed"))
        walls = sum(res[(TASK, s, key)]["wall_s"] for s in seeds)
        rows.append([label] + [sq.pm(a["acc"][key][i], n) for i in range(len(sq.LEVELS))] + [sq.pm(a["hv"][key]["val"], n), sq.pm(a["hv"][key]["test"], n), counts, walls])
    lines += ["", f"Mean ± standard deviation over {n} seed{'s' if n > 1 else ''} (test accuracy per frame):", ""]
    lines += table(["contender"] + [f"test acc @ ≤ {lv:.0%} size" for lv in sq.LEVELS] + ["hypervolume (val)", "hypervolume (test)", "complete / stopped / failed", "wall (s, all seeds)"], rows)
    errors = sorted({e for key, _ in CONTENDERS for s in seeds for e in [res[(TASK, s, key)].get("error")] + res[(TASK, s, key)].get("errors", []) if e})
    if errors:
        lines += [""] + [f"- error: `{e}`" for e in errors]
    auto = [sq.target_mean(a["acc"]["autoprune"][i]) for i in range(len(sq.LEVELS))]
    worse = [f"at ≤ {lv:.0%} {label} {sq.target_mean(a['acc'][key][i]):.4f} > autoprune {auto[i]:.4f}"
             for i, lv in enumerate(sq.LEVELS) for key, label in CONTENDERS[1:] if sq.target_mean(a["acc"][key][i]) > auto[i]]
    lines += ["", "**Targets**", "", f"- autoprune ≥ small dense and uniform pruning at ≤ 10 / 5 / 2 % (mean test accuracy; a seed without a point counts 0): {verdict(not worse)}."]
    if worse:
        lines.append("  Where not: " + "; ".join(worse) + ".")
    crow = []
    for key, label in CONTENDERS:
        for i, lv in enumerate(sq.LEVELS):
            p = a["picks"][key][i][0]
            crow.append([label, f"≤ {lv:.0%}"] + ([p["trial"], f"{100 * p['size_ratio']:.2f} %", p["val_accuracy"], p["test_accuracy"], p.get("method"), p.get("granularity"), p.get("recovery")] if p else [None] * 7))
    lines += ["", f"Chosen points, seed {seeds[0]}:", ""]
    lines += table(["contender", "level", "trial / setting", "size", "val acc", "test acc", "method", "granularity", "recovery"], crow, align="llllrrlll")
    png = f"{NAME}.png"
    sq._plot(TASK, seeds, res, dense_test, ctx.results_dir / png, CONTENDERS)
    return lines + ["", f"![per-frame task: every contender's points]({png})", ""]


def run(ctx: Context) -> None:
    one_thread()
    # search_quality's working folder and dense cache: only this task's studies start afresh (latency_fronts reads the others)
    folder = ctx.runs(sq.NAME, fresh=False)
    for old in folder.glob(f"sq_{TASK}_*"):
        shutil.rmtree(old)
    seeds = sq.seeds_for(ctx)
    workers = int(os.environ.get("AUTOPRUNE_BENCH_JOBS", "2"))
    t0 = time.time()
    res = sq.run_jobs(ctx, [(TASK, s, "dense") for s in seeds], workers)
    for job, r in res.items():
        if r.get("error"):
            raise RuntimeError(f"dense model {job} failed: {r['error']}")
    res.update(sq.run_jobs(ctx, [(TASK, s, c) for c, _ in CONTENDERS for s in seeds], workers))
    notes = [f"Jobs ran in {workers} process(es), one torch thread each, {time.time() - t0:.0f} s in all (a search's wall time includes MLflow logging, "
             "latency measurement and trial checkpoints)."]
    if ctx.quick:
        notes.append(f"Quick mode: seed 0 only, {sq.trials_for(ctx, TASK)} trials (a smoke run, not a measurement).")
    write_result(ctx, NAME, header("frames_front: the per-frame task's front against a small dense model and uniform pruning", ctx, notes) + _report(ctx, seeds, res))

"""int8_search: does searching int8 together with pruning find smaller fronts at the same accuracy?

The JapaneseVowels study (``search_spaces/japanese_vowels_lstm.yaml``) searched twice per
seed with the same dense model, sampler seed, trial budget and fine-tune epochs:
``search.quantize: [none]`` (float32 only, as before) and ``[none, int8]`` (the precision
a searched choice). ``measure.runtime: onnxruntime`` for both (the int8 route that lasts;
see :mod:`autoprune.runtime.quantize`). Sizes are against dense float32 bytes; an int8 point's
size counts int8 values, scales and zero points, its accuracy is the int8 model's in
ONNX Runtime. Reported: the best test accuracy (chosen by validation) at <= 2.5 %, 2 %
and 1 % of dense float32 size, mean of the seeds.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List

from benchmarks._common import Context, header, log, table, verdict, write_result
from benchmarks.search_quality import at_level, base_config, dense_for, pm, runs_dir, target_mean

NAME = "int8_search"
LEVELS = [0.025, 0.02, 0.01]
FINETUNE_EPOCHS = 8
CONTENDERS = {"float32": ["none"], "int8": ["none", "int8"]}


def _search(ctx: Context, seed: int, contender: str, trials: int) -> Dict[str, Any]:
    from autoprune.search.run import run_search

    study = f"i8_jv_{contender}_s{seed}"
    config = base_config(
        "jv",
        seed,
        study=study,
        **{
            "search.trials": trials,
            "search.seed": seed,
            "search.workers": 1,
            "search.finetune.epochs": [FINETUNE_EPOCHS, FINETUNE_EPOCHS],
            "search.quantize": CONTENDERS[contender],
            "measure.runtime": "onnxruntime",
        },
    )
    rd = runs_dir(ctx)
    if (rd / study).exists():  # a fresh search every run: resuming an earlier (say --quick) study would mix its trials in
        shutil.rmtree(rd / study)
    dense_for(ctx, "jv", seed, [study])
    log(f"{NAME}: s{seed}: {study} ({trials} trials, quantize {CONTENDERS[contender]})")
    t0 = time.perf_counter()
    run_search(config, str(rd), tracking_uri=f"sqlite:///{(rd / study / 'mlflow.db').resolve()}")
    (rd / study / "bench_wall_s.json").write_text(json.dumps(time.perf_counter() - t0))
    return collect(ctx, seed, contender)


def _rung_text() -> str:
    """The study's cheap rung, where multi-fidelity sets one: its sampled trials fine-tune that many epochs instead."""
    f = base_config("jv").search.fidelity
    return f" (multi-fidelity's cheap rung: {f.finetune_epochs})" if f.enabled and f.finetune_epochs else ""


def collect(ctx: Context, seed: int, contender: str) -> Dict[str, Any]:
    """A finished search's complete trials, dense reference and wall time, read back from its study folder."""
    from autoprune.search.study import open_study
    from autoprune.search.pareto import trial_row

    study, rd = f"i8_jv_{contender}_s{seed}", runs_dir(ctx)
    st, _ = open_study(study, str(rd))
    rows = [trial_row(t) for t in st.get_trials(deepcopy=False)]
    rows = [dict(r, quantize=(r.get("policy") or {}).get("quantize", "none")) for r in rows if r["state"] == "complete"]
    dense = json.loads((Path(rows[0]["checkpoint"]).parent / "result.json").read_text())["dense"]
    wall = rd / study / "bench_wall_s.json"
    return {
        "rows": rows,
        "wall_s": json.loads(wall.read_text()) if wall.is_file() else None,
        "dense": dense,
        "n_int8": sum(r["quantize"] == "int8" for r in rows),
    }


def run(ctx: Context) -> None:
    seeds = [0] if ctx.quick else [0, 1, 2]
    trials = 8 if ctx.quick else 30  # quick: a smoke run of the code (CI), not a measurement
    t0 = time.time()
    res: Dict[tuple, Dict[str, Any]] = {}
    for i, s in enumerate(seeds):
        for c in CONTENDERS:
            res[(s, c)] = _search(ctx, s, c, trials)
        report(ctx, res, seeds[: i + 1], trials, time.time() - t0)  # a file after every seed: a long run cut short still reports


def report(ctx: Context, res: Dict[tuple, Dict[str, Any]], seeds: List[int], trials: int, took_s: float) -> None:
    """Write the results file for the seeds in ``res``."""
    rows: List[List[Any]] = []
    means: Dict[str, Dict[float, float]] = {}
    dense_test = [res[(s, "float32")]["dense"]["test_accuracy"] for s in seeds]
    for c in CONTENDERS:
        picks = {lvl: [at_level(res[(s, c)]["rows"], lvl) for s in seeds] for lvl in LEVELS}
        means[c] = {lvl: target_mean([p["test_accuracy"] if p else None for p in picks[lvl]]) for lvl in LEVELS}
        cells = [pm([p["test_accuracy"] if p else None for p in picks[lvl]], len(seeds)) for lvl in LEVELS]
        prec = [", ".join(sorted({p["quantize"] for p in picks[lvl] if p})) or "—" for lvl in LEVELS]
        int8_share = f"{sum(res[(s, c)]['n_int8'] for s in seeds)}/{sum(len(res[(s, c)]['rows']) for s in seeds)}"
        walls = [res[(s, c)]["wall_s"] for s in seeds]
        wall = sum(walls) if None not in walls else None
        rows.append([f"search.quantize {CONTENDERS[c]}", *cells, " / ".join(prec), int8_share, wall])
    per_seed = []
    for s in seeds:
        for c in CONTENDERS:
            cells = []
            for lvl in LEVELS:
                p = at_level(res[(s, c)]["rows"], lvl)
                cells.append(f"{p['test_accuracy']:.3f} ({p['quantize']}, {100 * p['size_ratio']:.2f} %)" if p else "—")
            per_seed.append([s, c, *cells])
    dense_mean = sum(dense_test) / len(dense_test)
    ok = means["int8"][0.025] >= dense_mean - 0.01
    lines = header(
        f"{NAME}: JapaneseVowels searched with and without int8",
        ctx,
        [
            f"`search_spaces/japanese_vowels_lstm.yaml` (2-layer bi-LSTM 128), `measure.runtime: onnxruntime`, {trials} trials per search, fine-tune "
            f"epochs fixed to {FINETUNE_EPOCHS}{_rung_text()}, seeds {seeds} (the seed sets the dense model and the sampler; both contenders of a seed share them). "
            "A level's point is the most accurate on validation among complete trials no larger than the level (sizes over dense float32 bytes); "
            "the table shows its test accuracy, mean ± std over seeds. int8 points: int8 model in ONNX Runtime, one sequence at a time. "
            f"Dense test accuracy: {', '.join(f'{d:.4f}' for d in dense_test)}. {took_s:.0f} s in all.",
        ],
    )
    lines += table(["search", *[f"test acc @ ≤ {100 * lvl:g} %" for lvl in LEVELS], "precision of the picks", "int8 trials / complete", "wall (s)"], rows)
    lines += ["", "Per seed (test accuracy, precision, size % of dense float32):", ""]
    lines += table(["seed", "search", *[f"≤ {100 * lvl:g} %" for lvl in LEVELS]], per_seed)
    lines += [
        "",
        f"**Target: with int8 searched, a front model at ≤ 2.5 % of dense float32 bytes within 1 point of dense test accuracy (mean of "
        f"{len(seeds)} seed{'s' * (len(seeds) > 1)}; a seed without such a point counts 0).** Mean {means['int8'][0.025]:.4f} against dense "
        f"{dense_mean:.4f} - 0.01 → {verdict(ok)}.",
    ]
    path = write_result(ctx, NAME, lines)
    log(f"{NAME}: wrote {path}")


if __name__ == "__main__":  # report from searches already run: python -m benchmarks.int8_search SEED... (no new training)
    import sys

    from benchmarks._common import REPO

    done = [int(a) for a in sys.argv[1:]] or [0, 1, 2]
    command = f"python -m benchmarks --only int8_search` (the searches), then `python -m benchmarks.int8_search {' '.join(map(str, done))}"
    context = Context(quick=False, runs_root=REPO / "runs" / "bench", results_dir=REPO / "benchmarks" / "results", command=command)
    found = {(sd, c): collect(context, sd, c) for sd in done for c in CONTENDERS}
    report(context, found, done, 30, sum(v["wall_s"] or 0.0 for v in found.values()))

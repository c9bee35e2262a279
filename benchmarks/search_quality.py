"""search_quality: autoprune's NSGA-II search against random search and the usual hand-made pruning.

Per task, every contender starts from the same dense checkpoint (trained once, its cache
folder copied into each contender's study) and fine-tunes for the same number of epochs:

* ``autoprune``: ``run_search`` with the study's NSGA-II sampler, N trials, fine-tune epochs fixed;
* ``random``: the same search space and N with ``search.sampler: random`` (and no warm start);
* ``global magnitude``: what a user does with Lightning's ``ModelPruning`` / ``torch.nn.utils.prune``:
  one sparsity for all RNN weights with a global threshold, one shot, then fine-tune;
* ``per-layer AGP``: the same sparsity for every matrix, reached by the AGP schedule.

Reported: test accuracy at matched size levels (the point chosen by validation accuracy
among the contender's points no larger than the level), hypervolume of each contender's
points (validation and test accuracy; reference point accuracy 0, size ratio 1), wall
time and trials per hour, and a plot of all points.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from benchmarks._common import (
    SEARCH_SPACES,
    Context,
    header,
    load_study_config,
    log_ticks,
    log,
    pyplot,
    save_png,
    search_key_supported,
    shared_dense,
    table,
    verdict,
    write_result,
)

NAME = "search_quality"
LEVELS = [0.10, 0.05, 0.02]
SPARSITIES = [0.5, 0.8, 0.9, 0.95, 0.98]
FINETUNE_EPOCHS = 8
BASELINE_LR = 1e-3  # PruningPolicy's default fine-tune learning rate; clipping as the study trains

#: task key → shipped study, overrides (besides the contender's) and a label
TASKS: Dict[str, Dict[str, Any]] = {
    "jv": {"study": "japanese_vowels_lstm", "overrides": {}, "label": "uea:JapaneseVowels, 2-layer bi-LSTM 128 (search_spaces/japanese_vowels_lstm.yaml)"},
    "mnist1d": {
        "study": "mnist1d_gru",
        # the shipped 128-unit model trains in ~4 min and its trials take ~1 min each on 2 cores
        "overrides": {"model.hidden_sizes": [64, 64]},
        "label": "mnist1d, 2-layer bi-GRU **64** (not 128) with attention (search_spaces/mnist1d_gru.yaml, model.hidden_sizes overridden for time)",
    },
}


def trials_for(ctx: Context, task: str) -> int:
    if ctx.quick:
        return 12
    return 30


def study_name(task: str, contender: str) -> str:
    return f"sq_{task}_{contender}"


def runs_dir(ctx: Context) -> Path:
    return ctx.runs_root / NAME


def dense_cache(ctx: Context) -> Path:
    """Dense checkpoints kept between benchmark runs (the key changes whenever task/model/train/versions do)."""
    return ctx.runs_root / "dense_cache"


def base_config(task: str, **extra: Any):
    t = TASKS[task]
    return load_study_config(t["study"], {**t["overrides"], **extra})


def search_config(ctx: Context, task: str, sampler: str, seed: int = 0):
    contender = "autoprune" if sampler == "nsga2" else sampler
    overrides: Dict[str, Any] = {
        "study": study_name(task, contender) + (f"_s{seed}" if seed else ""),
        "search.trials": trials_for(ctx, task),
        "search.sampler": sampler,
        "search.workers": 1,
        "search.seed": seed,
        "search.finetune.epochs": [FINETUNE_EPOCHS, FINETUNE_EPOCHS],
    }
    if sampler == "random" and search_key_supported("warm_start"):
        overrides["search.warm_start"] = False  # plain random search: no hand-picked first trials
    return base_config(task, **overrides)


def run_search_contender(ctx: Context, task: str, sampler: str, seed: int = 0) -> Dict[str, Any]:
    """One search contender: returns its complete-trial rows, counts and wall time."""
    from autoprune.search.backend import open_study, run_search
    from autoprune.search.pareto import trial_row

    config = search_config(ctx, task, sampler, seed)
    rd = runs_dir(ctx)
    dense_key = shared_dense(base_config(task, study=f"dense_{task}"), dense_cache(ctx), rd, [config.study]).key
    log(f"{NAME}: {task}: search {config.study} ({sampler}, {config.search.trials} trials)")
    t0 = time.perf_counter()
    summary = run_search(config, str(rd))
    wall = time.perf_counter() - t0
    study, _ = open_study(config.study, str(rd))
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    return {
        "rows": [r for r in rows if r["state"] == "complete"],
        "n_complete": summary.n_complete,
        "n_stopped_early": summary.n_stopped_early,
        "n_failed": summary.n_failed,
        "n_infeasible": summary.n_infeasible,
        "counted": summary.n_complete + summary.n_stopped_early,
        "wall_s": wall,
        "errors": sorted({(r["error"] or "")[:160] for r in rows if r["state"] == "failed"}),
        "front": summary.pareto,
        "study": config.study,
        "dense": summary.dense,
        "dense_key": dense_key,
    }


def baseline_policy(kind: str, sparsity: float, config: Any):
    from autoprune.pruning.policy import policy_from_dict

    clip = config.train.grad_clip
    common = {
        "method": "magnitude",
        "granularity": "unstructured",
        "sparsity": sparsity,
        "grad_clip": {"value": clip.value, "algorithm": clip.algorithm},
        "finetune": {"epochs": FINETUNE_EPOCHS, "lr": BASELINE_LR},
    }
    if kind == "global":
        return policy_from_dict({**common, "scope": "global", "schedule": {"kind": "one_shot", "start_epoch": 0}})
    end = max(0, FINETUNE_EPOCHS - 1 - config.search.schedule.end_before_last)  # the search's schedule window
    return policy_from_dict({**common, "scope": "per_group", "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": end}})


def run_baseline(ctx: Context, task: str, kind: str) -> Dict[str, Any]:
    from autoprune.search.trial import TrialOptions, run_trial

    config = base_config(task, study=study_name(task, kind))
    rd = runs_dir(ctx)
    dense = shared_dense(base_config(task, study=f"dense_{task}"), dense_cache(ctx), rd, [config.study])
    dense_size = dense.metrics["params"] * 4
    rows, wall = [], 0.0
    for s in SPARSITIES:
        policy = baseline_policy(kind, s, config)
        log(f"{NAME}: {task}: {kind} magnitude at {s:.0%}")
        t0 = time.perf_counter()
        r = run_trial(config, policy, TrialOptions(runs_dir=str(rd), trial_dir=str(rd / config.study / "trials" / f"s{s}"), threads=1))
        wall += time.perf_counter() - t0
        rows.append({
            "trial": f"{s:.0%}",
            "state": r.state,
            "val_accuracy": r.val_accuracy,
            "test_accuracy": r.test_accuracy,
            "size_bytes": r.size_bytes,
            "size_ratio": r.size_bytes / dense_size if r.size_bytes else None,
            "latency_ms": r.latency_ms,
            "method": "magnitude",
            "granularity": "unstructured",
            "schedule": policy.schedule.kind,
            "sparsity": s,
        })
    return {"rows": rows, "n_complete": len(rows), "n_stopped_early": 0, "n_failed": 0, "n_infeasible": 0, "counted": len(rows), "wall_s": wall, "errors": [], "study": config.study, "dense_key": dense.key}


def at_level(rows: List[Dict[str, Any]], level: float) -> Optional[Dict[str, Any]]:
    """The point chosen by validation accuracy among points no larger than ``level`` (ties: smaller)."""
    ok = [r for r in rows if r.get("size_ratio") is not None and r["size_ratio"] <= level and r.get("val_accuracy") is not None]
    return max(ok, key=lambda r: (r["val_accuracy"], -r["size_ratio"])) if ok else None


def _better_or_equal(a: Optional[Dict], b: Optional[Dict], strict: bool) -> bool:
    """Compare test accuracy at a level; a contender without a point there loses to one with a point."""
    if a is None:
        return False if (strict or b is not None) else True
    if b is None:
        return True
    return a["test_accuracy"] > b["test_accuracy"] if strict else a["test_accuracy"] >= b["test_accuracy"]


CONTENDERS = [
    ("autoprune", "autoprune (NSGA-II)"),
    ("random", "random search"),
    ("global", "global magnitude, one shot"),
    ("agp", "per-layer AGP (uniform)"),
]


def run_task(ctx: Context, task: str) -> Tuple[List[str], Dict[str, Any]]:
    from autoprune.search.pareto import hypervolume

    results: Dict[str, Dict[str, Any]] = {}
    results["autoprune"] = run_search_contender(ctx, task, "nsga2")
    results["random"] = run_search_contender(ctx, task, "random")
    results["global"] = run_baseline(ctx, task, "global")
    results["agp"] = run_baseline(ctx, task, "agp")
    dense = results["autoprune"]["dense"]

    summary_rows, pick_rows = [], []
    picks: Dict[str, List[Optional[Dict]]] = {}
    hv: Dict[str, Tuple[float, float]] = {}
    for key, label in CONTENDERS:
        res = results[key]
        rows = res["rows"]
        picks[key] = [at_level(rows, lv) for lv in LEVELS]
        hv[key] = (hypervolume(rows, "val_accuracy"), hypervolume(rows, "test_accuracy"))
        per_hour = res["counted"] / (res["wall_s"] / 3600) if res["wall_s"] else None
        summary_rows.append(
            [label]
            + [p["test_accuracy"] if p else None for p in picks[key]]
            + [hv[key][0], hv[key][1], f"{res['n_complete']}/{res['n_stopped_early']}/{res['n_failed']}", res["wall_s"], per_hour]
        )
        for lv, p in zip(LEVELS, picks[key]):
            if p:
                pick_rows.append([label, f"≤ {lv:.0%}", p["trial"], f"{100 * p['size_ratio']:.2f} %", p["val_accuracy"], p["test_accuracy"], p["method"], p["granularity"], p["schedule"]])
            else:
                pick_rows.append([label, f"≤ {lv:.0%}", None, None, None, None, None, None, None])

    # targets
    a = picks["autoprune"]
    ge_all = all(_better_or_equal(a[i], picks[b][i], strict=False) for b in ("random", "global", "agp") for i in range(len(LEVELS)))
    strict = all(_better_or_equal(a[i], picks[b][i], strict=True) for b in ("random", "global", "agp") for i, lv in enumerate(LEVELS) if lv in (0.05, 0.02))
    hv_ratio = hv["autoprune"][0] / hv["random"][0] if hv["random"][0] else float("inf")
    lines = [f"## {TASKS[task]['label']}", ""]
    keys = {results[k]["dense_key"] for k in results}
    same = f"the same checkpoint for every contender, cache key `{keys.pop()}`" if len(keys) == 1 else f"**different checkpoints per contender** {sorted(keys)} (the study file changed during the run; rerun)"
    lines.append(
        f"Dense, {same}: validation accuracy {dense['val_accuracy']:.4f}, test accuracy {dense['test_accuracy']:.4f}, {dense['size_bytes']:,} B "
        f"({dense['params']:,} parameters). Searches: {trials_for(ctx, task)} trials each (complete + stopped early), "
        f"fine-tune epochs fixed to {FINETUNE_EPOCHS}; baselines: magnitude, unstructured, RNN matrices only, {FINETUNE_EPOCHS} fine-tune epochs "
        f"at lr {BASELINE_LR}, clipping as the study trains, at {', '.join(f'{s:.0%}' for s in SPARSITIES)} sparsity."
    )
    space_cfg = search_config(ctx, task, "nsga2").search
    raw = yaml.safe_load((SEARCH_SPACES / f"{TASKS[task]['study']}.yaml").read_text())
    lines.append(
        f"Search space{'' if 'search' in raw else ' (the study file has no `search:` section: the package defaults)'}: "
        f"methods {space_cfg.methods}, granularities {space_cfg.granularities}, sparsity groups `{space_cfg.sparsity.groups}`, "
        f"weight sparsity {list(space_cfg.sparsity.range)}, units removed {list(space_cfg.sparsity.units)}, schedules {space_cfg.schedule.kinds}."
    )
    lines.append("")
    lines += table(
        ["contender"] + [f"test acc @ ≤ {lv:.0%} size" for lv in LEVELS] + ["hypervolume (val)", "hypervolume (test)", "complete / stopped / failed", "wall (s)", "trials / hour"],
        summary_rows,
    )
    lines.append("")
    lines.append("Sizes are `size_bytes` (sparse encodings for tensors with zeros) over dense float32 bytes. The point at a level is chosen by validation accuracy; '—': no point that small.")
    for key, label in CONTENDERS:
        if results[key]["errors"]:
            lines.append(f"- {label}: failed trials said: " + "; ".join(f"`{e}`" for e in results[key]["errors"]))
    beaten = []
    for i, lv in enumerate(LEVELS):
        pa = a[i]
        others = [(blabel, picks[b][i]) for b, blabel in CONTENDERS[1:] if picks[b][i] is not None]
        if pa is None:
            if others:
                beaten += [f"at ≤ {lv:.0%} autoprune has no point, {bl} has ({pb['test_accuracy']:.4f})" for bl, pb in others]
            elif lv in (0.05, 0.02):
                beaten.append(f"at ≤ {lv:.0%} no contender has a point")
            continue
        for bl, pb in others:
            if pb["test_accuracy"] > pa["test_accuracy"]:
                beaten.append(f"at ≤ {lv:.0%} {bl} {pb['test_accuracy']:.4f} > autoprune {pa['test_accuracy']:.4f}")
            elif lv in (0.05, 0.02) and pb["test_accuracy"] == pa["test_accuracy"]:
                beaten.append(f"at ≤ {lv:.0%} {bl} ties autoprune ({pa['test_accuracy']:.4f})")
    lines += ["", "**Targets**", ""]
    lines.append(f"- autoprune's test accuracy >= every baseline's at every level: {verdict(ge_all)}.")
    lines.append(f"- strictly better than every baseline at 5 % and 2 %: {verdict(strict)}.")
    if beaten:
        lines.append("  Where not: " + "; ".join(beaten) + ".")
    lines.append(f"- hypervolume (validation) >= 1.05x random search's: {hv['autoprune'][0]:.4f} / {hv['random'][0]:.4f} = {hv_ratio:.3f}x → {verdict(hv_ratio >= 1.05)}.")
    within = None
    if task == "jv":
        p10 = a[0]
        within = p10 is not None and dense["test_accuracy"] - p10["test_accuracy"] <= 0.01
        gap = f"{100 * (dense['test_accuracy'] - p10['test_accuracy']):+.2f} points below dense" if p10 else "no point at 10 %"
        lines.append(f"- at 10 % of dense size, test accuracy within 1 point of dense ({dense['test_accuracy']:.4f}): {gap} → {verdict(within)}.")
    lines += ["", "Chosen points:", ""]
    lines += table(["contender", "level", "trial / sparsity", "size", "val acc", "test acc", "method", "granularity", "schedule"], pick_rows, align="llllrrlll")
    if task == "jv" and not ctx.quick:
        lines += ["", *seed_table(ctx, task, {0: (results["autoprune"], results["random"])})]
    png = f"{NAME}_{task}.png"
    _plot(results, dense, ctx.results_dir / png, TASKS[task]["label"].split(",")[0])
    lines += ["", f"![{task}: every contender's points]({png})", ""]
    targets = {"ge_all": ge_all, "strict": strict, "hv_ratio": hv_ratio, "within_1pt_at_10": within}
    json_out = {k: {kk: vv for kk, vv in v.items() if kk != "front"} for k, v in results.items()}
    (runs_dir(ctx) / f"summary_{task}.json").write_text(json.dumps({"results": json_out, "targets": targets, "dense": dense}, indent=1, default=str))
    return lines, targets


EXTRA_SEEDS = [1, 2]


def seed_table(ctx: Context, task: str, known: Dict[int, Tuple[Dict, Dict]]) -> List[str]:
    """The two searches again with other sampler seeds: is the difference more than the sampler's luck?"""
    from autoprune.search.pareto import hypervolume

    runs = dict(known)
    for seed in EXTRA_SEEDS:
        runs[seed] = (run_search_contender(ctx, task, "nsga2", seed), run_search_contender(ctx, task, "random", seed))
    rows, ratios = [], []
    for seed, (auto, rnd) in sorted(runs.items()):
        ha, hr = hypervolume(auto["rows"], "val_accuracy"), hypervolume(rnd["rows"], "val_accuracy")
        ratios.append(ha / hr if hr else float("inf"))
        pa = [at_level(auto["rows"], lv) for lv in LEVELS]
        pr = [at_level(rnd["rows"], lv) for lv in LEVELS]
        rows.append([seed, ha, hr, ratios[-1]] + [f"{p['test_accuracy']:.3f}" if p else "—" for p in pa] + [f"{p['test_accuracy']:.3f}" if p else "—" for p in pr])
    from statistics import median as _median

    out = [f"Sampler seeds (`search.seed`; the dense model and the trial seed stay the same), {trials_for(ctx, task)} trials each:", ""]
    out += table(
        ["seed", "HV autoprune (val)", "HV random (val)", "ratio"] + [f"autoprune @ ≤ {lv:.0%}" for lv in LEVELS] + [f"random @ ≤ {lv:.0%}" for lv in LEVELS],
        rows,
    )
    out += ["", f"Hypervolume ratio autoprune / random over {len(ratios)} seeds: median {_median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}.", ""]
    return out


def _plot(results: Dict[str, Dict[str, Any]], dense: Dict[str, Any], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"autoprune": ("o", "C3"), "random": ("x", "C7"), "global": ("s-", "C0"), "agp": ("^-", "C2")}
    for key, label in CONTENDERS:
        rows = sorted((r for r in results[key]["rows"] if r.get("size_ratio") and r.get("test_accuracy") is not None), key=lambda r: r["size_ratio"])
        marker, color = styles[key]
        ax.plot([100 * r["size_ratio"] for r in rows], [r["test_accuracy"] for r in rows], marker, c=color, label=label, ms=5, alpha=0.85, lw=1)
    ax.axhline(dense["test_accuracy"], ls="--", c="k", lw=0.8, label=f"dense ({dense['test_accuracy']:.3f})")
    for lv in LEVELS:
        ax.axvline(100 * lv, c="#999", lw=0.6, ls=":")
    ax.set_xscale("log")
    log_ticks(ax)
    ax.set_xlabel("size, % of dense (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    lo = min([r["test_accuracy"] for k in results for r in results[k]["rows"] if r.get("test_accuracy") is not None] + [dense["test_accuracy"]])
    ax.set_ylim(max(0.0, lo - 0.02), 1.0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def run(ctx: Context) -> None:
    from benchmarks._common import one_thread

    one_thread()
    ctx.runs(NAME)
    tasks = ["jv"] if ctx.quick else ["jv", "mnist1d"]
    body: List[str] = []
    for task in tasks:
        t0 = time.time()
        lines, _ = run_task(ctx, task)
        body += lines
        log(f"{NAME}: {task} done in {time.time() - t0:.0f} s")
    notes = [
        "Every contender starts from the same dense checkpoint (one training per task; its cache folder is copied into each contender's study, "
        "so `ensure_dense` finds it) and fine-tunes the same number of epochs. Searches run with one worker and one torch thread; "
        "their wall time includes everything `run_search` does (MLflow logging, latency measurement, writing trial checkpoints). "
        "Baseline wall time is the sum of their `run_trial` calls. "
        "autoprune runs with the package's defaults for everything not listed (including any warm start it has); random search "
        "samples the same space without a warm start. Hypervolume uses `autoprune.search.pareto.hypervolume` "
        "(reference point accuracy 0, size ratio 1) over all complete points of a contender.",
    ]
    if ctx.quick:
        notes.append("Quick mode: JapaneseVowels only, 12 trials per search.")
    write_result(ctx, NAME, header("search_quality: autoprune search vs random search and uniform magnitude pruning", ctx, notes) + body)

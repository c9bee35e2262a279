"""sampler_choice: which sampler the shipped spaces default to, and what multi-fidelity buys.

The same search as ``search_quality``'s autoprune contender (the shipped study, its size-first
space, the warm start feeding every sampler, the same number of trials), once per sampler in
``SAMPLERS`` (NSGA-II, TPE: Optuna 5's multi-objective default, and ``GPSampler``), and once with
the study's default sampler but multi-fidelity off (every trial samples its recovery and
retrains when it chose to). Reported per task: hypervolume (validation and test), test accuracy
of the point picked by validation at ≤ 10 / 5 / 2 / 1 % of dense size, wall time, the picked
accuracy per hour of search, and a plot of the hypervolume against wall time of every search,
from one run.

A third kind of variant keeps the sampler and multi-fidelity and changes how much of the budget goes
to promotions (``search.fidelity.share``, ``share_<percent>``): the promoted, retrained trials are the ones
picked at small sizes, and a promotion starts from saved pruned weights, so it may be worth more of
them. A fourth kind changes which sizes may be promoted (``search.fidelity.max_size_ratio``,
``upto_<percent>``, or ``upto_all`` for no cap): the levels reported here are all at ≤ 10 % of dense.
A fifth kind changes the fine-tune epochs of the cheap rung (``search.fidelity.finetune_epochs``,
``rung_<epochs>``, or ``rung_all`` for the sampled fine-tune): every trial but the promotions prunes over
those epochs and is ranked after them, and the promotions retrain its pruned weights, so a shorter rung
buys time if it still ranks the candidates as the retraining will; ``trials_<n>``
runs the study's search with n trials (``search.trials``): the issue's wall-time target is set by 30-trial searches.

``AUTOPRUNE_SC_TASKS`` (comma list) and ``AUTOPRUNE_SC_SEEDS`` choose the tasks and seeds
(default: both tasks, seeds 0 1 2; quick: JapaneseVowels, seed 0, TPE and GP over 6 trials);
``AUTOPRUNE_SC_VARIANTS`` (comma list of the names in the results table, e.g. ``tpe,share_40``, a name
prefixed ``<task>:`` for that task only, e.g. ``jv:rung_all``) a subset of the searches.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Dict, List, Tuple

from benchmarks import search_quality as sq
from benchmarks._common import Context, header, log, pyplot, save_png, table, write_result

NAME = "sampler_choice"
SAMPLERS = ["nsga2", "tpe", "gp"]
NO_FIDELITY = "no_fidelity"
#: promotions' share of the trials measured beside the study's own (``search.fidelity.share``)
SHARES = [0.4]
#: caps on the promoted trials' size measured beside the study's own (``search.fidelity.max_size_ratio``; None: every size)
MAX_SIZES = [0.10, None]
#: fine-tune epochs of the cheap rung measured beside the study's own (``search.fidelity.finetune_epochs``; None: as sampled)
RUNGS = [6, None]  # 4 measured (sampler_choice_rung4.md) and now refused with the schedule and early stop of the shipped studies
#: trial counts measured beside the study's own (``search.trials``): the wall-time target is set by 30-trial searches
TRIALS = [30]


def _upto(x: Any) -> str:
    return "upto_all" if x is None else f"upto_{round(x * 100)}"


def _rung(x: Any) -> str:
    return "rung_all" if x is None else f"rung_{x}"


def tasks_for(ctx: Context) -> List[str]:
    only = [t for t in os.environ.get("AUTOPRUNE_SC_TASKS", "").split(",") if t]
    return only or (["jv"] if ctx.quick else ["jv", "mnist1d"])


def seeds_for(ctx: Context) -> List[int]:
    only = [int(s) for s in os.environ.get("AUTOPRUNE_SC_SEEDS", "").split(",") if s]
    return only or ([0] if ctx.quick else list(sq.SEEDS))


def variants(task: str, quick: bool = False) -> List[Tuple[str, Dict[str, Any]]]:
    """(name, job) of every search of a task: each sampler, the default sampler without multi-fidelity, and with
    other shares of promotions (quick: TPE and GP over 6 trials, a smoke run of the code); ``AUTOPRUNE_SC_VARIANTS``
    keeps the named ones."""
    if quick:
        out = [(s, {"sampler": s, "extra": {"search.trials": 6}}) for s in ("tpe", "gp")]
    else:
        out = [(s, {"sampler": s}) for s in SAMPLERS]
        shipped = sq.base_config(task).search
        fidelity = shipped.fidelity
        if fidelity.enabled:
            out.append((NO_FIDELITY, {"sampler": None, "extra": {"search.fidelity.enabled": False}}))
            out += [(f"share_{round(x * 100)}", {"sampler": None, "extra": {"search.fidelity.share": x}}) for x in SHARES if x != fidelity.share]
            out += [(_upto(x), {"sampler": None, "extra": {"search.fidelity.max_size_ratio": x}}) for x in MAX_SIZES if x != fidelity.max_size_ratio]
            # every rung, the study's own too: run again here it times the shipped search beside the others (the default sampler's
            # searches are otherwise search_quality's, run in another session)
            out += [(_rung(x), {"sampler": None, "extra": {"search.fidelity.finetune_epochs": x}}) for x in RUNGS]
        out += [(f"trials_{n}", {"sampler": None, "extra": {"search.trials": n}}) for n in TRIALS if n != shipped.trials]
    # a name may be given for one task only: "jv:rung_all"
    given = [v.split(":", 1) if ":" in v else [task, v] for v in os.environ.get("AUTOPRUNE_SC_VARIANTS", "").split(",") if v]
    only = [name for t, name in given if t == task]
    unknown = sorted(set(only) - {name for name, _ in out})
    if unknown:
        raise ValueError(f"AUTOPRUNE_SC_VARIANTS: unknown variant(s) {unknown} for {task}; known: {', '.join(name for name, _ in out)}")
    return [(name, job) for name, job in out if not only or name in only]


def run_variant(ctx: Context, task: str, seed: int, name: str, job: Dict[str, Any]) -> Dict[str, Any]:
    from benchmarks._common import one_thread, quiet

    one_thread()
    quiet()
    return sq.run_search_contender(ctx, task, job["sampler"], seed, name=f"sc_{name}", **job.get("extra", {}))


#: "<task> seed <seed>" of the searches taken from search_quality's summary (filled by :func:`reused_default`)
REUSED: set = set()


def reused_default(ctx: Context, tasks: List[str], seeds: List[int]) -> Dict[Tuple[str, int, str], Dict[str, Any]]:
    """The default sampler's searches that ``search_quality`` already ran in this runs folder (its autoprune contender is
    the same search: the study's own sampler), so that they are not run twice; the rest run here."""
    path = sq.runs_dir(ctx) / "summary.json"
    if not path.is_file():
        return {}
    done = json.loads(path.read_text()).get("results", {})
    out: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
    for t in tasks:
        default = sq.base_config(t).search.sampler
        for s in seeds:
            r = done.get(f"{t}|{s}|autoprune")
            if r and not r.get("error") and r.get("rows") and r.get("counted") == sq.trials_for(ctx, t):
                out[(t, s, default)] = r
                REUSED.add(f"{t} seed {s}")
                log(f"{NAME}: {t} s{s} {default}: search_quality's autoprune search reused ({len(r['rows'])} complete trials)")
    return out


def _guarded(ctx: Context, task: str, seed: int, name: str, job: Dict[str, Any]) -> Dict[str, Any]:
    import traceback

    t0 = time.time()
    try:
        res = run_variant(ctx, task, seed, name, job)
    except Exception as err:  # one broken search must not sink the others' results
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"[:300], "rows": [], "wall_s": time.time() - t0, "hv_curve": []}
    log(f"{NAME}: {task} s{seed} {name} done in {time.time() - t0:.0f} s")
    return res


def report(ctx: Context, task: str, seeds: List[int], res: Dict[Tuple[str, int, str], Dict[str, Any]]) -> Tuple[List[str], Dict[str, Any]]:
    from autoprune.search.pareto import hypervolume

    names = [n for n, _ in variants(task, ctx.quick)]
    shipped = sq.base_config(task).search
    default = shipped.sampler
    n = len(seeds)
    rows, summary = [], {}
    for name in names:
        runs = [res[(task, s, name)] for s in seeds]
        hv_val = [hypervolume(r["rows"], "val_accuracy") if r["rows"] else 0.0 for r in runs]
        hv_test = [hypervolume(r["rows"], "test_accuracy") if r["rows"] else 0.0 for r in runs]
        picks = [[(sq.at_level(r["rows"], lv) or {}).get("test_accuracy") for r in runs] for lv in sq.LEVELS]
        wall = [r["wall_s"] for r in runs]
        per_hour = [statistics.fmean(sq.target_mean(p) for p in picks) / (statistics.fmean(wall) / 3600)] if any(wall) else [0.0]
        label = {NO_FIDELITY: f"{default}, multi-fidelity off"}.get(name, name + (" (the shipped default)" if name == default else ""))
        if name.startswith("share_"):
            label = f"{default}, {name.split('_', 1)[1]} % of the trials promotions"
        if name.startswith("upto_"):
            cap = name.split("_", 1)[1]
            label = f"{default}, promotions at every size" if cap == "all" else f"{default}, promotions only at ≤ {cap} % of dense"
        if name.startswith("rung_"):
            epochs = name.split("_")[1]
            label = f"{default}, cheap rung as sampled" if epochs == "all" else f"{default}, cheap rung of {epochs} fine-tune epochs"
            if shipped.fidelity.finetune_epochs == (None if epochs == "all" else int(epochs)):
                label += " (the shipped default, run again here)"
        if name.startswith("trials_"):
            label = f"{default}, {name.split('_', 1)[1]} trials"
        rows.append([label, sq.pm(hv_val, n), sq.pm(hv_test, n)] + [sq.pm(p, n) for p in picks] + [statistics.fmean(wall), per_hour[0]])
        summary[name] = {"hv_val": hv_val, "hv_test": hv_test, "picks": picks, "wall_s": wall}
    trials = res[(task, seeds[0], names[0])].get("counted") or sq.trials_for(ctx, task)
    lines = [f"## {sq.TASKS[task]['label']}", "", f"{trials} trials per search (where its name gives no other number), seeds {seeds}; mean ± standard deviation over the seeds.", ""]
    lines += table(["search", "hypervolume (val)", "hypervolume (test)"] + [f"test acc @ ≤ {lv:.0%}" for lv in sq.LEVELS]
                   + ["wall (s per search)", "mean picked test acc per hour"], rows)
    samplers = [n_ for n_ in names if n_ in SAMPLERS] or names
    best = max(samplers, key=lambda k: statistics.fmean(summary[k]["hv_val"]))
    lines += ["", f"Highest mean validation hypervolume among the samplers: `{best}`. The picked accuracy per hour is the mean over the levels of the "
              "test accuracy picked there (a level without a point counts 0) divided by the mean search time in hours.", ""]
    png = f"{NAME}_{task}.png"
    _plot(task, seeds, names, res, ctx.results_dir / png)
    lines += [f"![{task}: hypervolume against wall time]({png})", ""]
    return lines, {"best_by_hv": best, **summary}


def _plot(task: str, seeds: List[int], names: List[str], res: Dict[Tuple[str, int, str], Dict[str, Any]], path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for k, name in enumerate(names):
        for j, s in enumerate(seeds):
            curve = res[(task, s, name)].get("hv_curve") or []
            if not curve:
                continue
            xs, ys = [c[0] / 60 for c in curve], [c[1] for c in curve]
            ax.step(xs, ys, where="post", c=f"C{k}", lw=1.4 if j == 0 else 0.7, alpha=0.95 if j == 0 else 0.4, label=name if j == 0 else None)
    ax.set_xlabel("wall time of the search (minutes)")
    ax.set_ylabel("hypervolume (validation)")
    ax.set_title(f"{sq.TASKS[task]['label'].split(',')[0]}: hypervolume over time (seed {seeds[0]} bold)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def run(ctx: Context) -> None:
    from benchmarks._common import one_thread, process_pool

    one_thread()
    ctx.runs(sq.NAME, fresh=False)  # shares search_quality's dense cache and runs folder
    tasks, seeds = tasks_for(ctx), seeds_for(ctx)
    workers = int(os.environ.get("AUTOPRUNE_BENCH_JOBS", "2"))
    t0 = time.time()
    sq.run_jobs(ctx, [(t, s, "dense") for t in tasks for s in seeds], workers)
    res: Dict[Tuple[str, int, str], Dict[str, Any]] = {} if ctx.quick else reused_default(ctx, tasks, seeds)
    jobs = [(t, s, name, job) for t in reversed(tasks) for name, job in variants(t, ctx.quick) for s in seeds if (t, s, name) not in res]
    with process_pool(workers) as pool:
        futures = {(t, s, name): pool.submit(_guarded, ctx, t, s, name, job) for t, s, name, job in jobs}
        for key, fut in futures.items():
            res[key] = fut.result()
    body, summary = [], {}
    for task in tasks:
        lines, summary[task] = report(ctx, task, seeds, res)
        body += lines
    (sq.runs_dir(ctx) / f"{NAME}.json").write_text(json.dumps({"summary": summary, "results": {"|".join(map(str, k)): v for k, v in res.items()}}, indent=1, default=str))
    notes = [
        f"Each search is `search_quality`'s autoprune search (the shipped study, size-first space, warm start, "
        f"multi-fidelity where the study has it) with only the sampler (or the share or the size cap of promotions) changed; jobs ran in {workers} process(es), one torch "
        f"thread each, {time.time() - t0:.0f} s in all. The samplers see the warm-start trials as trials of their own space (the same parameter names).",
    ]
    if REUSED:
        notes.append(f"The shipped default sampler's searches ({', '.join(sorted(REUSED))}) are `search_quality`'s autoprune searches of this "
                     "runs folder (the same config, data, dense model and seed: the same trials), read from its summary.json instead of run "
                     "twice; their wall times were measured in that run, beside that run's other jobs.")
    if ctx.quick:
        notes.append("Quick mode: a smoke run, not a measurement.")
    write_result(ctx, NAME, header("sampler_choice: NSGA-II, TPE and GP on the size-first space; what multi-fidelity buys", ctx, notes) + body)

"""search_quality: autoprune's search against what a user would otherwise do, over three seeds.

Per task and seed (the dense model, the sampler and the trials seeded together: ``seed`` and
``search.seed`` are the seed), every contender starts from the same data and the same dense
recipe, is chosen by validation accuracy and is reported on test:

* ``autoprune``: ``run_search`` with the study's space and defaults (its sampler, warm start,
  multi-fidelity), N trials, fine-tune epochs fixed to ``FINETUNE_EPOCHS``;
* ``random``: the same space and N with ``search.sampler: random`` and no warm start;
* ``scratch``: a small dense model from scratch: same cell and depth, one width for every
  layer (the largest whose size fits each level; with int8 searched, also the largest whose
  int8 size fits it), trained with the study's dense recipe (``ensure_dense`` with
  ``model.hidden_sizes`` overridden);
* ``uniform_magnitude`` / ``uniform_taylor``: the same fraction of hidden units removed from
  every layer (landing on those same widths), AGP, ``FINETUNE_EPOCHS`` fine-tune epochs, then
  the recovery the study's warm start gives uniform units (``uniform_recovery``: rewind where
  the space offers it);
* ``lightning``: Lightning's own ``ModelPruning`` callback (``l1_unstructured``, its defaults:
  global unstructured, lottery-ticket reset, pruning made permanent at the end) on every
  ``weight_ih_l0`` / ``weight_hh_l0`` of the RNN stack, pruning once at the end of the first
  epoch, then fine-tuning for the rest of the budget;
* ``torch_global``: ``torch.nn.utils.prune.global_unstructured`` (L1) on the same tensors,
  fine-tuned for the budget with the masks in place, then ``prune.remove``;

the last two at 50 / 80 / 90 / 95 / 98 % sparsity with the same learning rate and clipping.
When the study's space offers int8 (``search.quantize``), every baseline point also gets the
same post-training int8 variant (``autoprune.runtime.quantize``), so the comparison stays fair.

Reported per task: mean and standard deviation over the seeds of the test accuracy at
≤ 10 / 5 / 2 / 1 % of the dense size (the point chosen by validation accuracy among a contender's
points that small) and of the hypervolume (``autoprune.search.pareto.hypervolume``: reference
accuracy dense - 0.10, size on a log scale down to 1 % of dense), the per-seed values, the
chosen points (and, for autoprune, whether each came from a sampled or a warm-start trial),
wall time, and a plot of every contender's points.

Jobs (one contender, one task, one seed) run in ``AUTOPRUNE_BENCH_JOBS`` processes (default 2,
one torch thread each); every search writes its own MLflow SQLite file so they do not contend.
Each finished job's result is kept in ``runs/bench/search_quality/jobs/``; a run that was stopped
resumes with ``AUTOPRUNE_SQ_RESUME=1`` (only jobs of the same commit and settings are reused, and the
results file lists them).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
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
    process_pool,
    pyplot,
    save_png,
    search_key_supported,
    shared_dense,
    table,
    verdict,
    write_result,
)

NAME = "search_quality"
LEVELS = [0.10, 0.05, 0.02, 0.01]
#: the levels where the picked model should come from a sampled trial, not the warm start
SMALL_LEVELS = [0.05, 0.02, 0.01]
SPARSITIES = [0.5, 0.8, 0.9, 0.95, 0.98]
FINETUNE_EPOCHS = 8
BASELINE_LR = 1e-3  # PruningPolicy's default fine-tune learning rate (as the warm start's trials); clipping as the study trains
SEEDS = [0, 1, 2]
#: trials per search in --quick mode (CI's smoke run): enough to run the warm start, the report and every contender's code, not to measure
QUICK_TRIALS = 8

#: task key → shipped study, overrides (besides the contender's) and a label
TASKS: Dict[str, Dict[str, Any]] = {
    "jv": {"study": "japanese_vowels_lstm", "overrides": {}, "label": "uea:JapaneseVowels, 2-layer bi-LSTM 128 (search_spaces/japanese_vowels_lstm.yaml)"},
    "mnist1d": {
        "study": "mnist1d_gru",
        "overrides": {},
        "label": "mnist1d, 2-layer bi-GRU 64 with attention (search_spaces/mnist1d_gru.yaml)",
    },
    # the per-frame task (issue 20): run by benchmarks/frames_front.py, not by this benchmark's own task list
    "frames": {
        "study": "jv_speaker_frames",
        "overrides": {},
        "label": "uea:JapaneseVowels frames (who is speaking per frame), 2-layer LSTM 64 (search_spaces/jv_speaker_frames.yaml)",
    },
}

#: the warm start's uniform levels (``autoprune.search.space.UNIT_SIZE_TARGETS``), in order
LEVELS_WARM = (0.25, 0.10, 0.05, 0.02, 0.01)

#: key → label, in table order (autoprune first: the targets compare it with the others)
CONTENDERS = [
    ("autoprune", "autoprune"),
    ("random", "random search"),
    ("scratch", "small dense from scratch"),
    ("uniform_magnitude", "uniform hidden units, magnitude (AGP)"),
    ("uniform_taylor", "uniform hidden units, Taylor (AGP)"),
    ("lightning", "Lightning ModelPruning (L1, global)"),
    ("torch_global", "torch prune.global_unstructured + remove"),
]
LABELS = dict(CONTENDERS)


def trials_for(ctx: Context, task: str) -> int:
    """The shipped study's own trial count (every search contender gets the same); quick: 8, a smoke run of the code."""
    return QUICK_TRIALS if ctx.quick else base_config(task).search.trials


def seeds_for(ctx: Context) -> List[int]:
    return [0] if ctx.quick else list(SEEDS)


def tasks_for(ctx: Context) -> List[str]:
    """JapaneseVowels (quick) or both tasks; ``AUTOPRUNE_SQ_TASKS=jv`` (comma list) runs a subset, e.g. to measure one task."""
    only = [t for t in os.environ.get("AUTOPRUNE_SQ_TASKS", "").split(",") if t]
    unknown = sorted(set(only) - set(TASKS))
    if unknown:
        raise ValueError(f"AUTOPRUNE_SQ_TASKS: unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    return only or (["jv"] if ctx.quick else ["jv", "mnist1d"])  # (frames: benchmarks/frames_front.py)


def study_name(task: str, contender: str, seed: int = 0) -> str:
    return f"sq_{task}_{contender}" + (f"_s{seed}" if seed else "")


def runs_dir(ctx: Context) -> Path:
    return ctx.runs_root / NAME


def dense_cache(ctx: Context) -> Path:
    """Dense checkpoints kept between benchmark runs (the key changes whenever task/model/train/versions do)."""
    return ctx.runs_root / "dense_cache"


def base_config(task: str, seed: int = 0, **extra: Any):
    t = TASKS[task]
    return load_study_config(t["study"], {**t["overrides"], "seed": seed, **extra})


def dense_for(ctx: Context, task: str, seed: int, studies: List[str]):
    """The seed's dense model (trained once into the cache), copied into each study folder."""
    return shared_dense(base_config(task, seed, study=f"dense_{task}"), dense_cache(ctx), runs_dir(ctx), studies)


# --------------------------------------------------------------------------- sizes and policies


def arch_with_width(arch: Any, width: int) -> Any:
    """The dense architecture with every layer (and direction) at ``width`` hidden units (front-end and head as they are)."""
    return arch.with_hidden_sizes([[width] * len(layer) for layer in arch.hidden_sizes])


def n_params(arch: Any) -> int:
    from autoprune.models.rnn import RNNClassifier

    return sum(p.numel() for p in RNNClassifier(arch).parameters())


def width_for_level(arch: Any, level: float) -> int:
    """The largest uniform width whose model has at most ``level`` of the dense model's parameters (the warm start's rule)."""
    from autoprune.search.space import unit_fractions_for_sizes, with_units_removed

    fraction = unit_fractions_for_sizes(arch, (level,))[0]
    return max(max(layer) for layer in with_units_removed(arch, fraction).hidden_sizes)


def fraction_for_level(arch: Any, level: float) -> float:
    """The uniform fraction of hidden units removed that lands on ``width_for_level``."""
    top = max(max(layer) for layer in arch.hidden_sizes)
    return 1.0 - width_for_level(arch, level) / top


def int8_width_for_level(arch: Any, level: float, runtime: str) -> int:
    """The largest uniform width whose int8 model (as ``runtime`` quantizes it) has at most ``level`` of the dense float32 bytes."""
    from autoprune.runtime.measure import dense_size_bytes
    from autoprune.search.sizing import planned_bytes

    total = dense_size_bytes(n_params(arch))
    top = max(max(layer) for layer in arch.hidden_sizes)
    fits = [w for w in range(1, top + 1) if planned_bytes(arch, arch_with_width(arch, w).hidden_sizes, {}, "int8", runtime) <= level * total]
    return max(fits) if fits else 1


def baseline_widths(arch: Any, config: Any) -> List[int]:
    """The uniform widths the baselines train: the largest fitting each level, in float32 and (with int8 searched) in int8."""
    widths = {width_for_level(arch, lv) for lv in LEVELS}
    if wants_int8(config):
        widths |= {int8_width_for_level(arch, lv, config.measure.runtime) for lv in LEVELS}
    return sorted(widths, reverse=True)


def _finetune(config: Any) -> Dict[str, Any]:
    """The baselines' fine-tune budget: the search's epochs and lr, and its minimum steps per epoch where it has one."""
    out: Dict[str, Any] = {"epochs": FINETUNE_EPOCHS, "lr": BASELINE_LR}
    steps = getattr(config.search.finetune, "min_epoch_steps", None)
    if steps:
        out["min_epoch_steps"] = steps
    return out


def uniform_recovery(config: Any) -> str:
    """The recovery the study's warm start gives its uniform hidden-unit trials (``SearchSpace.warm_start_params``).

    The uniform baselines recover the same way, so they are the hand-made version of what the
    search starts from: scratch where the space offers it, else rewind, else fine-tune.
    """
    from autoprune.search.space import warm_start_recovery

    return warm_start_recovery(list(config.search.recovery))


def uniform_unit_policy(method: str, fraction: float, config: Any, recovery: str = "finetune", distill: float = 0.0):
    """One fraction of hidden units removed from every layer, AGP over the search's schedule window."""
    from autoprune.pruning.policy import policy_from_dict

    clip = config.train.grad_clip
    end = config.search.schedule.window(FINETUNE_EPOCHS, start_epoch=0)[1]
    policy: Dict[str, Any] = {
        "method": method,
        "granularity": "hidden_unit",
        "sparsity": fraction,
        "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": end},
        "grad_clip": {"value": clip.value, "algorithm": clip.algorithm},
        "finetune": _finetune(config),
        "distillation": {"weight": distill},
    }
    if recovery != "finetune":
        policy["recovery"] = recovery
    return policy_from_dict(policy)


def _row(label: Any, val: float, test: float, size_ratio: float, dense: Any, val_loss: Optional[float] = None, n_val: int = 0, **info: Any) -> Dict[str, Any]:
    from autoprune.trial.validation import val_score

    return {
        "trial": label,
        "state": "complete",
        "val_accuracy": val,
        "val_score": val_score(val, val_loss, n_val) if val_loss is not None else None,
        "test_accuracy": test,
        "size_ratio": size_ratio,
        "dense_val_accuracy": dense.metrics["val_accuracy"],
        "dense_test_accuracy": dense.metrics["test_accuracy"],
        "method": info.get("method"),
        "granularity": info.get("granularity"),
        "schedule": info.get("schedule"),
        "recovery": info.get("recovery", "finetune"),
    }


def wants_int8(config: Any) -> bool:
    """Whether the study's space offers int8: then every baseline point gets the same post-training int8 variant."""
    return "int8" in (getattr(config.search, "quantize", None) or ["none"])


def int8_variant(model: Any, dm: Any, config: Any, dense: Any, row: Dict[str, Any]) -> Dict[str, Any]:
    """The same model after autoprune's post-training int8 quantization (``measure.runtime``), as a point of its own."""
    from autoprune.runtime.quantize import quantized_result

    q = quantized_result(model, dm, "int8", config.measure.runtime)
    val = q["val"]["accuracy"] if "val" in q else q["val_accuracy"]
    test = q["test"]["accuracy"] if "test" in q else q["test_accuracy"]
    from autoprune.trial.validation import val_score

    return {**row, "trial": f"{row['trial']} int8", "val_accuracy": val, "test_accuracy": test,
            "val_score": val_score(val, q["val"]["loss"], dense.metrics.get("n_val", 0)),
            "size_ratio": q["size_bytes"] / (dense.metrics["params"] * 4), "precision": "int8"}


# --------------------------------------------------------------------------- contenders (one job each)


def search_config(ctx: Context, task: str, sampler: Optional[str] = None, seed: int = 0, name: Optional[str] = None, **extra: Any):
    """The search of a contender: the study's own sampler (``None``: contender ``autoprune``), ``random`` (no warm
    start), or another sampler (``sampler_choice``); ``extra`` dotted-key overrides (e.g. multi-fidelity off)."""
    contender = name or ("autoprune" if sampler is None else sampler)
    overrides: Dict[str, Any] = {
        "study": study_name(task, contender, seed),
        "search.trials": trials_for(ctx, task),
        "search.workers": 1,
        "search.seed": seed,
        "search.finetune.epochs": [FINETUNE_EPOCHS, FINETUNE_EPOCHS],
        **extra,
    }
    if sampler is not None:
        overrides["search.sampler"] = sampler
    if sampler == "random" and search_key_supported("warm_start"):
        overrides["search.warm_start"] = False  # plain random search: no hand-picked first trials
    return base_config(task, seed, **overrides)


def origin_of(trial: Any, by_number: Dict[int, Any]) -> str:
    """``warm_start`` or ``sampled``: where a trial's parameters came from (a promotion: its source's origin)."""
    from autoprune.search import attrs

    seen = set()
    while attrs.PROMOTED_FROM in trial.user_attrs and trial.number not in seen:
        seen.add(trial.number)
        trial = by_number[int(trial.user_attrs[attrs.PROMOTED_FROM])]
    return "warm_start" if trial.user_attrs.get(attrs.ORIGIN) == attrs.WARM_START else "sampled"


def run_search_contender(ctx: Context, task: str, sampler: Optional[str], seed: int = 0, name: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """One search: its complete-trial rows (with where each came from), counts, wall time and the hypervolume over
    time (its own MLflow SQLite file)."""
    from autoprune.search.pareto import hypervolume, trial_row
    from autoprune.search.run import run_search
    from autoprune.search.study import open_study

    config = search_config(ctx, task, sampler, seed, name, **extra)
    rd = runs_dir(ctx)
    dense = dense_for(ctx, task, seed, [config.study])
    log(f"{NAME}: {task} s{seed}: search {config.study} ({config.search.sampler}, {config.search.trials} trials)")
    t0 = time.perf_counter()
    summary = run_search(config, str(rd), tracking_uri=f"sqlite:///{(rd / config.study / 'mlflow.db').resolve()}")
    wall = time.perf_counter() - t0
    study, _ = open_study(config.study, str(rd))
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    rows = []
    for t in trials:
        r = trial_row(t)
        r["recovery"] = (r.get("policy") or {}).get("recovery", "finetune")
        r["origin"] = origin_of(t, by_number)
        r["hybrid"] = bool((r.get("policy") or {}).get("weight_sparsity"))
        r["completed_s"] = (t.datetime_complete.timestamp() - t0_wall(trials)) if t.datetime_complete else None
        r.pop("policy", None)
        rows.append(r)
    complete = [r for r in rows if r["state"] == "complete" and r.get("completed_s") is not None]
    curve, done = [], []
    for r in sorted(complete, key=lambda r: r["completed_s"]):  # the hypervolume as the search went on
        done.append(r)
        curve.append((round(r["completed_s"], 1), hypervolume(done, "val_accuracy")))
    return {
        "rows": [r for r in rows if r["state"] == "complete"],
        "n_complete": summary.n_complete,
        "n_stopped_early": summary.n_stopped_early,
        "n_failed": summary.n_failed,
        "counted": summary.n_complete + summary.n_stopped_early,
        "wall_s": wall,
        "hv_curve": curve,
        "errors": sorted({(r["error"] or "")[:160] for r in rows if r["state"] == "failed"}),
        "study": config.study,
        "sampler": config.search.sampler,
        "fidelity": config.search.fidelity.enabled,
        "dense": summary.dense,
        "dense_key": dense.key,
    }


def t0_wall(trials: List[Any]) -> float:
    """When the search's first trial started (the origin of its hypervolume-over-time curve)."""
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    return min(starts) if starts else 0.0


def run_scratch(ctx: Context, task: str, seed: int) -> Dict[str, Any]:
    """Small dense models from scratch, the study's dense recipe, one per size level."""
    from autoprune.reference.dense import ensure_dense

    dense = dense_for(ctx, task, seed, [])
    total = n_params(dense.arch)
    rows, wall = [], 0.0
    for width in baseline_widths(dense.arch, base_config(task, seed)):
        hidden = [width] * len(dense.arch.hidden_sizes)
        config = base_config(task, seed, study=study_name(task, f"scratch_w{width}", seed), **{"model.hidden_sizes": hidden})
        log(f"{NAME}: {task} s{seed}: small dense from scratch, width {width}")
        t0 = time.perf_counter()
        small = ensure_dense(config, dense_cache(ctx))
        wall += time.perf_counter() - t0 if not small.cached else float(small.metrics.get("train_time_s", 0.0))
        rows.append(_row(f"width {width}", small.metrics["val_accuracy"], small.metrics["test_accuracy"], small.metrics["params"] / total, dense,
                         small.metrics.get("val_loss"), small.metrics.get("n_val", 0), method="—", granularity="dense", schedule="—", recovery="scratch"))
        if wants_int8(config):
            from autoprune.tasks import build_datamodule
            from autoprune.reference.cache import load_dense_model

            rows.append(int8_variant(load_dense_model(small.checkpoint)[0], build_datamodule(config), config, dense, rows[-1]))
    return {"rows": rows, "counted": len(rows), "n_complete": len(rows), "n_stopped_early": 0, "n_failed": 0, "wall_s": wall, "errors": [], "dense_key": dense.key}


def run_uniform(ctx: Context, task: str, seed: int, method: str) -> Dict[str, Any]:
    """The same fraction of hidden units removed from every layer, landing on each level's width."""
    from autoprune.trial.result import TrialOptions
    from autoprune.trial.run import run_trial

    config = base_config(task, seed, study=study_name(task, f"uniform_{method}", seed))
    dense = dense_for(ctx, task, seed, [config.study])
    top = max(max(h) for h in dense.arch.hidden_sizes)
    rows, wall = [], 0.0
    for width in baseline_widths(dense.arch, config):
        policy = uniform_unit_policy(method, 1.0 - width / top, config, recovery=uniform_recovery(config))
        log(f"{NAME}: {task} s{seed}: uniform {method}, width {width}")
        t0 = time.perf_counter()
        trial_dir = runs_dir(ctx) / config.study / "trials" / f"w{width}"
        r = run_trial(config, policy, TrialOptions(runs_dir=str(runs_dir(ctx)), trial_dir=str(trial_dir), threads=1, measure_latency=False))
        wall += time.perf_counter() - t0
        rows.append(_row(f"width {width}", r.val_accuracy, r.test_accuracy, r.size_bytes / (dense.metrics["params"] * 4), dense,
                         r.val_loss, dense.metrics.get("n_val", 0), method=method, granularity="hidden_unit", schedule="agp", recovery=policy.recovery))
        if wants_int8(config):
            from autoprune.tasks import build_datamodule
            from autoprune.trial.result import load_trial_model

            rows.append(int8_variant(load_trial_model(trial_dir / "model.pt")[0], build_datamodule(config), config, dense, rows[-1]))
    return {"rows": rows, "counted": len(rows), "n_complete": len(rows), "n_stopped_early": 0, "n_failed": 0, "wall_s": wall, "errors": [], "dense_key": dense.key}


def rnn_weights(model: Any) -> List[Tuple[Any, str]]:
    """(module, name) of every recurrent weight matrix: ``weight_ih_l0`` / ``weight_hh_l0`` of each single-layer RNN."""
    import torch.nn as nn

    return [(m, n) for m in model.modules() if isinstance(m, (nn.LSTM, nn.GRU)) for n in m._flat_weights_names if n.startswith("weight_")]


def peer_prune(config: Any, dense: Any, kind: str, sparsity: float, seed: int) -> Tuple[Any, Any]:
    """Prune the dense model with the peers' own code and fine-tune it; returns (model with zeros, datamodule)."""
    import lightning.pytorch as pl
    import torch.nn.utils.prune as prune

    from autoprune.tasks import build_datamodule
    from autoprune.reference.cache import load_dense_model
    from autoprune.models.fitting import RNNModule
    from autoprune.models.fitting import make_trainer

    pl.seed_everything(seed, verbose=False)
    dm = build_datamodule(config)
    ft = _finetune(config)
    if ft.get("min_epoch_steps") and hasattr(dm, "min_train_batches"):
        dm.min_train_batches = ft["min_epoch_steps"]  # the same optimizer steps as the search's fine-tunes
    model, _ = load_dense_model(dense.checkpoint)
    model.train()
    params = rnn_weights(model)
    callbacks: List[Any] = []
    if kind == "torch_global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        from lightning.pytorch.callbacks import ModelPruning

        # Lightning's defaults (global, lottery-ticket reset, permanent at the end); one shot after the first epoch
        callbacks.append(ModelPruning("l1_unstructured", parameters_to_prune=params, amount=lambda epoch: sparsity if epoch == 0 else 0.0))
    clip = config.train.grad_clip
    module = RNNModule(model, lr=ft["lr"], lr_schedule="none", seed=seed)
    make_trainer(FINETUNE_EPOCHS, callbacks, clip.value, clip.algorithm).fit(module, datamodule=dm)
    if kind == "torch_global":
        for m, n in params:
            prune.remove(m, n)
    return model.eval(), dm


def run_peer(ctx: Context, task: str, seed: int, kind: str) -> Dict[str, Any]:
    from autoprune.models.rnn import evaluate
    from autoprune.pruning.compact import compact
    from autoprune.runtime.measure import measure

    config = base_config(task, seed, study=study_name(task, kind, seed))
    dense = dense_for(ctx, task, seed, [])
    seq_len = config.measure.seq_len or int(dense.metrics["max_length"])
    rows, wall = [], 0.0
    for s in SPARSITIES:
        log(f"{NAME}: {task} s{seed}: {kind} at {s:.0%}")
        t0 = time.perf_counter()
        model, dm = peer_prune(config, dense, kind, s, seed)
        small = compact(model)
        size = measure(small, seq_len).size_bytes
        val, test = evaluate(small, *dm.tensors("val")), evaluate(small, *dm.tensors("test"))
        wall += time.perf_counter() - t0
        rows.append(_row(f"{s:.0%}", val["accuracy"], test["accuracy"], size / (dense.metrics["params"] * 4), dense,
                         val["loss"], dense.metrics.get("n_val", 0), method="l1", granularity="unstructured", schedule="one_shot"))
        if wants_int8(config):
            rows.append(int8_variant(small, dm, config, dense, rows[-1]))
    return {"rows": rows, "counted": len(rows), "n_complete": len(rows), "n_stopped_early": 0, "n_failed": 0, "wall_s": wall, "errors": [], "dense_key": dense.key}


def run_job(ctx: Context, task: str, seed: int, contender: str) -> Dict[str, Any]:
    """One contender on one task and seed (runs in a worker process)."""
    from benchmarks._common import one_thread, quiet

    one_thread()
    quiet()
    if contender == "dense":
        d = dense_for(ctx, task, seed, [])
        return {"key": d.key, "metrics": d.metrics}
    if contender in ("autoprune", "random"):
        return run_search_contender(ctx, task, None if contender == "autoprune" else "random", seed)
    if contender == "scratch":
        return run_scratch(ctx, task, seed)
    if contender.startswith("uniform_"):
        return run_uniform(ctx, task, seed, contender.split("_", 1)[1])
    return run_peer(ctx, task, seed, contender)


def job_file(ctx: Context, job: Tuple[str, int, str]) -> Path:
    """Where a finished job's result is kept (``jobs/<task>-s<seed>-<contender>.json``), so a stopped run can resume."""
    task, seed, contender = job
    return runs_dir(ctx) / "jobs" / f"{task}-s{seed}-{contender}.json"


def job_stamp(ctx: Context, job: Tuple[str, int, str]) -> Dict[str, Any]:
    """What a kept result must match to be reused: the commit (tracked files unchanged), the mode and the job's trials."""
    return {"commit": ctx.machine.get("commit at start", "?"), "mode": ctx.mode, "trials": trials_for(ctx, job[0]), "job": list(job)}


def kept_result(ctx: Context, job: Tuple[str, int, str]) -> Optional[Dict[str, Any]]:
    """A finished job's kept result, when it was made by this commit and these settings; else None."""
    try:
        kept = json.loads(job_file(ctx, job).read_text())
    except (OSError, ValueError):
        return None
    if kept.get("stamp") == job_stamp(ctx, job) and "result" in kept and not kept["result"].get("error"):
        return kept["result"]
    return None


def drop_half_run(ctx: Context, job: Tuple[str, int, str]) -> None:
    """Remove the study a search job left when it did not finish (the benchmark wrote it), so that the search runs
    again whole and its wall time stays a whole search's."""
    task, seed, contender = job
    if contender in ("autoprune", "random"):
        shutil.rmtree(runs_dir(ctx) / study_name(task, contender, seed), ignore_errors=True)


def keep_result(ctx: Context, job: Tuple[str, int, str], result: Dict[str, Any]) -> None:
    path = job_file(ctx, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stamp": job_stamp(ctx, job), "result": result}, default=str))
    os.replace(tmp, path)


def run_jobs(ctx: Context, jobs: List[Tuple[str, int, str]], workers: int) -> Dict[Tuple[str, int, str], Dict[str, Any]]:
    """Run jobs in ``workers`` spawned processes (or in-process with one); failures are kept as results.

    With ``AUTOPRUNE_SQ_RESUME=1`` a job whose result an earlier run of the same commit and settings kept is
    not run again (``resumed`` in its result says so).
    """
    out: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
    if os.environ.get("AUTOPRUNE_SQ_RESUME") == "1":
        for job in jobs:
            kept = kept_result(ctx, job)
            if kept is not None:
                out[job] = {**kept, "resumed": True}
                log(f"{NAME}: {job} kept from an earlier run of this commit")
        jobs = [job for job in jobs if job not in out]
        for job in jobs:
            drop_half_run(ctx, job)
    if workers <= 1:
        for job in jobs:
            out[job] = _guarded(ctx, job)
        return out
    with process_pool(workers) as pool:
        futures = {job: pool.submit(_guarded, ctx, job) for job in jobs}
        for job, fut in futures.items():
            out[job] = fut.result()
    return out


def _guarded(ctx: Context, job: Tuple[str, int, str]) -> Dict[str, Any]:
    import traceback

    t0 = time.time()
    try:
        res = run_job(ctx, *job)
    except Exception as err:  # one broken contender must not sink the others' results
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}"[:300], "rows": [], "wall_s": time.time() - t0, "counted": 0,
                "n_complete": 0, "n_stopped_early": 0, "n_failed": 0, "errors": []}
    log(f"{NAME}: {job} done in {time.time() - t0:.0f} s")
    keep_result(ctx, job, res)
    return res


# --------------------------------------------------------------------------- analysis


def at_level(rows: List[Dict[str, Any]], level: float) -> Optional[Dict[str, Any]]:
    """The point chosen by validation accuracy among points no larger than ``level``: ties broken by the validation
    loss (``val_score``, as ``autoprune export`` picks) where a point records it, then by size (smaller)."""
    ok = [r for r in rows if r.get("size_ratio") is not None and r["size_ratio"] <= level and r.get("val_accuracy") is not None]
    return max(ok, key=lambda r: (r["val_accuracy"], r.get("val_score") or r["val_accuracy"], -r["size_ratio"])) if ok else None


def oracle_at(rows: List[Dict[str, Any]], level: float) -> Optional[float]:
    """The best test accuracy among points no larger than ``level``: what choosing with the test set would give, so the
    most that any rule choosing among these points could reach (None when no point is that small)."""
    ok = [r["test_accuracy"] for r in rows if r.get("size_ratio") is not None and r["size_ratio"] <= level and r.get("test_accuracy") is not None]
    return max(ok) if ok else None


def mean_std(xs: List[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    """Mean and standard deviation of the values present, and how many were present."""
    vals = [x for x in xs if x is not None]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def pm(xs: List[Optional[float]], n_all: int, digits: int = 3) -> str:
    m, s, n = mean_std(xs)
    if m is None:
        return "—"
    text = f"{m:.{digits}f} ± {s:.{digits}f}" if n_all > 1 else f"{m:.{digits}f}"
    return text + (f" ({n}/{n_all} seeds)" if n < n_all else "")


def target_mean(xs: List[Optional[float]]) -> float:
    """Mean over seeds for the targets: a seed without a point that small counts 0."""
    return statistics.fmean([x if x is not None else 0.0 for x in xs]) if xs else 0.0


def analyse(task: str, seeds: List[int], res: Dict[Tuple[str, int, str], Dict[str, Any]], contenders: List[Tuple[str, str]] = CONTENDERS) -> Dict[str, Any]:
    from autoprune.search.pareto import hypervolume

    acc: Dict[str, List[List[Optional[float]]]] = {}
    hv: Dict[str, Dict[str, List[float]]] = {}
    picks: Dict[str, List[List[Optional[Dict]]]] = {}
    oracle: Dict[str, List[List[Optional[float]]]] = {}
    for key, _ in contenders:
        acc[key] = [[] for _ in LEVELS]
        picks[key] = [[] for _ in LEVELS]
        oracle[key] = [[] for _ in LEVELS]
        hv[key] = {"val": [], "test": []}
        for seed in seeds:
            rows = res[(task, seed, key)]["rows"]
            for i, lv in enumerate(LEVELS):
                p = at_level(rows, lv)
                picks[key][i].append(p)
                acc[key][i].append(p["test_accuracy"] if p else None)
                oracle[key][i].append(oracle_at(rows, lv))
            hv[key]["val"].append(hypervolume(rows, "val_accuracy") if rows else 0.0)
            hv[key]["test"].append(hypervolume(rows, "test_accuracy") if rows else 0.0)
    return {"acc": acc, "hv": hv, "picks": picks, "oracle": oracle}


#: the baselines (everything but the searches)
BASELINES = ["scratch", "uniform_magnitude", "uniform_taylor", "lightning", "torch_global"]
#: per task: the least margin (points of mean test accuracy) over the best baseline, per level
MARGINS = {"mnist1d": {0.05: 0.0, 0.02: 1.0, 0.01: 1.0}, "jv": {0.10: 0.0, 0.05: 0.0, 0.02: 0.0, 0.01: 0.5}}


def best_baseline(acc: Dict[str, List[List[Optional[float]]]], i: int) -> Tuple[float, str]:
    """The best baseline's mean test accuracy at level ``i`` (a seed without a point counts 0) and its label."""
    value, key = max((target_mean(acc[k][i]), k) for k in BASELINES)
    return value, LABELS[key]


def origin_cells(a: Dict[str, Any], seeds: List[int]) -> Tuple[int, int, List[List[str]]]:
    """(cells at ≤ 5 / 2 / 1 % picked from a sampled trial, cells with a pick, a table row per cell)."""
    sampled = total = 0
    rows = []
    for lv in SMALL_LEVELS:
        i = LEVELS.index(lv)
        for j, seed in enumerate(seeds):
            p = a["picks"]["autoprune"][i][j]
            if p is None:
                rows.append([f"≤ {lv:.0%}", seed, "—", None, None, None])
                continue
            total += 1
            sampled += p.get("origin") == "sampled"
            rows.append([f"≤ {lv:.0%}", seed, p["trial"], p.get("origin"), "hybrid" if p.get("hybrid") else p.get("granularity"), p.get("precision")])
    return sampled, total, rows


def targets(task: str, a: Dict[str, Any], dense_test: float, seeds: List[int], walls: Dict[str, float]) -> Tuple[Dict[str, Any], List[str]]:
    acc, hv = a["acc"], a["hv"]
    auto = [target_mean(acc["autoprune"][i]) for i in range(len(LEVELS))]
    lines: List[str] = []
    margins = {}
    for lv, need in MARGINS.get(task, {}).items():
        i = LEVELS.index(lv)
        best, label = best_baseline(acc, i)
        got = 100 * (auto[i] - best)
        found = [x for x in a["oracle"]["autoprune"][i] if x is not None]
        bound = target_mean(a["oracle"]["autoprune"][i]) if found else None
        margins[f"{lv:.0%}"] = {"autoprune": auto[i], "best_baseline": best, "baseline": label, "points": got, "needed": need, "met": got >= need - 1e-9,
                                "oracle": bound, "oracle_points": 100 * (bound - best) if found else None}
        oracle = (f"The best test accuracy of any of its trials that small, {bound:.4f} ({100 * (bound - best):+.2f} points), bounds what any pick "
                  "among them could reach (a test-set oracle, not a pick)." if found else "None of its trials is that small.")
        lines.append(f"- at ≤ {lv:.0%}: autoprune {auto[i]:.4f} vs the best baseline, {label}, {best:.4f}: {got:+.2f} points "
                     f"(needed {'≥ ' + format(need, '+.1f') if need else '≥ 0'}) → {verdict(got >= need - 1e-9)}. {oracle}")
    sampled, cells, _ = origin_cells(a, seeds)
    lines.append(f"- picks at ≤ 5 / 2 / 1 % from a sampled (not a warm-start) trial: {sampled} of {cells} cells of this task "
                 f"(the target counts both tasks together: at least half).")
    hv_a, hv_r = statistics.fmean(hv["autoprune"]["val"]), statistics.fmean(hv["random"]["val"])
    ratio = hv_a / hv_r if hv_r else float("inf")
    lines.append(f"- hypervolume (validation, mean over seeds) ≥ 1.15x random search's: {hv_a:.4f} / {hv_r:.4f} = {ratio:.3f}x → {verdict(ratio >= 1.15)}.")
    before = walls.get("before")
    if before:
        w = walls["now"] / before
        lines.append(f"- search wall time within 10 % of the previous 30-trial searches ({before:,.0f} s for {len(seeds)} seed(s) in the committed "
                     f"results of {walls['commit']}): {walls['now']:,.0f} s = {w:.2f}x → {verdict(w <= 1.10)}.")
    return {"margins": margins, "sampled_cells": sampled, "cells": cells, "hv_ratio": ratio, "wall_ratio": (walls["now"] / before) if before else None}, lines


def previous_wall(task: str, n_seeds: int) -> Dict[str, Any]:
    """The autoprune search wall time of the results committed before the size-first space (``git show``), per seed count."""
    import re
    import subprocess

    from benchmarks._common import REPO

    commit = "b6391b7"  # the last results of the per-group space (acec950's run, committed at b6391b7)
    try:
        text = subprocess.run(["git", "show", f"{commit}:benchmarks/results/search_quality.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    section = text.split("## mnist1d")[1] if task == "mnist1d" else text.split("## mnist1d")[0]
    m = re.search(r"^\| autoprune \(NSGA-II\) \|.*\| ([\d,.]+) \|$", section, re.M)
    return {"before": float(m.group(1).replace(",", "")) / 3 * n_seeds, "commit": commit} if m else {}


def run_task_report(ctx: Context, task: str, seeds: List[int], res: Dict[Tuple[str, int, str], Dict[str, Any]]) -> Tuple[List[str], Dict[str, Any]]:
    a = analyse(task, seeds, res)
    dense = {s: res[(task, s, "dense")] for s in seeds}
    dense_test = statistics.fmean(d["metrics"]["test_accuracy"] for d in dense.values())
    dense_val = statistics.fmean(d["metrics"]["val_accuracy"] for d in dense.values())
    n = len(seeds)
    keys = ", ".join("`" + d["key"] + "`" for d in dense.values())
    lines = [f"## {TASKS[task]['label']}", ""]
    lines.append(
        f"Dense models (one per seed, cache keys {keys}): validation "
        f"{pm([d['metrics']['val_accuracy'] for d in dense.values()], n, 4)}, test {pm([d['metrics']['test_accuracy'] for d in dense.values()], n, 4)}, "
        f"{next(iter(dense.values()))['metrics']['params']:,} parameters. Seeds {seeds}: `seed` and `search.seed` both set to the seed. "
        f"Searches: {trials_for(ctx, task)} trials each (complete + stopped early), fine-tune epochs fixed to {FINETUNE_EPOCHS}. Baselines: "
        f"{FINETUNE_EPOCHS} fine-tune epochs at lr {BASELINE_LR}, clipping as the study trains; widths per level from `width_for_level` "
        f"({'and, int8 being searched, `int8_width_for_level`; every baseline point also in int8' if wants_int8(base_config(task)) else 'float32'}); "
        f"uniform hidden units then recover by `{uniform_recovery(base_config(task))}` (as the search's warm start does); "
        f"peers at {', '.join(f'{s:.0%}' for s in SPARSITIES)} sparsity."
    )
    space_cfg = search_config(ctx, task).search
    raw = yaml.safe_load((SEARCH_SPACES / f"{TASKS[task]['study']}.yaml").read_text())
    f = space_cfg.fidelity
    lines.append(
        f"Search space{'' if 'search' in raw else ' (package defaults)'}: size first (sizes {list(space_cfg.size) if space_cfg.size else 'from the limits to 0.5'}), "
        f"sampler `{space_cfg.sampler}`, methods {space_cfg.methods}, granularities {space_cfg.granularities} (hybrid when both), "
        f"sparsity groups `{space_cfg.sparsity.groups}`, weight sparsity {list(space_cfg.sparsity.range)}, units removed {list(space_cfg.sparsity.units)}, "
        f"precisions {space_cfg.quantize}, schedules {space_cfg.schedule.kinds}, recovery {space_cfg.recovery} (retraining {space_cfg.recovery_epochs or 'the dense'} epochs"
        + ("; multi-fidelity: sampled trials fine-tune"
           + (f" {f.finetune_epochs} epochs (the cheap rung, instead of the fixed {FINETUNE_EPOCHS})" if f.finetune_epochs else "")
           + f", {f.share:.0%} of the trials are promotions to retraining, eta {f.eta}" if f.enabled else "")
        + f"), distillation {space_cfg.distillation}."
    )
    lines += ["", f"Mean ± standard deviation over {n} seed{'s' if n > 1 else ''}:", ""]
    rows = []
    for key, label in CONTENDERS:
        walls = [res[(task, s, key)]["wall_s"] for s in seeds]
        counts = "/".join(str(sum(res[(task, s, key)][k] for s in seeds)) for k in ("n_complete", "n_stopped_early", "n_failed"))
        rows.append([label] + [pm(a["acc"][key][i], n) for i in range(len(LEVELS))] + [pm(a["hv"][key]["val"], n), pm(a["hv"][key]["test"], n), counts, sum(walls)])
    lines += table(["contender"] + [f"test acc @ ≤ {lv:.0%} size" for lv in LEVELS] + ["hypervolume (val)", "hypervolume (test)", "complete / stopped / failed", "wall (s, all seeds)"], rows)
    lines.append("")
    lines.append(
        f"Sizes are `size_bytes` (sparse encodings for tensors with zeros) over dense float32 bytes. Hypervolume: reference accuracy dense - 0.10 "
        f"(dense validation {dense_val:.3f}, test {dense_test:.3f} on average), size on a log scale from dense down to 1 % (smaller counts as 1 %), "
        "normalised so that 1.0 is dense accuracy at 1 % of dense size. '—': no point that small in any seed."
    )
    for key, label in CONTENDERS:
        errs = sorted({e for s in seeds for e in res[(task, s, key)].get("errors", [])} | {res[(task, s, key)]["error"] for s in seeds if res[(task, s, key)].get("error")})
        if errs:
            lines.append(f"- {label}: errors: " + "; ".join(f"`{e}`" for e in errs))
    walls = {"now": sum(res[(task, s, "autoprune")]["wall_s"] for s in seeds), **previous_wall(task, n)}
    t, tlines = targets(task, a, dense_test, seeds, walls)
    lines += ["", "**Targets**", ""] + tlines
    _, _, orow = origin_cells(a, seeds)
    lines += ["", "Where autoprune's picks at ≤ 5 / 2 / 1 % came from, per seed (`sampled`: the sampler proposed it, or a promotion of a trial it proposed):", ""]
    lines += table(["level", "seed", "trial", "origin", "granularity", "precision"], orow, align="lrllll")
    if n > 1:
        lines += ["", "Per seed (test accuracy at ≤ 10 / 5 / 2 / 1 %, hypervolume on validation):", ""]
        prow = []
        for key, label in CONTENDERS:
            for j, s in enumerate(seeds):
                prow.append([label, s] + [a["acc"][key][i][j] for i in range(len(LEVELS))] + [a["hv"][key]["val"][j]])
        lines += table(["contender", "seed"] + [f"@ ≤ {lv:.0%}" for lv in LEVELS] + ["HV (val)"], prow, align="lr" + "r" * (len(LEVELS) + 1))
    lines += ["", f"Chosen points, seed {seeds[0]}:", ""]
    crow = []
    for key, label in CONTENDERS:
        for i, lv in enumerate(LEVELS):
            p = a["picks"][key][i][0]
            crow.append([label, f"≤ {lv:.0%}"] + ([p["trial"], f"{100 * p['size_ratio']:.2f} %", p["val_accuracy"], p["test_accuracy"], p.get("method"),
                         "hybrid" if p.get("hybrid") else p.get("granularity"), p.get("precision") or "float32", p.get("schedule"), p.get("recovery")] if p else [None] * 9))
    lines += table(["contender", "level", "trial / setting", "size", "val acc", "test acc", "method", "granularity", "precision", "schedule", "recovery"], crow,
                   align="llllrrlllll")
    png = f"{NAME}_{task}.png"
    _plot(task, seeds, res, dense_test, ctx.results_dir / png)
    lines += ["", f"![{task}: every contender's points]({png})", ""]
    return lines, {"targets": t, "analysis": {k: v for k, v in a.items() if k != "picks"}}


def _plot(task: str, seeds: List[int], res: Dict[Tuple[str, int, str], Dict[str, Any]], dense_test: float, path: Path,
          contenders: List[Tuple[str, str]] = CONTENDERS) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    styles = {
        "autoprune": ("o", "C3"), "random": ("x", "C7"), "scratch": ("D-", "k"), "uniform_magnitude": ("v-", "C2"),
        "uniform_taylor": ("^-", "C1"), "lightning": ("s-", "C0"), "torch_global": ("P-", "C4"),
    }
    lo = dense_test
    for key, label in contenders:
        marker, color = styles[key]
        for j, s in enumerate(seeds):
            rows = sorted((r for r in res[(task, s, key)]["rows"] if r.get("size_ratio") and r.get("test_accuracy") is not None), key=lambda r: r["size_ratio"])
            if not rows:
                continue
            lo = min(lo, min(r["test_accuracy"] for r in rows))
            ax.plot([100 * r["size_ratio"] for r in rows], [r["test_accuracy"] for r in rows], marker, c=color, label=label if j == 0 else None,
                    ms=5 if j == 0 else 3, alpha=0.9 if j == 0 else 0.35, lw=1 if j == 0 else 0.6)
    ax.axhline(dense_test, ls="--", c="k", lw=0.8, label=f"dense ({dense_test:.3f})")
    for lv in LEVELS:
        ax.axvline(100 * lv, c="#999", lw=0.6, ls=":")
    ax.set_xscale("log")
    log_ticks(ax)
    ax.set_xlabel("size, % of dense (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{TASKS[task]['label'].split(',')[0]}: seed {seeds[0]} bold" + (f", seeds {seeds[1:]} faint" if len(seeds) > 1 else ""))
    ax.set_ylim(max(0.0, max(lo, dense_test - 0.3) - 0.02), 1.0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def run(ctx: Context) -> None:
    from benchmarks._common import one_thread

    one_thread()
    resume = os.environ.get("AUTOPRUNE_SQ_RESUME") == "1"
    ctx.runs(NAME, fresh=not resume)
    tasks, seeds = tasks_for(ctx), seeds_for(ctx)
    workers = int(os.environ.get("AUTOPRUNE_BENCH_JOBS", "2"))
    t0 = time.time()
    # dense models first (one per task and seed): the contenders then all find them in the cache
    res = run_jobs(ctx, [(t, s, "dense") for t in tasks for s in seeds], workers)
    for job, r in res.items():
        if r.get("error"):
            raise RuntimeError(f"dense model {job} failed: {r['error']}")
    # the longest jobs first (MNIST-1D searches), so that the two workers finish together
    order = ["autoprune", "random", "lightning", "torch_global", "scratch", "uniform_taylor", "uniform_magnitude"]
    jobs = [(t, s, c) for t in reversed(tasks) for c in order for s in seeds]
    res.update(run_jobs(ctx, jobs, workers))
    body: List[str] = []
    summary: Dict[str, Any] = {}
    for task in tasks:
        lines, summary[task] = run_task_report(ctx, task, seeds, res)
        body += lines
    sampled = sum(summary[t]["targets"]["sampled_cells"] for t in tasks)
    cells = sum(summary[t]["targets"]["cells"] for t in tasks)
    body = [f"**Picks from sampled trials** (target: at least half of the (task, seed, level) cells at ≤ 5 / 2 / 1 %): {sampled} of {cells} "
            f"→ {verdict(cells > 0 and sampled >= cells / 2)}.", ""] + body
    (runs_dir(ctx) / "summary.json").write_text(json.dumps({"summary": summary, "results": {"|".join(map(str, k)): v for k, v in res.items()}}, indent=1, default=str))
    notes = [
        f"Every contender of a task and seed starts from the same data and the same dense model (trained once per seed into the cache and copied "
        f"into each study) or, for small dense models, the same dense recipe. Jobs ran in {workers} process(es), one torch thread each, "
        f"{time.time() - t0:.0f} s in all; a search's wall time includes everything `run_search` does (MLflow logging, latency measurement, trial checkpoints). "
        "autoprune runs with the study's defaults for everything not listed (warm start, recovery choices); random search samples the same space "
        "without a warm start. The point at a level is chosen by validation accuracy among a contender's points that small and reported on test.",
    ]
    if ctx.quick:
        notes.append(f"Quick mode: JapaneseVowels only, seed 0 only, {trials_for(ctx, 'jv')} trials per search (not a measurement: a smoke run).")
    resumed = sorted("-".join(map(str, k)) for k, v in res.items() if v.get("resumed"))
    if resumed:
        notes.append(f"Resumed (AUTOPRUNE_SQ_RESUME=1): {len(resumed)} jobs were kept from an earlier, stopped run of the same commit and "
                     f"settings ({', '.join(resumed)}); their wall times are their own runs', on a machine that may have been busier or quieter, and "
                     f"the time in all above is this run's only: the kept jobs had taken {sum(res[k].get('wall_s') or 0 for k in res if res[k].get('resumed')):.0f} s "
                     "more (summed over jobs).")
    if os.environ.get("AUTOPRUNE_SQ_TASKS"):
        notes.append(f"Tasks limited by AUTOPRUNE_SQ_TASKS={os.environ['AUTOPRUNE_SQ_TASKS']}.")
    write_result(ctx, NAME, header("search_quality: autoprune search vs small dense, uniform pruning, the peers' pruning code and random search", ctx, notes) + body)

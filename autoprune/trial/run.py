"""``run_trial(config, policy)``: prune one policy on the study's dense model, measure, evaluate.

A pure, picklable function of plain objects: no globals, no open handles passed in.
The same call runs in-process (``autoprune prune``), in a search worker process and in
a Ray Tune worker. It

1. loads the cached dense checkpoint (training it first if needed),
2. checks the latency budget on the sampled hidden-unit structure *before training*,
3. fine-tunes with the :class:`~autoprune.pruning.callback.PruningCallback`, stopping
   hopeless trials early,
4. compacts (removes dead hidden units) and recovers (``policy.recovery``),
5. measures size / MACs / latency, evaluates on validation and test (int8 as it will run),
   and writes the pruned weights to ``trial_dir``.

The sampler only ever sees validation accuracy; test accuracy is recorded beside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import lightning.pytorch as pl
import torch

from autoprune.config import StudyConfig
from autoprune.errors import PruningError, TrialStoppedEarly
from autoprune.layout import study_paths
from autoprune.models.arch import ArchSpec
from autoprune.models.fitting import BestValidation, HopelessStop, Recipe, RNNModule, check_finite, fit
from autoprune.models.rnn import RNNClassifier, evaluate
from autoprune.pruning.callback import PruningCallback, report_of_counts, sparsity_report
from autoprune.pruning.compact import compact
from autoprune.pruning.groups import ModelGroups
from autoprune.pruning.policy import PruningPolicy
from autoprune.pruning.recovery import recover
from autoprune.reference.cache import DenseResult, load_dense_model
from autoprune.reference.dense import ensure_dense
from autoprune.runtime.kernels import check_int8_kernel, precision_name
from autoprune.runtime.latency import LatencyCache, LatencySettings
from autoprune.runtime.measure import dense_size_bytes, macs_per_sequence, measure
from autoprune.runtime.quantize import quantized_result
from autoprune.tasks import build_datamodule
from autoprune.trial.result import TrialOptions, TrialResult, load_trial_model, save_trial
from autoprune.trial.validation import scored_samples, val_score

__all__ = ["run_trial", "planned_arch", "dense_numbers", "budget_excess", "widths_decide"]

log = logging.getLogger(__name__)


def planned_arch(dense_arch: ArchSpec, policy: PruningPolicy) -> ArchSpec:
    """The compacted architecture a policy will produce, found before any training.

    Also validates the policy's group names against the model (unknown names and
    sparsities that would empty a layer are refused here, not mid-training).
    """
    groups = ModelGroups(RNNClassifier(dense_arch))
    targets = groups.targets(policy.sparsity, policy.granularity)
    if policy.granularity != "hidden_unit":
        return dense_arch
    return groups.shrunk_spec(targets)


def run_trial(config: StudyConfig, policy: PruningPolicy, options: Optional[TrialOptions] = None) -> TrialResult:
    """Prune, fine-tune, compact, recover, measure and evaluate one policy.

    Returns a :class:`TrialResult` whose ``state`` is ``complete``, ``infeasible`` (the
    latency budget is broken by the structure alone: no training was done) or
    ``stopped_early`` (hopeless after ``early_stop_after`` epochs).

    Raises:
        PruningError: the policy cannot be applied or fine-tuning diverged (NaN loss);
            nothing is written to ``trial_dir`` then.
    """
    options = options or TrialOptions()
    if policy.quantize == "int8":  # before the dense model trains: the runtime must have the kernel
        check_int8_kernel(config.measure.runtime, config.model.cell, "policy quantize")
    started = time.perf_counter()
    if options.threads:
        torch.set_num_threads(options.threads)
    dense = ensure_dense(config, options.runs_dir)
    arch = planned_arch(dense.arch, policy)  # the policy checked against the model before anything is measured
    # ---- latency before training: only the structure matters
    settings = LatencySettings.from_config(config.measure, int(dense.metrics["max_length"]))
    cache = LatencyCache(study_paths(options.runs_dir, config.study).latency_cache)
    dense_latency = cache.get(dense.arch, settings) if options.measure_latency else None
    planned_latency = cache.get(arch, settings.with_precision(policy.quantize)) if options.max_latency_ms is not None else None
    dense_info = dense_numbers(dense, settings["seq_len"], dense_latency)
    if budget_excess(options, latency_ms=planned_latency).get("latency_ms", 0.0) > 0:
        return TrialResult(
            "infeasible",
            latency_ms=planned_latency,
            latency_device=settings.device_label(),
            hidden_sizes=arch.hidden_sizes,
            dense=dense_info,
            reason=f"latency {planned_latency:.3f} ms of structure {arch.hidden_sizes} exceeds max_latency_ms={options.max_latency_ms}",
            duration_s=time.perf_counter() - started,
        )

    pl.seed_everything(config.seed, verbose=False)
    dm = build_datamodule(config)
    dm.min_train_batches = policy.finetune.min_epoch_steps or 0  # tasks.budget: epochs do not shrink with the data
    dense_info["val_score"] = val_score(dense.metrics["val_accuracy"], dense.metrics.get("val_loss"), scored_samples(dm))
    teacher = load_dense_model(dense.checkpoint)[0] if policy.distillation.weight > 0 else None
    pruner = PruningCallback(policy, seed=config.seed)
    widths_only = widths_decide(policy)
    if options.resume_from:  # a promotion: the pruned weights exist already; only the retraining runs
        model, history = _resumed(options.resume_from, dense.arch, policy)
    elif widths_only:  # the retraining starts afresh from the widths alone: pruning them first is wasted work
        model, history = RNNClassifier(arch), []
    else:
        try:
            model, module = _prune_while_finetuning(config, policy, options, dense, dm, teacher, pruner)
        except TrialStoppedEarly as stop:
            return TrialResult(
                "stopped_early",
                val_accuracy=stop.history[-1]["val_accuracy"] if stop.history else None,
                dense=dense_info,
                history=stop.history,
                pruning_history=pruner.history,
                reason=str(stop),
                duration_s=time.perf_counter() - started,
            )
        history = module.history
    report = removed_units_report(dense.arch, model) if widths_only else sparsity_report(model)
    small = compact(model)
    recovery_history: List[Dict[str, Any]] = []
    if policy.recovery != "finetune":  # rewind / scratch: retrain the found network with the dense schedule
        small, recovery_history = recover(config, policy, small, dm, teacher, progress=options.progress)
        check_finite(small, f"recovery '{policy.recovery}' produced non-finite weights; lower train.lr or set train.grad_clip")
    result = _measure_and_evaluate(config, policy, options, small, dm, settings, cache, dense.arch)
    result.sparsity = {**report, "hidden_units": result.sparsity["hidden_units"]}
    result.dense = dense_info
    result.history = history + recovery_history
    result.pruning_history = pruner.history
    if budget_excess(options, size_bytes=result.size_bytes).get("size_bytes", 0.0) > 0:
        result.reason = f"size {result.size_bytes} B exceeds max_size_bytes={options.max_size_bytes}"
    result.duration_s = time.perf_counter() - started
    if options.trial_dir:
        result.checkpoint = str(save_trial(Path(options.trial_dir), small, policy, result, config.study))
    return result


def dense_numbers(dense: DenseResult, seq_len: int, latency_ms: Optional[float] = None) -> Dict[str, Any]:
    """The dense model's numbers every trial records beside its own (its size, MACs at ``seq_len`` and, when measured, latency)."""
    info: Dict[str, Any] = {
        "val_accuracy": dense.metrics["val_accuracy"],
        "test_accuracy": dense.metrics["test_accuracy"],
        "params": dense.metrics["params"],
        "size_bytes": dense_size_bytes(dense.metrics["params"]),
        "hidden_sizes": dense.arch.hidden_sizes,
        "macs": macs_per_sequence(RNNClassifier(dense.arch), seq_len),
    }
    if latency_ms is not None:
        info["latency_ms"] = latency_ms
    return info


def budget_excess(budgets: Any, latency_ms: Optional[float] = None, size_bytes: Optional[float] = None) -> Dict[str, float]:
    """How far a trial is over each budget set: ``latency_ms`` / ``size_bytes`` → value minus budget.

    The one rule of "over the budget": a value above 0 is over (the trial is infeasible), 0 or below
    is within; Optuna's constraints take these values as they are. ``budgets`` carries
    ``max_latency_ms`` and ``max_size_bytes`` (:class:`TrialOptions`, or a study's
    ``search.constraints``); a budget that is None is left out, a value not measured counts as 0.
    """
    out: Dict[str, float] = {}
    if budgets.max_latency_ms is not None:
        out["latency_ms"] = float(latency_ms or 0.0) - budgets.max_latency_ms
    if budgets.max_size_bytes is not None:
        out["size_bytes"] = float(size_bytes or 0) - budgets.max_size_bytes
    return out


def widths_decide(policy: PruningPolicy) -> bool:
    """True when the trial's model depends on its widths alone: a hidden-unit policy without weight sparsity that
    recovers by ``scratch`` (a fresh, seeded initialisation of the compacted widths). Which units the pruning pass
    would keep is then thrown away with their weights, so the trial builds the widths directly and skips that pass
    (the fine-tune epochs on the full-size model): the same model, for the cost of the retraining alone. The warm
    start's uniform hidden-unit trials are such trials wherever a space offers ``scratch``."""
    ws = policy.weight_sparsity
    no_weights = ws is None or (ws == 0 if isinstance(ws, (int, float)) else not any(v > 0 for v in ws.values()))
    return policy.recovery == "scratch" and policy.granularity == "hidden_unit" and no_weights


def removed_units_report(dense_arch: ArchSpec, small: RNNClassifier) -> Dict[str, Any]:
    """:func:`sparsity_report` of the full-size model a hidden-unit pruning pass would have left, from its compacted
    widths: each matrix's removed entries count as zeros (what the pass's masks would hold)."""
    full = ModelGroups(RNNClassifier(dense_arch))
    kept = ModelGroups(small)
    counts = {}
    for name, ref in full.matrices.items():
        n = full.params[ref.param].numel()
        k = kept.matrices.get(name)
        counts[name] = (n - (int(torch.count_nonzero(kept.params[k.param])) if k is not None else 0), n)
    return report_of_counts(counts)


def finetune_recipe(policy: PruningPolicy) -> Recipe:
    """The fine-tune a policy prunes during: its epochs, optimizer and clipping, a constant learning rate."""
    ft = policy.finetune
    return Recipe(
        epochs=ft.epochs,
        lr=ft.lr,
        weight_decay=ft.weight_decay,
        optimizer=ft.optimizer,
        lr_schedule="none",
        max_seq_len=policy.max_seq_len,
        grad_clip_value=policy.grad_clip.value,
        grad_clip_algorithm=policy.grad_clip.algorithm,
    )


def _prune_while_finetuning(
    config: StudyConfig, policy: PruningPolicy, options: TrialOptions, dense: DenseResult, dm: Any, teacher: Optional[torch.nn.Module], pruner: PruningCallback
) -> Tuple[RNNClassifier, RNNModule]:
    """Fine-tune the dense model while ``pruner`` prunes it to the policy's targets.

    Raises:
        TrialStoppedEarly: the hopeless check stopped it (fine-tune recovery only).
        PruningError: the schedule did not finish, or the weights are not finite.
    """
    model, _ = load_dense_model(dense.checkpoint)
    model.train()
    recipe = dataclasses.replace(finetune_recipe(policy), accelerator=config.train.accelerator, devices=config.train.devices)  # where the study trains
    callbacks: List[pl.Callback] = [pruner, BestValidation(ready=pruner.reached_target)]
    if options.early_stop_after and policy.recovery == "finetune":  # rewind / scratch retrain anyway: no early verdict
        callbacks.append(HopelessStop(options.early_stop_after, dense.metrics["val_accuracy"] - options.early_stop_max_drop))
    module = fit(model, dm, recipe, config.seed, callbacks, teacher, policy.distillation, progress=options.progress)
    if not pruner.reached_target():
        raise PruningError(f"the schedule did not reach its target sparsity within {recipe.epochs} fine-tune epochs")
    check_finite(model, "fine-tuning produced non-finite weights; lower finetune.lr or grad_clip.value")
    return model, module


def _resumed(checkpoint: str, dense_arch: ArchSpec, policy: PruningPolicy) -> Tuple[RNNClassifier, List[Dict[str, Any]]]:
    """The pruned, compacted weights a promoted trial retrains, and the fine-tune history they came with.

    Raises:
        PruningError: the saved weights are not of this policy's pruned shape.
    """
    model, _ = load_trial_model(checkpoint)
    planned = planned_arch(dense_arch, policy).hidden_sizes
    if not all(a <= b for got, want in zip(model.hidden_sizes, planned) for a, b in zip(got, want)) or len(model.hidden_sizes) != len(planned):
        raise PruningError(f"{checkpoint}: hidden sizes {model.hidden_sizes} are not the pruned shape of this policy ({planned} at most)")
    result = Path(checkpoint).with_name("result.json")
    history = json.loads(result.read_text()).get("history", []) if result.is_file() else []
    return model.train(), history


def _measure_and_evaluate(
    config: StudyConfig,
    policy: PruningPolicy,
    options: TrialOptions,
    small: RNNClassifier,
    dm: Any,
    settings: LatencySettings,
    cache: LatencyCache,
    dense_arch: ArchSpec,
) -> TrialResult:
    """The compacted model as it will run: size, MACs, latency, validation and test accuracy (int8 when the policy says so)."""
    m = measure(small, settings["seq_len"])
    if options.measure_latency:
        m.latency_ms = cache.get(small.spec, settings.with_precision(policy.quantize))
    val = evaluate(small, *dm.tensors("val"))
    test = evaluate(small, *dm.tensors("test"))
    int8: Dict[str, Any] = {}
    if policy.quantize != "none":  # the model as it will run: int8 size and accuracy in measure.runtime
        q = quantized_result(small, dm, policy.quantize, config.measure.runtime)
        int8 = {**q["int8"], "float_val_accuracy": val["accuracy"], "float_test_accuracy": test["accuracy"], "float_size_bytes": m.size_bytes}
        m.size_bytes, val, test = q["size_bytes"], q["val"], q["test"]
    groups = ModelGroups(RNNClassifier(dense_arch))
    kept = ModelGroups(small).layers
    units = {name: 1.0 - kept[name].hidden / layer.hidden for name, layer in groups.layers.items()}
    n_val = scored_samples(dm)
    return TrialResult(
        "complete",
        val_accuracy=val["accuracy"],
        test_accuracy=test["accuracy"],
        val_loss=val["loss"],
        val_score=val_score(val["accuracy"], val["loss"], n_val),
        n_val=n_val,
        size_bytes=m.size_bytes,
        nonzero_params=m.nonzero_params,
        params=m.params,
        macs=m.macs,
        latency_ms=m.latency_ms,
        latency_device=settings.device_label() if m.latency_ms is not None else None,
        hidden_sizes=small.hidden_sizes,
        sparsity={"hidden_units": units},
        precision=precision_name(policy.quantize if int8 else "none"),
        int8=int8,
    )

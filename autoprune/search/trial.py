"""``run_trial(config, policy)``: prune one policy on the study's dense model, measure, evaluate.

A pure, picklable function of plain objects: no globals, no open handles passed in.
The same call runs in-process (``autoprune prune``), in a search worker process and in
a Ray Tune worker. It

1. loads the cached dense checkpoint (training it first if needed),
2. checks the latency budget on the sampled hidden-unit structure *before training*,
3. fine-tunes with the :class:`~autoprune.pruning.callback.PruningCallback`, stopping
   hopeless trials early,
4. compacts (removes dead hidden units), measures size / MACs / latency,
5. evaluates on validation and test, and writes the pruned weights to ``trial_dir``.

The sampler only ever sees validation accuracy; test accuracy is recorded beside it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from autoprune.config import StudyConfig
from autoprune.errors import PruningError
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.policy import PruningPolicy
from autoprune.search.latency import LatencyCache, LatencySettings
from autoprune.errors import TrialStoppedEarly

__all__ = ["TrialOptions", "TrialResult", "run_trial", "planned_arch", "load_trial_model", "TrialStoppedEarly"]

log = logging.getLogger(__name__)

TRIAL_FORMAT = 1


@dataclass
class TrialOptions:
    """Everything besides the config and policy that a trial needs (plain values only)."""

    runs_dir: str = "runs"
    trial_dir: Optional[str] = None  # where the pruned weights go; None: not saved
    max_latency_ms: Optional[float] = None
    max_size_bytes: Optional[int] = None
    early_stop_after: Optional[int] = None  # fine-tune epochs before the hopeless check
    early_stop_max_drop: float = 0.2  # allowed validation-accuracy drop below dense
    threads: Optional[int] = 1  # torch threads while training (tiny RNNs run best on one; None: leave as is)
    measure_latency: bool = True
    progress: bool = False


@dataclass
class TrialResult:
    """What one trial produced. ``state``: complete | infeasible | stopped_early | failed."""

    state: str
    val_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    val_loss: Optional[float] = None
    val_score: Optional[float] = None  # accuracy + a loss tie-break (search/validation.py): what the search ranks by
    size_bytes: Optional[int] = None
    nonzero_params: Optional[int] = None
    params: Optional[int] = None
    macs: Optional[int] = None
    latency_ms: Optional[float] = None
    hidden_sizes: Optional[List[List[int]]] = None
    sparsity: Dict[str, Any] = field(default_factory=dict)
    dense: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    pruning_history: List[Dict[str, Any]] = field(default_factory=list)
    reason: Optional[str] = None
    duration_s: float = 0.0
    checkpoint: Optional[str] = None
    precision: str = "float32"  # float32 | int8: what size, accuracy and latency were measured on
    int8: Dict[str, Any] = field(default_factory=dict)  # int8 only: runtime, float32 numbers, correct test predictions per runtime

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def planned_arch(dense_arch: ArchSpec, policy: PruningPolicy) -> ArchSpec:
    """The compacted architecture a policy will produce, found before any training.

    Also validates the policy's group names against the model (unknown names and
    sparsities that would empty a layer are refused here, not mid-training).
    """
    from autoprune.pruning.groups import ModelGroups

    groups = ModelGroups(RNNClassifier(dense_arch))
    targets = groups.resolve_sparsity(policy.sparsity, policy.granularity)
    if policy.granularity != "hidden_unit":
        return dense_arch
    from autoprune.pruning.callback import check_targets

    check_targets(groups, targets, "hidden_unit")
    hidden = [list(sizes) for sizes in dense_arch.hidden_sizes]
    for lname, s in targets.items():
        layer = groups.layers[lname]
        hidden[layer.layer][layer.direction] = layer.hidden - int(round(s * layer.hidden))
    return ArchSpec(dense_arch.cell, dense_arch.input_size, hidden, dense_arch.n_classes, dense_arch.pooling, dense_arch.attention_dim, dense_arch.dropout)


def _latency_settings(config: StudyConfig, dense_metrics: Dict[str, Any]) -> LatencySettings:
    return LatencySettings.from_config(config.measure, int(dense_metrics["max_length"]))


def run_trial(config: StudyConfig, policy: PruningPolicy, options: Optional[TrialOptions] = None) -> TrialResult:
    """Prune, fine-tune, compact, measure and evaluate one policy.

    Returns a :class:`TrialResult` whose ``state`` is ``complete``, ``infeasible`` (the
    latency or size budget is broken by the structure alone: no training was done) or
    ``stopped_early`` (hopeless after ``early_stop_after`` epochs).

    Raises:
        PruningError: the policy cannot be applied or fine-tuning diverged (NaN loss);
            nothing is written to ``trial_dir`` then.
    """
    options = options or TrialOptions()
    if policy.quantize == "int8":  # before the dense model trains: the runtime must have the kernel
        from autoprune.quantize import check_int8_kernel

        check_int8_kernel(config.measure.runtime, config.model.cell, "policy quantize")
    started = time.perf_counter()
    if options.threads:
        torch.set_num_threads(options.threads)
    from autoprune.dense import ensure_dense, load_dense_model, study_dir

    dense = ensure_dense(config, options.runs_dir)
    settings = _latency_settings(config, dense.metrics)
    cache = LatencyCache(study_dir(options.runs_dir, config.study) / "latency_cache.json")
    dense_info: Dict[str, Any] = {
        "val_accuracy": dense.metrics["val_accuracy"],
        "test_accuracy": dense.metrics["test_accuracy"],
        "params": dense.metrics["params"],
        "size_bytes": dense.metrics["params"] * 4,
        "hidden_sizes": dense.arch.hidden_sizes,
    }
    from autoprune.pruning.measure import macs_per_sequence

    dense_info["macs"] = macs_per_sequence(RNNClassifier(dense.arch), settings["seq_len"])
    if options.measure_latency:
        dense_info["latency_ms"] = cache.get(dense.arch, settings)

    # ---- latency / size before training: only the structure matters
    arch = planned_arch(dense.arch, policy)
    if options.max_latency_ms is not None:
        lat = cache.get(arch, settings.with_precision(policy.quantize))
        if lat > options.max_latency_ms:
            return TrialResult(
                "infeasible",
                latency_ms=lat,
                hidden_sizes=arch.hidden_sizes,
                dense=dense_info,
                reason=f"latency {lat:.3f} ms of structure {arch.hidden_sizes} exceeds max_latency_ms={options.max_latency_ms}",
                duration_s=time.perf_counter() - started,
            )

    import lightning.pytorch as pl

    from autoprune.dense import build_datamodule
    from autoprune.models.module import RNNModule, evaluate
    from autoprune.pruning.callback import PruningCallback, sparsity_report
    from autoprune.pruning.compact import compact
    from autoprune.pruning.measure import measure
    from autoprune.training import BestValidation, HopelessStop, make_trainer

    pl.seed_everything(config.seed, verbose=False)
    dm = build_datamodule(config)
    dm.min_train_batches = policy.finetune.min_epoch_steps or 0  # autoprune.budget: epochs do not shrink with the data
    from autoprune.search.validation import val_score

    dense_info["val_score"] = val_score(dense.metrics["val_accuracy"], dense.metrics.get("val_loss"), dm.n_val)
    model, _ = load_dense_model(dense.checkpoint)
    model.train()
    ft = policy.finetune
    teacher = load_dense_model(dense.checkpoint)[0] if policy.distillation.weight > 0 else None
    module = RNNModule(
        model,
        lr=ft.lr,
        weight_decay=ft.weight_decay,
        optimizer=ft.optimizer,
        lr_schedule="none",
        max_seq_len=policy.max_seq_len,
        seed=config.seed,
        teacher=teacher,
        distill_weight=policy.distillation.weight,
        distill_temperature=policy.distillation.temperature,
    )
    pruner = PruningCallback(policy, seed=config.seed)
    best = BestValidation(ready=pruner.reached_target)
    callbacks: List[pl.Callback] = [pruner, best]
    if options.early_stop_after and policy.recovery == "finetune":  # rewind / scratch retrain anyway: no early verdict
        callbacks.append(HopelessStop(options.early_stop_after, dense.metrics["val_accuracy"] - options.early_stop_max_drop))
    trainer = make_trainer(ft.epochs, callbacks, policy.grad_clip.value, policy.grad_clip.algorithm, progress=options.progress)
    try:
        trainer.fit(module, datamodule=dm)
    except TrialStoppedEarly as stop:
        return TrialResult(
            "stopped_early",
            val_accuracy=module.history[-1]["val_accuracy"] if module.history else None,
            dense=dense_info,
            history=module.history,
            pruning_history=pruner.history,
            reason=str(stop),
            duration_s=time.perf_counter() - started,
        )
    if not pruner.reached_target():
        raise PruningError(f"the schedule did not reach its target sparsity within {ft.epochs} fine-tune epochs")
    if any(not torch.isfinite(p).all() for p in model.parameters()):
        raise PruningError("fine-tuning produced non-finite weights; lower finetune.lr or grad_clip.value")

    report = sparsity_report(model)
    small = compact(model)
    recovery_history: List[Dict[str, Any]] = []
    if policy.recovery != "finetune":  # rewind / scratch: retrain the found network with the dense schedule
        from autoprune.pruning.recovery import recover

        small, recovery_history = recover(config, policy, small, dm, teacher, progress=options.progress)
        if any(not torch.isfinite(p).all() for p in small.parameters()):
            raise PruningError(f"recovery '{policy.recovery}' produced non-finite weights; lower train.lr or set train.grad_clip")
    seq_len = settings["seq_len"]
    m = measure(small, seq_len)
    if options.measure_latency:
        m.latency_ms = cache.get(small.spec, settings.with_precision(policy.quantize))
    val = evaluate(small, *dm.tensors("val"))
    test = evaluate(small, *dm.tensors("test"))
    int8: Dict[str, Any] = {}
    if policy.quantize != "none":  # the model as it will run: int8 size and accuracy in measure.runtime
        from autoprune.quantize import quantized_result

        q = quantized_result(small, dm, policy.quantize, config.measure.runtime)
        int8 = {**q["int8"], "float_val_accuracy": val["accuracy"], "float_test_accuracy": test["accuracy"], "float_size_bytes": m.size_bytes}
        m.size_bytes, val, test = q["size_bytes"], q["val"], q["test"]
    units = {}
    for l, (before, after) in enumerate(zip(dense.arch.hidden_sizes, small.hidden_sizes)):
        for d, (b, a) in enumerate(zip(before, after)):
            name = f"rnn.{l}" + ((".fwd", ".bwd")[d] if len(before) == 2 else "")
            units[name] = 1.0 - a / b
    result = TrialResult(
        "complete",
        val_accuracy=val["accuracy"],
        test_accuracy=test["accuracy"],
        val_loss=val["loss"],
        val_score=val_score(val["accuracy"], val["loss"], dm.n_val),
        size_bytes=m.size_bytes,
        nonzero_params=m.nonzero_params,
        params=m.params,
        macs=m.macs,
        latency_ms=m.latency_ms,
        hidden_sizes=small.hidden_sizes,
        sparsity={**report, "hidden_units": units},
        dense=dense_info,
        history=module.history + recovery_history,
        pruning_history=pruner.history,
        duration_s=0.0,
        precision="int8" if int8 else "float32",
        int8=int8,
    )
    if options.max_size_bytes is not None and m.size_bytes > options.max_size_bytes:
        result.reason = f"size {m.size_bytes} B exceeds max_size_bytes={options.max_size_bytes}"
    result.duration_s = time.perf_counter() - started
    if options.trial_dir:
        result.checkpoint = str(_save_trial(Path(options.trial_dir), small, policy, result, config))
    return result


def _save_trial(trial_dir: Path, model: RNNClassifier, policy: PruningPolicy, result: TrialResult, config: StudyConfig) -> Path:
    """Write the compacted weights and the result atomically (a killed trial leaves nothing half-written)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    target = trial_dir / "model.pt"
    payload = {
        "format": TRIAL_FORMAT,
        "arch": model.spec.to_dict(),
        "state_dict": model.state_dict(),
        "policy": policy.to_dict(),
        "study": config.study,
    }
    fd, tmp = tempfile.mkstemp(dir=trial_dir, prefix=".model.")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, target)
    info = {**result.to_dict(), "checkpoint": str(target), "policy": policy.to_dict()}
    (trial_dir / "result.json").write_text(json.dumps(info, indent=2, default=str))
    return target


def load_trial_model(path: str | os.PathLike) -> tuple[RNNClassifier, Dict[str, Any]]:
    """Rebuild a trial's compacted model from its ``model.pt`` (no retraining)."""
    from autoprune.checkpoints import load_checkpoint

    payload = load_checkpoint(path)
    model = RNNClassifier(ArchSpec.from_dict(payload["arch"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload

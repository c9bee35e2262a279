"""Export a searched trial's pruned model: compacted, verified, deployable, with a model card.

The exported model takes *raw* inputs, as the task provides them (batch-first padded
``x [B, T, C]`` float32 and ``lengths [B]`` int64): the per-channel normalisation fitted
on the training split is folded into the graph, so deployment needs no autoprune.
Every artifact is loaded back and run on the task's test set before the export counts
as done; a mismatch is an error and nothing is left in the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from autoprune.errors import ConfigError, ExportError, TrialError

from autoprune.export_formats import FORMATS, load_state_dict_export  # the format registry (writer, loader, verifier, snippet)

__all__ = ["export", "ExportResult", "select_trial", "FORMATS", "load_state_dict_export"]

log = logging.getLogger(__name__)

_DEFAULT_FORMATS = ("torchscript", "onnx", "state_dict")


@dataclass
class ExportResult:
    trial: int
    files: Dict[str, str]
    verified: bool
    test_accuracy: float
    val_accuracy: float
    size_bytes: int
    latency_ms: Optional[float]
    mlflow_model_uri: Optional[str]
    out_dir: str
    model_card: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "trial": self.trial,
            "files": self.files,
            "verified": self.verified,
            "test_accuracy": self.test_accuracy,
            "val_accuracy": self.val_accuracy,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "mlflow_model_uri": self.mlflow_model_uri,
            "out_dir": self.out_dir,
            "model_card": str(Path(self.out_dir) / "model_card.json"),
        }


def _nearest_front(rows: List[Dict[str, Any]], number: int, k: int = 3) -> str:
    near = sorted(rows, key=lambda r: abs(r["trial"] - number))[:k]
    return ", ".join(f"{r['trial']} (val {r['val_accuracy']:.4f}, {r['size_bytes']:,} B)" for r in near) or "none yet"


def select_trial(
    study: Any,
    trial: Optional[int] = None,
    pick: Optional[str] = None,
    max_size_bytes: Optional[int] = None,
    max_latency_ms: Optional[float] = None,
    min_accuracy: Optional[float] = None,
    tolerance: float = 0.01,
) -> Dict[str, Any]:
    """The row of the trial to export: ``trial`` by number, or ``pick`` among the Pareto trials meeting the limits.

    Picks use validation accuracy only: ``best`` (the default: the smallest within ``tolerance``,
    a fraction, of dense validation accuracy; see :func:`autoprune.search.pareto.pick_best`),
    ``max-accuracy`` (ties: smaller), ``smallest``
    (ties: more accurate) or ``knee`` (see :func:`autoprune.search.pareto.knee_index`).

    Raises:
        TrialError: unknown trial; a trial that is not complete (says which state and lists the
            nearest Pareto trials); no Pareto trial meets the limits (names the closest and by how much it misses).
    """
    from autoprune.search.pareto import front_rows, knee_index, trial_row

    front = front_rows(study)
    if trial is not None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if trial not in trials:
            raise TrialError(f"study '{study.study_name}' has no trial {trial} (trials 0-{max(trials) if trials else -1}); Pareto trials: {_nearest_front(front, trial, 10)}")
        row = trial_row(trials[trial])
        if row["state"] != "complete":
            why = row.get("reason") or row.get("error") or ""
            raise TrialError(
                f"trial {trial} of study '{study.study_name}' is {row['state'].replace('_', ' ')}"
                + (f" ({why})" if why else "")
                + f" and has no model to export; nearest Pareto trials: {_nearest_front(front, trial)}"
            )
        return row
    if not front:
        raise TrialError(f"study '{study.study_name}' has no complete feasible trial yet; run `autoprune search` first")
    limits = []
    if max_size_bytes is not None:
        limits.append(("size_bytes", max_size_bytes, lambda r: r["size_bytes"] <= max_size_bytes, lambda r: f"{r['size_bytes'] - max_size_bytes:,} B over --max-size-bytes"))
    if max_latency_ms is not None:
        limits.append(("latency_ms", max_latency_ms, lambda r: r["latency_ms"] is not None and r["latency_ms"] <= max_latency_ms, lambda r: f"{(r['latency_ms'] or 0) - max_latency_ms:.3f} ms over --max-latency-ms"))
    if min_accuracy is not None:
        limits.append(("val_accuracy", min_accuracy, lambda r: r["val_accuracy"] >= min_accuracy, lambda r: f"{min_accuracy - r['val_accuracy']:.4f} below --min-accuracy"))
    ok = [r for r in front if all(check(r) for _, _, check, _ in limits)]
    if not ok:
        def miss(r: Dict[str, Any]) -> float:
            total = 0.0
            for key, bound, check, _ in limits:
                if not check(r):
                    value = r[key] if r[key] is not None else float("inf")
                    total += abs(value - bound) / max(abs(bound), 1e-12)
            return total

        closest = min(front, key=miss)
        reasons = "; ".join(text(closest) for _, _, check, text in limits if not check(closest))
        raise TrialError(f"no Pareto trial of study '{study.study_name}' meets the limits; the closest is trial {closest['trial']}: {reasons}")
    pick = pick or "best"
    if pick == "best":
        from autoprune.search.pareto import pick_best

        chosen, note = pick_best(ok, tolerance)
        if note:
            log.warning("%s", note)
        return chosen
    if pick == "max-accuracy":
        return max(ok, key=lambda r: (r["val_accuracy"], -r["size_bytes"]))
    if pick == "smallest":
        return min(ok, key=lambda r: (r["size_bytes"], -r["val_accuracy"]))
    if pick == "knee":
        return ok[knee_index(ok)]
    raise ConfigError(f"--pick must be one of best, max-accuracy, smallest, knee; got {pick!r}")


def _write_readme(out: Path, card: Dict[str, Any], files: Dict[str, str]) -> None:
    c = card
    lines = [
        f"# Pruned {c['architecture']['cell'].upper()} classifier — study `{c['study']}`, trial {c['trial']}",
        "",
        f"Task `{c['task']}`: {c['n_classes']} classes, {c['architecture']['input_size']} input channels.",
        f"Test accuracy {c['test_accuracy']:.4f} (dense {c['dense']['test_accuracy']:.4f}); "
        f"size {c['size_bytes']:,} B ({c['size_ratio'] * 100:.2f} % of dense); hidden sizes {c['hidden_sizes_after']} "
        f"(dense {c['hidden_sizes_before']}). Precision: {c.get('precision', 'float32')}"
        + (f" (float32 test accuracy {c['int8']['float_test_accuracy']:.4f}; sizes count int8 values, scales and zero points)." if c.get("int8") else "."),
        "",
        "Inputs are **raw** sequences as the task provides them: `x` float32 `[batch, time, channels]`, padded with zeros "
        "after each sequence's end, and `lengths` int64 `[batch]`. Normalisation is inside the model. Output: logits `[batch, classes]`; "
        "class names are in `model_card.json` (`class_names`).",
        "",
    ]
    for name, filename in files.items():
        lines += FORMATS[name].snippet(Path(filename).name, c.get("precision", "float32")) + [""]
    lines += ["`test_set.npz` holds the raw test inputs (`x`, `lengths`, `y`) the export was verified on."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def export(
    study: str,
    runs_dir: str = "runs",
    trial: Optional[int] = None,
    pick: Optional[str] = None,
    max_size_bytes: Optional[int] = None,
    max_latency_ms: Optional[float] = None,
    min_accuracy: Optional[float] = None,
    formats: Sequence[str] = _DEFAULT_FORMATS,
    out_dir: Optional[str] = None,
    force: bool = False,
    register: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    log_mlflow: bool = True,
    tolerance: float = 0.01,
) -> ExportResult:
    """Export one trial of a searched study (see module docstring).

    Raises:
        TrialError: unknown study/trial, unexportable trial, limits nobody meets.
        ExportError: output folder not empty without ``force``, missing extra, failed verification.
    """
    from autoprune.export_formats import ExportSubject, get_format, int8_unsupported, predict_batched, verify_file

    chosen = [get_format(f) for f in dict.fromkeys(formats)] or [get_format("torchscript")]
    for fmt in chosen:
        fmt.requires()
    from autoprune.search.study import open_study

    st, meta = open_study(study, runs_dir)
    row = select_trial(st, trial, pick, max_size_bytes, max_latency_ms, min_accuracy, tolerance)
    number = row["trial"]
    out = Path(out_dir) if out_dir else Path(runs_dir) / study / "exports" / f"trial-{number}"
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"output folder {out} exists and is not empty; choose another --out or pass --force to replace it")
    from autoprune.search.recording import find_trial_checkpoint

    ckpt = find_trial_checkpoint(study, number, row.get("checkpoint"), runs_dir, meta) or row.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise TrialError(f"trial {number} of study '{study}' has no saved weights at {ckpt}, nor under {runs_dir}/{study}/trials/{number}/ (nor in an MLflow server's run); was runs/{study}/trials/ deleted? (on a cluster: README 'Scaling out')")

    import numpy as np

    from autoprune.config import config_from_dict
    from autoprune.dense import build_datamodule
    from autoprune.pruning.compact import compact
    from autoprune.pruning.measure import latency_ms as measure_latency
    from autoprune.search.latency import LatencySettings
    from autoprune.search.trial import load_trial_model

    from autoprune.quantize import raw_split

    config = config_from_dict(meta["config"], source=f"runs/{study}/search.json")
    model, payload = load_trial_model(ckpt)
    model = compact(model)  # already compact; folds anything left and drops mask buffers
    result = json.loads((Path(ckpt).parent / "result.json").read_text())
    quantize = (payload.get("policy") or {}).get("quantize", "none")  # trials from before int8 have no key: none
    int8 = result.get("int8") or {}
    for fmt in list(chosen) if quantize == "int8" else ():
        why = int8_unsupported(fmt, model.spec.cell)
        if why and tuple(formats) == _DEFAULT_FORMATS and len(chosen) > 1:
            log.warning("trial %d is int8 and %s: not written", number, why)  # the default set ships what the precision allows
            chosen.remove(fmt)
        elif why:
            raise ExportError(f"trial {number} is int8 and {why}; choose another --format")
    dm = build_datamodule(config)
    raw_x, lengths, y, mean, std = raw_split(dm, "test")
    subject = ExportSubject(model, mean, std, "int8" if quantize == "int8" else "float32", getattr(dm, "class_names", None))
    wrapped = subject.wrapped
    float_ref = predict_batched(wrapped, raw_x, lengths)
    acc_float = int((float_ref.argmax(1) == y).sum()) / len(y)
    recorded_float = int8.get("float_test_accuracy", row["test_accuracy"]) if quantize == "int8" else row["test_accuracy"]
    if abs(acc_float - recorded_float) * len(y) > 0.5:  # compare counts of correct predictions
        raise ExportError(f"trial {number}: the rebuilt model's test accuracy {acc_float:.6f} differs from the recorded {recorded_float:.6f}; the saved weights do not match the trial")
    if quantize == "int8":
        expected = dict(int8.get("test_correct") or {})  # correct test predictions the trial recorded per runtime
    else:
        expected = {fmt.runtime: round(row["test_accuracy"] * len(y)) for fmt in chosen}
    acc = row["test_accuracy"]

    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    files: Dict[str, str] = {}
    checks: Dict[str, Dict[str, Any]] = {}
    try:
        references: Dict[str, Any] = {}
        for fmt in chosen:
            if fmt.runtime not in expected:
                raise ExportError(f"trial {number} has no recorded int8 test result in {fmt.runtime} to verify --format {fmt.name} against")
            path = staging / fmt.filename
            fmt.write(subject, path)
            if fmt.runtime not in references:
                references[fmt.runtime] = float_ref if quantize != "int8" else subject.predict(subject.reference(fmt.runtime), raw_x, lengths)
            checks[fmt.name] = verify_file(fmt, subject, path, raw_x, lengths, y, expected[fmt.runtime], references[fmt.runtime])
            files[fmt.name] = path.name
        np.savez_compressed(staging / "test_set.npz", x=raw_x.numpy(), lengths=lengths.numpy(), y=y.numpy())

        settings = LatencySettings.from_config(config.measure, dm.max_length).with_precision(quantize)
        lat_now = measure_latency(model, **settings)
        card = _model_card(study, number, config, model, result, payload, settings, lat_now, files, staging, dm, meta)
        card["verification"] = {name: {**check, "tolerance": FORMATS[name].tolerance[subject.precision], "runtime": FORMATS[name].runtime} for name, check in checks.items()}
        (staging / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        _write_readme(staging, card, files)
        if out.exists():
            shutil.rmtree(out)
        os.chmod(staging, 0o755)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    full = {k: str(out / v) for k, v in files.items()}
    model_uri = None
    if log_mlflow:
        model_uri = _log_to_mlflow(meta, tracking_uri, number, out, subject.torch_module(), raw_x, lengths, files, register)
        card["mlflow_model_uri"] = model_uri
        (out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    return ExportResult(number, full, True, acc, row["val_accuracy"], card["size_bytes"], lat_now, model_uri, str(out), card)


def _model_card(study, number, config, model, result, payload, settings, lat_now, files, staging, dm, meta) -> Dict[str, Any]:
    import torch

    import autoprune
    from autoprune.dense import dense_cache_key
    from autoprune.pruning.measure import macs_per_sequence, size_bytes

    dense = result.get("dense", {})
    quantize = (payload.get("policy") or {}).get("quantize", "none")
    if quantize == "int8":
        from autoprune.quantize import int8_size_bytes

        sz = int8_size_bytes(model, config.measure.runtime)
    else:
        sz = size_bytes(model)
    return {
        "study": study,
        "trial": number,
        "task": config.task.name,
        "n_classes": model.spec.n_classes,
        "class_names": getattr(dm, "class_names", None),
        "policy": payload.get("policy"),
        "sparsity": result.get("sparsity"),
        "hidden_sizes_before": dense.get("hidden_sizes"),
        "hidden_sizes_after": model.hidden_sizes,
        "architecture": model.spec.to_dict(),
        "val_accuracy": result.get("val_accuracy"),
        "test_accuracy": result.get("test_accuracy"),
        "dense": {k: dense.get(k) for k in ("val_accuracy", "test_accuracy", "size_bytes", "params", "latency_ms", "macs")},
        "size_bytes": sz,
        "size_ratio": sz / dense["size_bytes"] if dense.get("size_bytes") else None,
        "compression_ratio": dense["size_bytes"] / sz if dense.get("size_bytes") else None,  # against dense float32
        "precision": "int8" if quantize == "int8" else "float32",
        "int8": result.get("int8") or None,
        "nonzero_params": result.get("nonzero_params"),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs_per_sequence(model, settings["seq_len"]),
        "latency": {
            "search_ms": result.get("latency_ms"),
            "export_ms": lat_now,
            "batch_size": settings["batch_size"],
            "seq_len": settings["seq_len"],
            "threads": settings["threads"],
            "runtime": settings["runtime"],
        },
        "files": {fmt: {"path": name, "bytes": (staging / name).stat().st_size} for fmt, name in files.items()},
        "inputs": "raw x float32 [batch, time, channels] zero-padded + lengths int64 [batch]; normalisation is inside the model",
        "config_hash": dense_cache_key(config),
        "versions": {"torch": torch.__version__, "autoprune": autoprune.__version__, "python": platform.python_version()},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _log_to_mlflow(meta, tracking_uri, number, out, wrapped, raw_x, lengths, files, register) -> Optional[str]:
    """Log the exported model to the trial's MLflow run (pytorch flavour; onnx too when exported)."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from autoprune.tracking import TRIAL_TAG, _client

    uri = tracking_uri or meta.get("tracking_uri")
    exp_id = meta.get("mlflow_experiment_id")
    parent = meta.get("mlflow_parent_run_id")
    if not uri or not exp_id:
        return None
    client = _client(uri)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{number}' and tags.mlflow.parentRunId = '{parent}'", max_results=1)
    if not runs:
        log.warning("trial %d has no MLflow run; the model is exported but not logged", number)
        return None
    rid = runs[0].info.run_id
    c = raw_x.size(2)
    sig = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, c), "x"), TensorSpec(np.dtype(np.int64), (-1,), "lengths")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, wrapped.model.spec.n_classes), "logits")]),
    )
    example = {"x": raw_x[:2].numpy(), "lengths": lengths[:2].numpy()}
    # the fluent API needs a global tracking URI (MLflow also writes it to MLFLOW_TRACKING_URI): restore both after
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    model_uri = None
    import warnings

    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # MLflow warns about pickle and absent GPU providers on every CPU-only log
    try:
        with warnings.catch_warnings(), mlflow.start_run(run_id=rid):
            warnings.simplefilter("ignore")
            info = mlflow.pytorch.log_model(
                torch.jit.script(wrapped),
                name="model",
                signature=sig,  # the pytorch flavour takes no dict input example: it goes with the onnx flavour
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                registered_model_name=register,
                serialization_format="pickle",  # the pt2 format does not take TorchScript modules
            )
            model_uri = info.model_uri
            if "onnx" in files:
                import onnx

                mlflow.onnx.log_model(
                    onnx.load(str(out / files["onnx"])), name="model_onnx", signature=sig, input_example=example, pip_requirements=["onnxruntime"],
                    onnx_execution_providers=["CPUExecutionProvider"],
                )
            mlflow.log_artifact(str(out / "model_card.json"))
            mlflow.log_artifact(str(out / "README.md"))
    finally:
        quiet.setLevel(level)
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
    return model_uri

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
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from autoprune.config import config_from_dict
from autoprune.errors import ExportError, TrialError
from autoprune.export.card import model_card, write_readme
from autoprune.export.formats import FORMATS, ExportFormat, ExportSubject, get_format, int8_unsupported, predict_batched, verify_file
from autoprune.layout import study_paths
from autoprune.models.rnn import flat_labels
from autoprune.pruning.compact import compact
from autoprune.runtime.kernels import precision_name
from autoprune.runtime.latency import LatencySettings, latency_ms
from autoprune.runtime.quantize import raw_split
from autoprune.search.pareto import select_trial
from autoprune.search.recording import find_trial_checkpoint
from autoprune.search.study import open_study
from autoprune.tasks import build_datamodule
from autoprune.tracking.tags import MLFLOW_PARENT_TAG, TRIAL_TAG
from autoprune.trial.validation import accuracy_noise, noise_text, scored_samples
from autoprune.search.faults import first_line
from autoprune.tracking.tracker import _client, check_tracking_uri, default_tracking_uri, recorded_tracking_uri, relocate_embedded_store, study_run_ids
from autoprune.trial.result import load_trial_model
from autoprune.services.urls import shown

__all__ = ["export", "ExportResult"]

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
    #: each file's own test accuracy, as verified in its runtime (an int8 model scores differently in torch and ONNX Runtime);
    #: ``test_accuracy`` is the trial's, as the search measured it in the study's runtime
    test_accuracy_per_file: Dict[str, float] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {
            "trial": self.trial,
            "files": self.files,
            "verified": self.verified,
            "test_accuracy": self.test_accuracy,
            "test_accuracy_per_file": self.test_accuracy_per_file,
            "val_accuracy": self.val_accuracy,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "mlflow_model_uri": self.mlflow_model_uri,
            "out_dir": self.out_dir,
            "model_card": str(Path(self.out_dir) / "model_card.json"),
        }


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
    storage: Optional[str] = None,
) -> ExportResult:
    """Export one trial of a searched study (see module docstring).

    ``storage`` / ``tracking_uri``: where the study and its MLflow runs live, for a machine without the runs
    folder the search wrote (the trial's weights then come from its MLflow run).

    Raises:
        TrialError: unknown study/trial, unexportable trial, limits nobody meets.
        ExportError: output folder not empty without ``force``, missing extra, failed verification.
    """
    chosen = [get_format(f) for f in dict.fromkeys(formats)] or [get_format("torchscript")]
    for fmt in chosen:
        fmt.requires()
    st, meta = open_study(study, runs_dir, storage)
    meta = {**meta, "tracking_uri": tracking_uri or recorded_tracking_uri(meta, runs_dir)}
    if meta["tracking_uri"]:
        check_tracking_uri(meta["tracking_uri"])  # before any file is written: MLflow's own client retries for minutes
        if not meta.get("mlflow_experiment_id"):  # a teammate's machine: the study's runs found by its name
            meta["mlflow_experiment_id"], meta["mlflow_parent_run_id"] = study_run_ids(meta["tracking_uri"], study)
    if not meta.get("config"):
        raise TrialError(f"study '{study}' has no config recorded on it (searched by an older autoprune): export it where its runs folder is")
    row = select_trial(st, trial, pick, max_size_bytes, max_latency_ms, min_accuracy, tolerance)
    number = row["trial"]
    out = Path(out_dir) if out_dir else study_paths(runs_dir, study).export(number)
    _check_out(out, force)
    ckpt = _trial_checkpoint(study, number, row, runs_dir, meta)
    config = config_from_dict(meta["config"], source=f"runs/{study}/search.json")
    model, payload = load_trial_model(ckpt)
    model = compact(model)  # already compact; folds anything left and drops mask buffers
    result = json.loads((Path(ckpt).parent / "result.json").read_text())
    quantize = (payload.get("policy") or {}).get("quantize", "none")  # trials from before int8 have no key: none
    chosen = _formats_for_precision(chosen, formats, quantize, model.spec.cell, number)
    dm = build_datamodule(config)
    raw_x, lengths, y, mean, std = raw_split(dm, "test")
    subject = ExportSubject(model, mean, std, precision_name(quantize), getattr(dm, "class_names", None))
    float_ref = predict_batched(subject.wrapped, raw_x, lengths)
    labels = flat_labels(y, lengths)  # what is scored: a sequence's label, or each valid frame's
    expected = _expected_correct(number, row, result, chosen, float_ref, labels, quantize)

    def write(folder: Path) -> Tuple[Dict[str, str], Dict[str, Any], float]:
        files = _write_verified(folder, chosen, subject, float_ref, raw_x, lengths, y, labels, expected, number)
        settings = LatencySettings.from_config(config.measure, dm.max_length).with_precision(quantize)
        lat_now = latency_ms(model, **settings)
        card = model_card(study, number, config, model, result, payload, settings, lat_now, files["names"], folder, getattr(dm, "class_names", None))
        card["verification"] = {name: {**check, "tolerance": FORMATS[name].tolerance[subject.precision], "runtime": FORMATS[name].runtime} for name, check in files["checks"].items()}
        card["test_accuracy_per_file"] = {name: check["test_accuracy"] for name, check in files["checks"].items()}
        card["validation"] = validation_noise(dm, row["val_accuracy"])
        (folder / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        write_readme(folder, card, files["names"])
        return files["names"], card, lat_now

    names, card, lat_now = _staged(out, write)
    model_uri = _log_verified(meta, runs_dir, number, out, subject, raw_x, lengths, names, register, card) if log_mlflow else None
    full = {k: str(out / v) for k, v in names.items()}
    return ExportResult(number, full, True, row["test_accuracy"], row["val_accuracy"], card["size_bytes"], lat_now, model_uri, str(out), card,
                        card["test_accuracy_per_file"])


def validation_noise(dm: Any, accuracy: float) -> Dict[str, Any]:
    """How far the validation accuracy the trial was chosen by can be trusted: the samples it is measured on
    (sequences, or a per-frame task's frames) and its binomial standard error (autoprune.trial.validation)."""
    n = scored_samples(dm)
    return {"samples": n, "standard_error": accuracy_noise(n, accuracy)["standard_error"], "note": noise_text(accuracy, n)}


#: what an export folder holds besides the formats' files (see :func:`_write_verified` and ``export``)
_EXPORT_FILES = ("model_card.json", "README.md", "test_set.npz")


def _check_out(out: Path, force: bool) -> None:
    """Refuse an output folder export must not replace: not a folder, not empty without ``force``, or, with
    ``force``, anything but a previous export (its ``model_card.json`` and the files an export writes):
    --force replaces what autoprune wrote there, never a folder of the user's (or a whole runs folder).

    Raises:
        ExportError: one line naming the folder and, for --force, what autoprune did not write there.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ExportError(f"--out {out}: exists and is not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise ExportError(f"output folder {out} exists and is not empty; choose another --out or pass --force to replace it")
    ours = set(_EXPORT_FILES) | {fmt.filename for fmt in FORMATS.values()}
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if p.name not in ours or not p.is_file() or p.is_symlink())
    if not foreign and not _is_export_card(out / "model_card.json"):
        foreign = ["no model_card.json of an autoprune export"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(
            f"--out {out} --force: the folder holds what autoprune did not write ({shown}); --force replaces only a previous export: choose another --out"
        )


def _is_export_card(path: Path) -> bool:
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and {"study", "trial", "files"} <= set(card)


def _trial_checkpoint(study: str, number: int, row: Dict[str, Any], runs_dir: str, meta: Dict[str, Any]) -> str:
    """The trial's saved weights (see :func:`~autoprune.search.recording.find_trial_checkpoint`).

    Raises:
        TrialError: none found (says where it looked).
    """
    ckpt = find_trial_checkpoint(study, number, row.get("checkpoint"), runs_dir, meta) or row.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise TrialError(f"trial {number} of study '{study}' has no saved weights at {ckpt}, nor under {runs_dir}/{study}/trials/{number}/ (nor in an MLflow server's run); was runs/{study}/trials/ deleted? (on a cluster: README 'Scaling out')")
    return ckpt


def _formats_for_precision(chosen: List[ExportFormat], asked: Sequence[str], quantize: str, cell: str, number: int) -> List[ExportFormat]:
    """The formats to write: an int8 trial drops, from the default set, a format whose runtime has no int8 kernel for the cell.

    Raises:
        ExportError: such a format was asked for explicitly.
    """
    if quantize != "int8":
        return chosen
    kept = list(chosen)
    for fmt in chosen:
        why = int8_unsupported(fmt, cell)
        if why and tuple(asked) == _DEFAULT_FORMATS and len(kept) > 1:
            log.warning("trial %d is int8 and %s: not written", number, why)  # the default set ships what the precision allows
            kept.remove(fmt)
        elif why:
            raise ExportError(f"trial {number} is int8 and {why}; choose another --format")
    return kept


def _expected_correct(number: int, row: Dict[str, Any], result: Dict[str, Any], chosen: List[ExportFormat], float_ref: Any, y: Any, quantize: str) -> Dict[str, int]:
    """Correct test predictions each runtime's file must reproduce, after checking the rebuilt float32 model against the record.

    Raises:
        ExportError: the rebuilt model's test accuracy is not the recorded one (the weights do not match the trial).
    """
    int8 = result.get("int8") or {}
    acc_float = int((float_ref.argmax(1) == y).sum()) / len(y)
    recorded_float = int8.get("float_test_accuracy", row["test_accuracy"]) if quantize == "int8" else row["test_accuracy"]
    if abs(acc_float - recorded_float) * len(y) > 0.5:  # compare counts of correct predictions
        raise ExportError(f"trial {number}: the rebuilt model's test accuracy {acc_float:.6f} differs from the recorded {recorded_float:.6f}; the saved weights do not match the trial")
    if quantize == "int8":
        return dict(int8.get("test_correct") or {})  # correct test predictions the trial recorded per runtime
    return {fmt.runtime: round(row["test_accuracy"] * len(y)) for fmt in chosen}


def _write_verified(folder: Path, chosen: List[ExportFormat], subject: ExportSubject, float_ref: Any, raw_x: Any, lengths: Any, y: Any,
                    labels: Any, expected: Dict[str, int], number: int) -> Dict[str, Any]:
    """Write every format into ``folder``, load each back and verify it against the scored ``labels``; the raw test set
    (``y`` as the task gives it: per-frame labels padded with -100) goes beside them."""
    names: Dict[str, str] = {}
    checks: Dict[str, Dict[str, Any]] = {}
    references: Dict[str, Any] = {}
    for fmt in chosen:
        if fmt.runtime not in expected:
            raise ExportError(f"trial {number} has no recorded int8 test result in {fmt.runtime} to verify --format {fmt.name} against")
        path = folder / fmt.filename
        fmt.write(subject, path)
        if fmt.runtime not in references:
            references[fmt.runtime] = float_ref if subject.precision != "int8" else subject.predict(subject.reference(fmt.runtime), raw_x, lengths)
        checks[fmt.name] = verify_file(fmt, subject, path, raw_x, lengths, labels, expected[fmt.runtime], references[fmt.runtime], float_ref)
        names[fmt.name] = path.name
    np.savez_compressed(folder / "test_set.npz", x=raw_x.numpy(), lengths=lengths.numpy(), y=y.numpy())
    return {"names": names, "checks": checks}


def _staged(out: Path, write: Any) -> Any:
    """Run ``write(folder)`` in a staging folder beside ``out``, then put it in place of ``out`` at once;
    on any failure the staging folder goes and ``out`` is left as it was."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    previous = None
    try:
        value = write(staging)
        os.chmod(staging, 0o755)
        if out.exists():  # a previous export (_check_out): moved aside until the new one is in place
            previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, previous / out.name)
        os.replace(staging, out)
    except BaseException:
        if previous is not None and not out.exists():
            os.replace(previous / out.name, out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    return value


def _log_verified(meta, runs_dir, number, out, subject, raw_x, lengths, names, register, card) -> Optional[str]:
    """Log a verified export to MLflow; a failure there (a store that cannot be written, a server gone) is a
    warning: the files are in place and verified, and the export stands."""
    try:
        if meta["tracking_uri"] == default_tracking_uri(runs_dir):
            relocate_embedded_store(runs_dir)  # a copied runs folder: its own store, never the original's
        model_uri = _log_to_mlflow(meta, number, out, subject.torch_module(), raw_x, lengths, names, register)
    except Exception as err:  # MlflowException, OSError, sqlite/SQLAlchemy errors: all mean "not logged"
        log.warning("trial %d is exported and verified in %s, but logging it to MLflow (%s) failed: %s", number, out,
                    shown(meta["tracking_uri"]), first_line(shown(str(err)), 240))
        return None
    card["mlflow_model_uri"] = model_uri
    (out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    return model_uri


def _log_to_mlflow(meta, number, out, wrapped, raw_x, lengths, files, register) -> Optional[str]:
    """Log the exported model to the trial's MLflow run (pytorch flavour; onnx too when exported)."""
    uri = meta.get("tracking_uri")
    exp_id = meta.get("mlflow_experiment_id")
    parent = meta.get("mlflow_parent_run_id")
    if not uri or not exp_id:
        return None
    client = _client(uri)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{number}' and tags.{MLFLOW_PARENT_TAG} = '{parent}'", max_results=1)
    if not runs:
        log.warning("trial %d has no MLflow run; the model is exported but not logged", number)
        return None
    rid = runs[0].info.run_id
    spec = wrapped.model.spec
    x_spec = TensorSpec(np.dtype(np.int64), (-1, -1), "x") if spec.tokens else TensorSpec(np.dtype(np.float32), (-1, -1, raw_x.size(2)), "x")
    sig = ModelSignature(
        inputs=Schema([x_spec, TensorSpec(np.dtype(np.int64), (-1,), "lengths")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, spec.n_classes) if spec.per_frame else (-1, spec.n_classes), "logits")]),
    )
    example = {"x": raw_x[:2].numpy(), "lengths": lengths[:2].numpy()}
    # the fluent API needs a global tracking URI (MLflow also writes it to MLFLOW_TRACKING_URI): restore both after
    previous_uri, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    model_uri = None
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
                import onnx  # optional: the onnx extra

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

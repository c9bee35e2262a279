"""The dense reference's cache: its content key, the fingerprints of local files, and the
atomic write and load of ``runs/<study>/dense/<key>/`` (``checkpoint.pt`` + ``metrics.json``).

Everything that determines the reference goes into the key: the study's task, model and
training settings and seed (or, for a user's model, its files), the versions of torch,
Lightning and the checkpoint format, and for local data (``.ts`` files, a user's module) a
fingerprint of the files. A second run with the same key loads the stored checkpoint and
metrics without importing Lightning or loading the data again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional


from autoprune.config import StudyConfig
from autoprune.models.arch import ArchSpec
from autoprune.models.checkpoints import load_checkpoint, model_from, save_checkpoint
from autoprune.models.rnn import RNNClassifier, evaluate
from autoprune.yamlio import stable_hash

__all__ = [
    "DENSE_FORMAT",
    "DenseResult",
    "versions",
    "file_digest",
    "source_fingerprint",
    "dense_cache_key",
    "reference_metrics",
    "write_reference",
    "load_cached",
    "load_dense_model",
]

#: bump when the checkpoint layout or the training procedure changes meaning
DENSE_FORMAT = 1


@dataclass
class DenseResult:
    """The dense reference model of a study."""

    checkpoint: Path
    arch: ArchSpec
    metrics: dict[str, Any]
    cached: bool
    key: str
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "checkpoint": str(self.checkpoint),
            "cached": self.cached,
            "key": self.key,
            "hidden_sizes": self.arch.hidden_sizes,
        }


def versions() -> dict[str, str]:
    """The checkpoint format and the torch / Lightning versions a reference was made with (part of every key)."""
    out = {"dense_format": str(DENSE_FORMAT)}
    for pkg in ("torch", "lightning"):
        try:
            out[pkg] = version(pkg).split("+")[0]
        except PackageNotFoundError:  # pragma: no cover - lightning is a dependency
            out[pkg] = "missing"
    return out


def file_digest(path: str | os.PathLike) -> str:
    """A short SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def source_fingerprint(task_name: str) -> Optional[str]:
    """Content of local data behind a task spec (``uea:<path>``, ``module:function``), if any."""
    if task_name.startswith("uea:"):
        target = Path(task_name[4:])
        if target.exists():
            files = sorted(target.glob("*.ts")) if target.is_dir() else sorted(target.parent.glob(target.name.rsplit("_", 1)[0] + "_*.ts"))
            return ",".join(f"{p.name}={file_digest(p)}" for p in files) or None
        return None
    if ":" in task_name and not task_name.split(":", 1)[0] in ("mnist1d", "synthetic", "uea"):
        module = task_name.split(":", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            return file_digest(spec.origin)
    return None


def dense_cache_key(config: StudyConfig) -> str:
    """The content hash naming the dense checkpoint of a study whose model autoprune trains."""
    content = {**config.dense_key(), "versions": versions(), "source": source_fingerprint(config.task.name)}
    return stable_hash(content, 16)


def reference_metrics(model: Any, dm: Any, test: Optional[tuple] = None, **extra: Any) -> dict[str, Any]:
    """The dense reference's metrics (validation and test accuracy/loss, sizes of the data) plus ``extra``.

    ``test`` is the test set as ``(x, lengths, y)`` when the caller already holds it.
    """
    val = evaluate(model, *dm.tensors("val"))
    tst = evaluate(model, *(test if test is not None else dm.tensors("test")))
    metrics = {
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "test_accuracy": tst["accuracy"],
        "test_loss": tst["loss"],
        "params": sum(p.numel() for p in model.parameters()),
        "n_train": dm.n_train,
        "n_val": dm.n_val,
        "n_test": dm.n_test,
        "n_channels": dm.n_channels,
        "n_classes": dm.n_classes,
        "max_length": dm.max_length,
    }
    metrics.update(extra)
    return metrics


def write_reference(out_dir: Path, arch: ArchSpec, model: Any, metrics: dict, history: list, config: StudyConfig) -> Path:
    """Write the dense checkpoint and its metrics.json under ``out_dir``; the checkpoint appears last,
    atomically: a killed run leaves no half cache. Returns the checkpoint's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.pt"
    meta = {"arch": arch.to_dict(), "metrics": metrics, "history": history, "config": config.to_dict(), "versions": versions()}
    (out_dir / "metrics.json").write_text(json.dumps(meta, indent=2))
    return save_checkpoint({"format": DENSE_FORMAT, "arch": arch.to_dict(), "state_dict": model.state_dict(), "metrics": metrics}, ckpt)


def load_cached(out_dir: Path, key: str) -> Optional[DenseResult]:
    """The reference stored under ``out_dir`` (without loading its weights), or None when there is none."""
    ckpt = out_dir / "checkpoint.pt"
    if not ckpt.is_file():
        return None
    meta = json.loads((out_dir / "metrics.json").read_text())
    return DenseResult(ckpt, ArchSpec.from_dict(meta["arch"]), meta["metrics"], True, key, meta.get("history", []))


def load_dense_model(checkpoint: str | os.PathLike) -> tuple[RNNClassifier, dict]:
    """Rebuild the dense :class:`RNNClassifier` from a stored checkpoint; returns (model, stored payload)."""
    payload = load_checkpoint(checkpoint)
    return model_from(payload, checkpoint), payload

"""Dense training, cached by content hash under ``runs/<study>/dense/<key>/``.

Everything that determines the dense model goes into the key: task, model and
training settings, seed, the versions of torch/lightning/autoprune's checkpoint
format, and for local data (``.ts`` files, a user's module) a fingerprint of the
files. A second run with the same config loads the stored checkpoint and metrics
without importing Lightning or loading the data again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from autoprune.config import StudyConfig, stable_hash
from autoprune.models.arch import ArchSpec

__all__ = ["DenseResult", "ensure_dense", "dense_arch", "load_dense_model", "dense_cache_key", "study_dir", "DENSE_FORMAT"]

log = logging.getLogger(__name__)

#: bump when the checkpoint layout or the training procedure changes meaning
DENSE_FORMAT = 1


def study_dir(runs_dir: str | os.PathLike, study: str) -> Path:
    return Path(runs_dir) / study


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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"dense_format": str(DENSE_FORMAT)}
    for pkg in ("torch", "lightning"):
        try:
            out[pkg] = version(pkg).split("+")[0]
        except PackageNotFoundError:  # pragma: no cover - lightning is a dependency
            out[pkg] = "missing"
    return out


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _source_fingerprint(task_name: str) -> Optional[str]:
    """Content of local data behind a task spec (``uea:<path>``, ``module:function``), if any."""
    if task_name.startswith("uea:"):
        target = Path(task_name[4:])
        if target.exists():
            files = sorted(target.glob("*.ts")) if target.is_dir() else sorted(target.parent.glob(target.name.rsplit("_", 1)[0] + "_*.ts"))
            return ",".join(f"{p.name}={_file_digest(p)}" for p in files) or None
        return None
    if ":" in task_name and not task_name.split(":", 1)[0] in ("mnist1d", "synthetic", "uea"):
        module = task_name.split(":", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            return _file_digest(Path(spec.origin))
    return None


def reference_metrics(model: Any, dm: Any, test: Optional[tuple] = None, **extra: Any) -> dict[str, Any]:
    """The dense reference's metrics (validation and test accuracy/loss, sizes of the data) plus ``extra``.

    ``test`` is the test set as ``(x, lengths, y)`` when the caller already holds it.
    """
    from autoprune.models.module import evaluate

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


def write_dense(out_dir: Path, ckpt: Path, arch: ArchSpec, model: Any, metrics: dict, history: list, config: StudyConfig) -> None:
    """Write the dense checkpoint and its metrics.json; the checkpoint appears last, atomically: a killed run leaves no half cache."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "checkpoint.pt.tmp"
    torch.save({"format": DENSE_FORMAT, "arch": arch.to_dict(), "state_dict": model.state_dict(), "metrics": metrics}, tmp)
    meta = {"arch": arch.to_dict(), "metrics": metrics, "history": history, "config": config.to_dict(), "versions": _versions()}
    (out_dir / "metrics.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, ckpt)


def dense_cache_key(config: StudyConfig) -> str:
    """The content hash naming a study's dense checkpoint."""
    content = {**config.dense_key(), "versions": _versions(), "source": _source_fingerprint(config.task.name)}
    return stable_hash(content, 16)


def load_dense_model(checkpoint: str | os.PathLike):
    """Rebuild the dense :class:`RNNClassifier` from a stored checkpoint; returns (model, stored payload)."""
    from autoprune.models.rnn import RNNClassifier

    from autoprune.checkpoints import load_checkpoint

    payload = load_checkpoint(checkpoint)
    model = RNNClassifier(ArchSpec.from_dict(payload["arch"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def build_datamodule(config: StudyConfig):
    """The study's data module, set up (lazy import: it pulls in Lightning)."""
    from autoprune.tasks import build_task

    dm = build_task(
        config.task.name,
        seed=config.seed,
        batch_size=config.task.batch_size,
        val_fraction=config.task.val_fraction,
        options=dict(config.task.options),
    )
    if config.model.user_model and hasattr(dm, "normalize"):
        dm.normalize = False  # the user's model was trained on the inputs as their data function gives them
    dm.setup("fit")
    return dm


def dense_arch(config: StudyConfig, dm: Any, runs_dir: str | os.PathLike = "runs") -> ArchSpec:
    """The dense model's architecture for the study's data, before any training.

    For a user's trained model this converts and checks it (channels, classes, logits on
    the test set) and caches it as the dense reference: mismatches fail here, before anything runs.
    """
    if config.model.user_model:
        from autoprune.user_model import ensure_user_dense

        return ensure_user_dense(config, runs_dir, dm=dm).arch
    return ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes)


def ensure_dense(
    config: StudyConfig,
    runs_dir: str | os.PathLike = "runs",
    progress: bool = False,
    force: bool = False,
) -> DenseResult:
    """Return the study's dense model, training it only when no cached checkpoint matches.

    Args:
        config: the validated study config.
        runs_dir: output root (``runs/`` by default).
        progress: show Lightning's progress bar while training.
        force: retrain even when a cached checkpoint exists.

    Raises:
        TaskError: the data cannot be loaded.
        PruningError: training diverged (NaN loss).
    """
    if config.model.user_model:  # the user's trained model is the dense reference: converted, checked, never trained
        from autoprune.user_model import ensure_user_dense

        return ensure_user_dense(config, runs_dir, force=force)
    key = dense_cache_key(config)
    out_dir = study_dir(runs_dir, config.study) / "dense" / key
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.is_file() and not force:
        meta = json.loads((out_dir / "metrics.json").read_text())
        log.debug("reusing dense checkpoint %s", ckpt)
        return DenseResult(ckpt, ArchSpec.from_dict(meta["arch"]), meta["metrics"], True, key, meta.get("history", []))

    import lightning.pytorch as pl
    import torch

    from autoprune.models.module import RNNModule
    from autoprune.models.rnn import RNNClassifier
    from autoprune.training import BestValidation, make_trainer

    torch.set_num_threads(config.train.threads)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = build_datamodule(config)
    arch = ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes)
    from autoprune.preflight import check_model_memory

    check_model_memory(arch, config.task.batch_size, dm.max_length, config.source or "config")  # before building it
    model = RNNClassifier(arch)
    module = RNNModule(
        model,
        lr=config.train.lr,
        weight_decay=config.train.weight_decay,
        optimizer=config.train.optimizer,
        lr_schedule=config.train.lr_schedule,
        max_seq_len=config.train.max_seq_len,
        seed=config.seed,
    )
    best = BestValidation(from_epoch=0 if config.train.select == "best_val" else config.train.epochs - 1)
    clip = config.train.grad_clip
    trainer = make_trainer(
        config.train.epochs,
        callbacks=[best],
        grad_clip_value=clip.value,
        grad_clip_algorithm=clip.algorithm,
        progress=progress,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_time = time.perf_counter() - start
    if any(not torch.isfinite(p).all() for p in model.parameters()):
        from autoprune.errors import PruningError

        raise PruningError(f"dense training of study '{config.study}' diverged (non-finite weights); lower train.lr or set train.grad_clip")
    metrics = reference_metrics(model, dm, best_epoch=best.best_epoch, epochs=config.train.epochs, train_time_s=round(train_time, 3))
    write_dense(out_dir, ckpt, arch, model, metrics, module.history, config)
    return DenseResult(ckpt, arch, metrics, False, key, module.history)

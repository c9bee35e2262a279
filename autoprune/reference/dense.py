"""The dense reference of a study: trained here (once, cached by content hash under
``runs/<study>/dense/<key>/``, see :mod:`autoprune.reference.cache`) or the user's own trained
module, converted and checked (:mod:`autoprune.reference.user_model`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import lightning.pytorch as pl
import torch

from autoprune.config import StudyConfig
from autoprune.errors import ConfigError
from autoprune.layout import study_paths
from autoprune.models.arch import ArchSpec, check_arch, task_mismatch
from autoprune.models.fitting import BestValidation, Recipe, check_finite, fit
from autoprune.models.rnn import RNNClassifier
from autoprune.reference.cache import DenseResult, dense_cache_key, load_cached, reference_metrics, write_reference
from autoprune.reference.user_model import ensure_user_dense, user_cache_key
from autoprune.runtime.preflight import check_model_memory
from autoprune.tasks import build_datamodule

__all__ = ["ensure_dense", "dense_arch", "arch_for_task", "reference_key"]

log = logging.getLogger(__name__)


def dense_arch(config: StudyConfig, dm: Any, runs_dir: str | os.PathLike = "runs") -> ArchSpec:
    """The dense model's architecture for the study's data, before any training.

    For a user's trained model this converts and checks it (channels, classes, logits on
    the test set) and caches it as the dense reference: mismatches fail here, before anything runs.
    """
    if config.model.user_model:
        return ensure_user_dense(config, runs_dir, dm=dm).arch
    return arch_for_task(config, dm)


def arch_for_task(config: StudyConfig, dm: Any) -> ArchSpec:
    """The architecture of a model autoprune trains, for the task's data (channels or vocabulary, classes, padding id).

    Raises:
        ConfigError: one line naming the model section, when the model cannot take the task's data
            (token ids without an embedding, per-frame labels without ``pooling: none``, ...).
    """
    arch = ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes, getattr(dm, "padding_id", None))
    problem = check_arch(arch) or task_mismatch(arch, config.task.name, bool(getattr(dm, "tokens", False)), bool(getattr(dm, "per_frame", False)))
    if problem:
        raise ConfigError(f"{config.source or 'config'}: model: {problem}")
    return arch


def reference_key(config: StudyConfig) -> str:
    """The content key naming the study's dense reference (``runs/<study>/dense/<key>/``), known before
    anything is trained or converted: a study searched on one key cannot take trials of another."""
    return user_cache_key(config) if config.model.user_model else dense_cache_key(config)


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
        return ensure_user_dense(config, runs_dir, force=force)
    key = dense_cache_key(config)
    out_dir = study_paths(runs_dir, config.study).dense / key
    cached = None if force else load_cached(out_dir, key)
    if cached is not None:
        log.debug("reusing dense checkpoint %s", cached.checkpoint)
        return cached

    torch.set_num_threads(config.train.threads)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dm = build_datamodule(config)
    arch = arch_for_task(config, dm)
    check_model_memory(arch, config.task.batch_size, dm.max_length, config.source or "config")  # before building it
    model = RNNClassifier(arch)
    recipe = Recipe.of_training(config.train)
    best = BestValidation(from_epoch=0 if config.train.select == "best_val" else config.train.epochs - 1)
    start = time.perf_counter()
    module = fit(model, dm, recipe, config.seed, [best], progress=progress)
    train_time = time.perf_counter() - start
    check_finite(model, f"dense training of study '{config.study}' diverged (non-finite weights); lower train.lr or set train.grad_clip")
    metrics = reference_metrics(model, dm, best_epoch=best.best_epoch, epochs=config.train.epochs, train_time_s=round(train_time, 3))
    ckpt = write_reference(out_dir, arch, model, metrics, module.history, config)
    return DenseResult(ckpt, arch, metrics, False, key, module.history)

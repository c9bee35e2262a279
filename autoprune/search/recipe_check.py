"""Checks at the start of a search: is the fine-tune recipe itself harmless, is validation coarse?

A search prunes *while* fine-tuning with the sampled ``search.finetune`` settings. If that
fine-tune damages the dense model even with nothing pruned (a learning rate too high for
a tiny data set, too few steps to settle, ...), every trial is hopeless and the search
only burns time. :func:`check_recipe` runs the fine-tune with nothing pruned first, at the
harshest corner of the space (highest learning rate, most epochs, loosest clipping); when
that loses more than ``search.recipe_check.max_drop`` (at least one validation sequence)
it tries the gentlest learning rate. Only when both lose accuracy does the search stop,
with a :class:`~autoprune.errors.ConfigError` that gives the numbers. The outcome is cached
under ``runs/<study>/recipe_check.json`` so a resumed search does not repeat it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

from autoprune.config import StudyConfig
from autoprune.errors import ConfigError, PruningError
from autoprune.pruning.policy import policy_from_dict
from autoprune.tasks import build_datamodule
from autoprune.tasks.budget import describe_epoch
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial
from autoprune.trial.validation import small_validation_message
from autoprune.yamlio import stable_hash

__all__ = ["recipe_policy", "check_recipe", "check_search_start"]

log = logging.getLogger(__name__)


def recipe_policy(config: StudyConfig, lr: float, epochs: int):
    """The search's fine-tune with nothing pruned: sparsity 0, the given lr and epochs, the loosest clipping."""
    s = config.search
    return policy_from_dict(
        {
            "method": "magnitude",
            "granularity": "unstructured",
            "sparsity": 0.0,
            "schedule": {"kind": "one_shot", "start_epoch": 0},
            "grad_clip": {"value": s.grad_clip.range[1], "algorithm": s.grad_clip.algorithms[0]},
            "finetune": {"epochs": epochs, "lr": lr, "min_epoch_steps": s.finetune.min_epoch_steps},
        },
        source="recipe check",
    )


def _run(config: StudyConfig, runs_dir: str, lr: float, epochs: int) -> Dict[str, Any]:
    try:
        result = run_trial(config, recipe_policy(config, lr, epochs), TrialOptions(runs_dir=runs_dir, measure_latency=False))
    except PruningError as err:  # diverged: the recipe fails outright
        return {"lr": lr, "epochs": epochs, "val_accuracy": None, "error": str(err)}
    return {"lr": lr, "epochs": epochs, "val_accuracy": result.val_accuracy, "val_loss": result.val_loss}


def _kept(run: Dict[str, Any], dense_val: float, allowed: float) -> bool:
    return run["val_accuracy"] is not None and dense_val - run["val_accuracy"] <= allowed


def check_recipe(config: StudyConfig, runs_dir: str | os.PathLike, dense_metrics: Dict[str, Any], n_val: int) -> Optional[Dict[str, Any]]:
    """Fine-tune the dense model with nothing pruned; stop the search if that alone loses accuracy.

    Args:
        config: the study; ``search.finetune`` and ``search.recipe_check`` are used.
        runs_dir: output root (the dense checkpoint and the cached outcome live there).
        dense_metrics: the dense model's metrics (``val_accuracy``).
        n_val: validation sequences (the allowed drop is at least one of them).

    Returns:
        The check's record (runs, allowed drop, verdict), or None when disabled.

    Raises:
        ConfigError: even the gentlest fine-tune of the space loses more than the allowed drop.
    """
    rc = config.search.recipe_check
    if not rc.enabled:
        return None
    ft = config.search.finetune
    dense_val = float(dense_metrics["val_accuracy"])
    allowed = max(rc.max_drop, 1.0 / max(n_val, 1)) + 1e-9
    key = stable_hash({"dense": config.dense_key(), "finetune": ft.model_dump(), "grad_clip": config.search.grad_clip.model_dump(), "allowed": allowed})
    cache = Path(runs_dir) / config.study / "recipe_check.json"
    record: Optional[Dict[str, Any]] = None
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            record = stored if stored.get("key") == key else None
        except (OSError, ValueError):
            record = None
    if record is None:
        lr_lo, lr_hi = ft.lr
        runs = [_run(config, str(runs_dir), lr_hi, ft.epochs[1])]
        if not _kept(runs[0], dense_val, allowed) and lr_lo < lr_hi:
            runs.append(_run(config, str(runs_dir), lr_lo, ft.epochs[1]))
        passed = any(_kept(r, dense_val, allowed) for r in runs)
        record = {"key": key, "dense_val_accuracy": dense_val, "allowed_drop": allowed, "runs": runs, "passed": passed}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(record, indent=2))
    runs = record["runs"]
    shown = ", ".join(f"lr {r['lr']:g}: " + (f"{r['val_accuracy']:.3f}" if r["val_accuracy"] is not None else "diverged") for r in runs)
    steps = f" x at least {ft.min_epoch_steps} steps" if ft.min_epoch_steps else ""
    if not record["passed"]:
        raise ConfigError(
            f"search.finetune: the fine-tune damages the model even with nothing pruned: {ft.epochs[1]} epochs{steps} "
            f"bring validation accuracy from {dense_val:.3f} (dense) to {shown} (allowed drop {allowed:.3f}); "
            f"every trial would start from a damaged model. Lower search.finetune.lr (now {list(ft.lr)}) or "
            f"search.grad_clip.range, or retrain the dense model longer; "
            f"search.recipe_check.enabled: false skips this check"
        )
    if len(runs) > 1:
        log.warning(
            "recipe check: at the top of search.finetune.lr the fine-tune with nothing pruned loses accuracy (%s, dense %.3f); "
            "the search goes on, but consider narrowing search.finetune.lr", shown, dense_val,
        )
    else:
        log.info("recipe check: the fine-tune with nothing pruned keeps validation accuracy (%s, dense %.3f)", shown, dense_val)
    return record


def check_search_start(config: StudyConfig, runs_dir: str | os.PathLike, dense: Any) -> Optional[Dict[str, Any]]:
    """Everything a search checks after the dense model exists and before its first trial.

    Logs what a fine-tune epoch is (``autoprune.tasks.budget``), warns when the validation set is
    small (``search.validation``) and runs :func:`check_recipe`.
    """
    dm = build_datamodule(config)
    n_val = int(dm.n_val)
    log.info(describe_epoch(int(dm.n_train), config.task.batch_size, config.search.finetune.min_epoch_steps))
    message = small_validation_message(n_val, float(dense.metrics.get("val_accuracy", 0.9)))
    if message:
        log.warning(message)
    return check_recipe(config, runs_dir, dense.metrics, n_val)

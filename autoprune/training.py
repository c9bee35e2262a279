"""Shared Lightning plumbing: a lean Trainer and the best-epoch callback."""

from __future__ import annotations

import copy
import logging
import sys
import warnings
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import torch

__all__ = ["make_trainer", "BestValidation", "HopelessStop", "quiet_lightning"]


def quiet_lightning() -> None:
    """Silence Lightning's banners and hints (the CLI owns the console)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def make_trainer(
    max_epochs: int,
    callbacks: Sequence[pl.Callback] = (),
    grad_clip_value: Optional[float] = None,
    grad_clip_algorithm: str = "norm",
    progress: bool = False,
    enable_checkpointing: bool = False,
    **kwargs: Any,
) -> pl.Trainer:
    """A CPU Trainer without logger, checkpointing, summary or sanity check.

    Inside trials these cost more than the tiny RNN's step itself (pitfalls.md).
    """
    quiet_lightning()
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        gradient_clip_val=grad_clip_value,
        gradient_clip_algorithm=grad_clip_algorithm if grad_clip_value else None,
        logger=False,
        enable_checkpointing=enable_checkpointing,
        enable_model_summary=False,
        enable_progress_bar=progress and sys.stderr.isatty(),
        num_sanity_val_steps=0,
        **kwargs,
    )


class BestValidation(pl.Callback):
    """Keep the weights of the best validation epoch and restore them when fit ends.

    Best means highest ``val_accuracy``, ties broken by lower ``val_loss``. Epochs
    before ``from_epoch``, or while ``ready()`` is false (a pruning schedule that has
    not reached its target yet), are not eligible.
    """

    def __init__(self, from_epoch: int = 0, ready: Optional[Callable[[], bool]] = None) -> None:
        self.from_epoch = from_epoch
        self.ready = ready
        self.best: Optional[tuple[float, float]] = None
        self.best_epoch: Optional[int] = None
        self.best_state: Optional[dict] = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after the module's on_validation_epoch_end has recorded this epoch
        if trainer.sanity_checking or trainer.current_epoch < self.from_epoch:
            return
        if self.ready is not None and not self.ready():
            return
        acc = float(trainer.callback_metrics["val_accuracy"])
        loss = float(trainer.callback_metrics["val_loss"])
        score = (acc, -loss)
        if self.best is None or score > self.best:
            self.best = score
            self.best_epoch = trainer.current_epoch
            self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_state is not None:
            with torch.no_grad():
                pl_module.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"from_epoch": self.from_epoch, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.from_epoch = state["from_epoch"]
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]


class HopelessStop(pl.Callback):
    """Stop a fit whose validation accuracy after ``after_epochs`` epochs is below ``floor``.

    Raises:
        TrialStoppedEarly: the caller records the trial as stopped early.
    """

    def __init__(self, after_epochs: int, floor: float) -> None:
        self.after_epochs = after_epochs
        self.floor = floor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch + 1 != self.after_epochs:
            return
        acc = float(trainer.callback_metrics["val_accuracy"])
        # a trial at the floor meets it: "dense minus max drop" carries float error (0.8333 - 0.25 vs 7/12)
        if acc < self.floor - 1e-6:
            from autoprune.errors import TrialStoppedEarly

            raise TrialStoppedEarly(
                f"validation accuracy {acc:.4f} after {self.after_epochs} epochs is below the floor {self.floor:.4f} (dense minus max drop)"
            )

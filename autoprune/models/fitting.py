"""Fitting a model, the one way every fit here runs: a recipe (the dense training's, a policy's
fine-tune, a recovery's retraining), the LightningModule it builds, a lean Trainer, and the
best-epoch and hopeless-trial callbacks."""

from __future__ import annotations

import copy
import logging
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import lightning.pytorch as pl
import torch

from autoprune.errors import PruningError, TrialStoppedEarly
from autoprune.models.module import RNNModule

__all__ = ["Recipe", "make_module", "fit", "check_finite", "make_trainer", "BestValidation", "HopelessStop", "quiet_lightning"]


@dataclass(frozen=True)
class Recipe:
    """How a model is trained: optimizer, learning rate and its schedule, clipping, windows, epochs."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_schedule: str = "none"
    max_seq_len: Optional[int] = None
    grad_clip_value: Optional[float] = None
    grad_clip_algorithm: str = "norm"

    @classmethod
    def of_training(cls, train: Any, epochs: Optional[int] = None) -> "Recipe":
        """The dense recipe (a study's ``train:`` section), over ``epochs`` when given (its schedule compressed to them)."""
        return cls(
            epochs=int(epochs or train.epochs),
            lr=train.lr,
            weight_decay=train.weight_decay,
            optimizer=train.optimizer,
            lr_schedule=train.lr_schedule,
            max_seq_len=train.max_seq_len,
            grad_clip_value=train.grad_clip.value,
            grad_clip_algorithm=train.grad_clip.algorithm,
        )


def make_module(model: torch.nn.Module, recipe: Recipe, seed: int = 0, teacher: Optional[torch.nn.Module] = None, distillation: Any = None) -> RNNModule:
    """The LightningModule that trains ``model`` with ``recipe`` (and distils from ``teacher`` when ``distillation.weight > 0``)."""
    return RNNModule(
        model,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        optimizer=recipe.optimizer,
        lr_schedule=recipe.lr_schedule,
        max_seq_len=recipe.max_seq_len,
        seed=seed,
        teacher=teacher,
        distill_weight=distillation.weight if distillation is not None and teacher is not None else 0.0,
        distill_temperature=distillation.temperature if distillation is not None else 2.0,
    )


def fit(module: RNNModule, datamodule: Any, recipe: Recipe, callbacks: Sequence[pl.Callback] = (), progress: bool = False) -> RNNModule:
    """Train ``module`` on ``datamodule`` for ``recipe.epochs`` with a lean Trainer; returns the module."""
    trainer = make_trainer(recipe.epochs, callbacks, recipe.grad_clip_value, recipe.grad_clip_algorithm, progress=progress)
    trainer.fit(module, datamodule=datamodule)
    return module


def quiet_lightning() -> None:
    """Silence Lightning's banners and hints (the CLI owns the console)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def check_finite(model: torch.nn.Module, message: str) -> None:
    """Refuse a model whose training left non-finite weights.

    Raises:
        PruningError: ``message`` (what diverged and which setting to lower).
    """
    if any(not torch.isfinite(p).all() for p in model.parameters()):
        raise PruningError(message)


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
            raise TrialStoppedEarly(
                f"validation accuracy {acc:.4f} after {self.after_epochs} epochs is below the floor {self.floor:.4f} (dense minus max drop)"
            )

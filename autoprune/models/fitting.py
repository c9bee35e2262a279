"""Fitting a model, the one way every fit here runs: a recipe (the dense training's, a policy's
fine-tune, a recovery's retraining), the LightningModule that trains an :class:`RNNClassifier`
with it, a lean Trainer, and the best-epoch and hopeless-trial callbacks.

The LightningModule is kept lean on purpose: a tiny RNN step takes well under a millisecond,
so per-step logging and metric objects would dominate. Loss and accuracy are accumulated in
plain tensors and logged once per epoch.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from autoprune.errors import PruningError, TrialStoppedEarly
from autoprune.models.rnn import RNNClassifier, flat_outputs, scored

__all__ = ["Recipe", "RNNModule", "random_windows", "fit", "check_finite", "make_trainer", "BestValidation", "HopelessStop", "quiet_lightning"]


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
    accelerator: str = "cpu"  # Lightning's accelerator: cpu | gpu | auto (train.accelerator)
    devices: int = 1

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
            accelerator=train.accelerator,
            devices=train.devices,
        )


def fit(
    model: torch.nn.Module,
    datamodule: Any,
    recipe: Recipe,
    seed: int = 0,
    callbacks: Sequence[pl.Callback] = (),
    teacher: Optional[torch.nn.Module] = None,
    distillation: Any = None,
    progress: bool = False,
) -> "RNNModule":
    """Train ``model`` on ``datamodule`` with ``recipe`` (distilling from ``teacher`` when ``distillation.weight > 0``)
    with a lean Trainer; returns the LightningModule (its ``history`` holds one row per epoch).

    Raises:
        TrialStoppedEarly: a :class:`HopelessStop` callback stopped it (the exception carries the history so far).
    """
    module = RNNModule(
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
    trainer = make_trainer(
        recipe.epochs, callbacks, recipe.grad_clip_value, recipe.grad_clip_algorithm, progress=progress, accelerator=recipe.accelerator, devices=recipe.devices
    )
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
    accelerator: str = "cpu",
    devices: int = 1,
    **kwargs: Any,
) -> pl.Trainer:
    """A Trainer (on the CPU unless ``accelerator`` says otherwise) without logger, checkpointing, summary or sanity check.

    Inside trials these cost more than the tiny RNN's step itself (pitfalls.md).
    """
    quiet_lightning()
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
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
                f"validation accuracy {acc:.4f} after {self.after_epochs} epochs is below the floor {self.floor:.4f} (dense minus max drop)",
                history=list(getattr(pl_module, "history", [])),
            )


def random_windows(
    x: Tensor, lengths: Tensor, max_len: int, generator: Optional[torch.Generator] = None, y: Optional[Tensor] = None
) -> tuple[Tensor, ...]:
    """Crop every sequence longer than ``max_len`` to a random window of that length.

    This is the "sequence truncation" of the seed paper: shorter training windows make
    backpropagation through time cheaper and regularise. Shorter sequences are kept
    whole. Returns the cropped padded batch and the new lengths (and, when per-frame labels
    ``y [B, T]`` are given, the labels of the same windows). Token ids ``[B, T]`` are cropped
    the same way.
    """
    if x.size(1) <= max_len:
        return (x, lengths) if y is None else (x, lengths, y)
    slack = (lengths - max_len).clamp(min=0)
    # drawn on the CPU (the generator's device: the same windows wherever the model trains), then moved
    start = (torch.rand(lengths.shape, generator=generator).to(lengths.device) * (slack + 1).float()).floor().long()
    steps = torch.arange(max_len, device=x.device).unsqueeze(0)
    idx = (start.unsqueeze(1) + steps).clamp(max=x.size(1) - 1)
    new_lengths = lengths.clamp(max=max_len)
    valid = steps < new_lengths.unsqueeze(1)
    if x.dim() == 2:  # token ids: padded steps keep whatever id the window lands on (the lengths say where it ends)
        out = x.gather(1, idx)
    else:
        out = x.gather(1, idx.unsqueeze(2).expand(-1, -1, x.size(2)))
        out = out * valid.unsqueeze(2).to(out.dtype)
    if y is None:
        return out, new_lengths
    return out, new_lengths, y.gather(1, idx.clamp(max=y.size(1) - 1))


class RNNModule(pl.LightningModule):
    """Train an :class:`RNNClassifier` with cross-entropy, per sequence or per frame over the true lengths
    (:func:`~autoprune.models.rnn.scored`).

    Args:
        model: the classifier.
        lr: learning rate.
        weight_decay: optimiser weight decay.
        optimizer: ``adam`` | ``adamw`` | ``sgd``.
        lr_schedule: ``none`` | ``cosine`` (per epoch, to zero at ``max_epochs``).
        max_seq_len: optional random training windows of this many steps.
        seed: seeds the window generator.
        teacher: a frozen model to distil from (the dense model while pruning).
        distill_weight: weight of the distillation loss (0: plain cross-entropy).
        distill_temperature: softmax temperature of the soft targets.
    """

    def __init__(
        self,
        model: RNNClassifier,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        lr_schedule: str = "none",
        max_seq_len: Optional[int] = None,
        seed: int = 0,
        teacher: Optional[torch.nn.Module] = None,
        distill_weight: float = 0.0,
        distill_temperature: float = 2.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.lr_schedule = lr_schedule
        self.max_seq_len = max_seq_len
        self._window_gen = torch.Generator().manual_seed(seed)
        # kept out of the module tree: not trained, not in checkpoints, not in the optimizer
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None and distill_weight > 0 else []
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        #: extra loss terms (regularisers) added by callbacks: ``fn(model) -> scalar tensor``
        self.regularizers: List[Callable[[torch.nn.Module], Tensor]] = []
        #: one dict per finished validation epoch: epoch, val_loss, val_accuracy, train_loss
        self.history: List[dict] = []
        self._train_sum = torch.zeros(())
        self._train_n = 0
        self._val_loss = torch.zeros(())
        self._val_n = 0
        # torchmetrics for the reported accuracy; it accumulates across validation batches
        self.val_accuracy = MulticlassAccuracy(num_classes=model.spec.n_classes, average="micro")

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.model(x, lengths)

    def training_step(self, batch, batch_idx):
        x, lengths, y = batch
        if self.max_seq_len is not None:
            if y.dim() == 2:  # per-frame labels follow their frames
                x, lengths, y = random_windows(x, lengths, self.max_seq_len, self._window_gen, y)
            else:
                x, lengths = random_windows(x, lengths, self.max_seq_len, self._window_gen)
            x = x[:, : int(lengths.max())]
        logits, y = scored(self.model(x, lengths), y, lengths)
        loss = F.cross_entropy(logits, y)
        self._train_sum = self._train_sum + loss.detach() * len(y)
        self._train_n += len(y)
        if self._teacher:
            if next(self._teacher[0].parameters()).device != x.device:  # kept out of the module's children: moved here on a GPU
                self._teacher[0].to(x.device)
            # knowledge distillation from the dense model (Hinton et al. 2015): soft targets at temperature T
            t = self.distill_temperature
            with torch.no_grad():
                soft = torch.softmax(flat_outputs(self._teacher[0](x, lengths), lengths) / t, dim=1)
            kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * (t * t)
            loss = (1.0 - self.distill_weight) * loss + self.distill_weight * kd
        for reg in self.regularizers:
            loss = loss + reg(self.model)
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sum = torch.zeros(())
        self._train_n = 0

    def validation_step(self, batch, batch_idx):
        x, lengths, y = batch
        logits, y = scored(self.model(x, lengths), y, lengths)
        self._val_loss = self._val_loss + F.cross_entropy(logits, y, reduction="sum")
        self.val_accuracy.update(logits, y)
        self._val_n += len(y)

    def on_validation_epoch_start(self) -> None:
        self._val_loss = torch.zeros(())
        self._val_n = 0
        self.val_accuracy.reset()

    def on_validation_epoch_end(self) -> None:
        n = max(self._val_n, 1)
        val_loss = float(self._val_loss) / n
        val_acc = float(self.val_accuracy.compute())
        self.log("val_loss", val_loss, prog_bar=True)
        self.log("val_accuracy", val_acc, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        train_loss = float(self._train_sum) / self._train_n if self._train_n else math.nan
        self.history.append(
            {"epoch": self.current_epoch, "val_loss": val_loss, "val_accuracy": val_acc, "train_loss": train_loss}
        )

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "cosine" and self.trainer is not None and self.trainer.max_epochs:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(self.trainer.max_epochs), 1))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt

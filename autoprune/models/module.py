"""LightningModule wrapping an :class:`RNNClassifier`: loss, accuracy, optimiser, truncation.

Kept lean on purpose: a tiny RNN step takes well under a millisecond, so per-step
logging and metric objects would dominate. Loss and accuracy are accumulated in
plain tensors and logged once per epoch.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from autoprune.models.rnn import RNNClassifier

__all__ = ["RNNModule", "random_windows"]


def random_windows(x: Tensor, lengths: Tensor, max_len: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Crop every sequence longer than ``max_len`` to a random window of that length.

    This is the "sequence truncation" of the seed paper: shorter training windows make
    backpropagation through time cheaper and regularise. Shorter sequences are kept
    whole. Returns the cropped padded batch and the new lengths.
    """
    if x.size(1) <= max_len:
        return x, lengths
    slack = (lengths - max_len).clamp(min=0)
    start = (torch.rand(lengths.shape, generator=generator) * (slack + 1).float()).floor().long()
    steps = torch.arange(max_len).unsqueeze(0)
    idx = (start.unsqueeze(1) + steps).clamp(max=x.size(1) - 1)
    out = x.gather(1, idx.unsqueeze(2).expand(-1, -1, x.size(2)))
    new_lengths = lengths.clamp(max=max_len)
    out = out * (steps < new_lengths.unsqueeze(1)).unsqueeze(2).to(out.dtype)
    return out, new_lengths


class RNNModule(pl.LightningModule):
    """Train an :class:`RNNClassifier` with cross-entropy.

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
            x, lengths = random_windows(x, lengths, self.max_seq_len, self._window_gen)
            x = x[:, : int(lengths.max())]
        logits = self.model(x, lengths)
        loss = F.cross_entropy(logits, y)
        self._train_sum = self._train_sum + loss.detach() * len(y)
        self._train_n += len(y)
        if self._teacher:
            # knowledge distillation from the dense model (Hinton et al. 2015): soft targets at temperature T
            t = self.distill_temperature
            with torch.no_grad():
                soft = torch.softmax(self._teacher[0](x, lengths) / t, dim=1)
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
        logits = self.model(x, lengths)
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

"""Recovery after pruning: what a trial does with the pruned, compacted model (``policy.recovery``).

* ``finetune`` (default): nothing more; the fine-tuning that ran while pruning is the recovery.
* ``rewind``: learning-rate rewinding (Renda et al. 2020, "Comparing Rewinding and Fine-tuning
  in Neural Network Pruning"): retrain the pruned network from its pruned weights with the
  dense model's schedule (``train:`` learning rate, cosine decay, optimizer, clipping; over
  ``train.epochs``, or ``search.recovery_epochs`` when the study shortens it), its zeros kept at zero.
* ``scratch``: a fresh random initialisation of the found architecture (compacted hidden sizes,
  and the unstructured zero pattern where there is one), trained with the dense schedule. With
  hidden-unit pruning this is "a small dense model trained from scratch", chosen by the search.

Both retrainings keep the weights of the best validation epoch when the study trains with
``train.select: best_val``, the last otherwise, exactly as the dense model was selected; the
policy's distillation weight (from the dense model) applies to them too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, get_args

import lightning.pytorch as pl
import torch

from autoprune.models.fitting import BestValidation, Recipe, fit
from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.policy import PruningPolicy, Recovery

__all__ = ["RECOVERIES", "recover", "recovery_epochs", "KeepZeros"]

#: policy.recovery values, in the order the docs list them
RECOVERIES = get_args(Recovery)


def _zero_masks(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Masks of the weight matrices that pruning left with zeros (biases and dense tensors are free)."""
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2 and bool((p == 0).any()):
            masks[name] = p.detach() != 0
    return masks


class KeepZeros(pl.Callback):
    """Re-zero pruned weights after every optimizer step (masks in place, as the pruning callback does)."""

    def __init__(self, masks: Dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def apply(self, pl_module: Any) -> None:
        if not self.masks:
            return
        params = dict(pl_module.model.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                params[name].mul_(mask)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.apply(pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.apply(pl_module)


def recovery_epochs(config: Any) -> int:
    """Epochs of a rewind / scratch retraining: ``search.recovery_epochs``, else the dense recipe's ``train.epochs``.

    ``config`` is the study's :class:`~autoprune.config.StudyConfig` (not imported here: the config
    validates against the pruning engine's registries, so the engine does not depend on it).

    A shorter retraining keeps the dense learning rate, optimizer and clipping and compresses the
    schedule (cosine decay to zero over those epochs), as "learning-rate rewinding" with a smaller
    retraining budget does (Renda et al. 2020 compare retraining budgets too).
    """
    return config.search.recovery_epochs or config.train.epochs


def recover(
    config: Any,
    policy: PruningPolicy,
    model: torch.nn.Module,
    datamodule: Any,
    teacher: Optional[torch.nn.Module] = None,
    progress: bool = False,
) -> Tuple[torch.nn.Module, List[Dict[str, Any]]]:
    """Apply ``policy.recovery`` to a pruned, compacted :class:`RNNClassifier`, with the study's dense recipe (``config.train``).

    Returns the recovered model (same architecture, same zero pattern) in eval mode and the
    history of the retraining (one dict per epoch, ``phase: recovery``); ``finetune`` returns
    the model unchanged and an empty history.
    """
    if policy.recovery == "finetune":
        return model, []
    masks = _zero_masks(model)
    if policy.recovery == "scratch":
        torch.manual_seed(config.seed)
        model = RNNClassifier(model.spec)
    model.train()
    pl.seed_everything(config.seed, verbose=False)
    recipe = Recipe.of_training(config.train, recovery_epochs(config))
    best = BestValidation(from_epoch=0 if config.train.select == "best_val" else recipe.epochs - 1)
    keep = KeepZeros(masks)
    # the dense recipe trains whole epochs of the data: no minimum number of steps per epoch (tasks.budget)
    saved = getattr(datamodule, "min_train_batches", None)
    if saved:
        datamodule.min_train_batches = 0
    try:
        module = fit(model, datamodule, recipe, config.seed, [keep, best], teacher, policy.distillation, progress=progress)
    finally:
        if saved:
            datamodule.min_train_batches = saved
    keep.apply(module)  # the restored best state was recorded after a re-zeroing step; be exact anyway
    return model.eval(), [{**h, "phase": "recovery"} for h in module.history]

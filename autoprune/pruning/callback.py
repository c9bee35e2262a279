"""PruningCallback: apply a :class:`PruningPolicy` while a Lightning Trainer fine-tunes.

Masks are boolean buffers registered next to the weights they mask (``weight_hh_l0_mask``)
and applied in place: gradients of pruned weights are zeroed before every optimizer step
and the weights themselves after it, so pruned weights are exactly zero throughout. No
``torch.nn.utils.prune`` parametrization (it breaks deepcopy, TorchScript, ONNX size and
cuDNN weight flattening on RNNs; see pitfalls.md). The schedule's state is saved in
checkpoints, the masks with the module's state, so a resumed fit continues the schedule.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Dict, List, Optional, Tuple

import lightning.pytorch as pl
import torch
from torch import Tensor

from autoprune.errors import PruningError
from autoprune.models.arch import units_removed
from autoprune.models.rnn import evaluate
from autoprune.pruning.groups import ModelGroups
from autoprune.pruning.methods import get_method
from autoprune.pruning.policy import PruningPolicy

__all__ = ["PruningCallback", "mask_buffers", "sparsity_report"]

log = logging.getLogger(__name__)
_SUFFIX = "_mask"


def _owner(model: torch.nn.Module, pname: str) -> tuple[torch.nn.Module, str]:
    prefix, _, leaf = pname.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), leaf


def mask_buffers(model: torch.nn.Module) -> Dict[str, Tensor]:
    """Parameter name → its mask buffer, for every masked parameter of ``model``."""
    out = {}
    for name, _ in model.named_parameters():
        owner, leaf = _owner(model, name)
        mask = getattr(owner, leaf + _SUFFIX, None)
        if isinstance(mask, Tensor):
            out[name] = mask
    return out


def sparsity_report(model: torch.nn.Module) -> Dict[str, Any]:
    """Weight sparsity of every named matrix, of the RNN weights and overall (RNN matrices and head)."""
    groups = ModelGroups(model)
    counts = {}
    for name, ref in groups.matrices.items():
        t = groups.params[ref.param].detach()
        counts[name] = (int((t == 0).sum()), t.numel())
    return report_of_counts(counts)


def report_of_counts(counts: Dict[str, Tuple[int, int]]) -> Dict[str, Any]:
    """:func:`sparsity_report` from ``(zeros, entries)`` per named matrix."""
    per_group = {name: z / n for name, (z, n) in counts.items()}
    zeros, total = sum(z for z, _ in counts.values()), sum(n for _, n in counts.values())
    rnn = [c for name, c in counts.items() if name != "head"]
    return {"overall": zeros / total, "rnn": sum(z for z, _ in rnn) / sum(n for _, n in rnn), "per_group": per_group}


class PruningCallback(pl.Callback):
    """Prune ``pl_module.model`` during ``fit`` according to ``policy``.

    Args:
        policy: what to prune, how much and when.
        seed: seeds random scores.
    """

    def __init__(self, policy: PruningPolicy, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed
        self.method = get_method(policy.method, policy.granularity, policy.regularization, seed)
        self.schedule = policy.make_schedule()
        self.history: List[Dict[str, Any]] = []
        self.groups: Optional[ModelGroups] = None
        self.targets: Dict[str, float] = {}
        self.weight_targets: Dict[str, float] = {}  # hybrid: matrices / gate blocks pruned unstructured after the units
        self.masks: Dict[str, Tensor] = {}
        self._params: Dict[str, torch.nn.Parameter] = {}
        self._reg: Any = None  # the method's regularizer this callback added to pl_module.regularizers

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = pl_module.model
        groups = ModelGroups(model)
        self.groups = groups
        self.targets = groups.targets(self.policy.sparsity, self.policy.granularity)
        if self.policy.hybrid:
            self.weight_targets = groups.targets(self.policy.weight_sparsity, "unstructured")
        if self.policy.granularity == "hidden_unit":
            names = sorted({p for t in self.targets for p in groups.layers[t].params} | {groups.target_ref(t).param for t in self.weight_targets})
        else:
            names = sorted({groups.target_ref(t).param for t in self.targets})
        for pname in names:
            owner, leaf = _owner(model, pname)
            if not isinstance(getattr(owner, leaf + _SUFFIX, None), Tensor):
                owner.register_buffer(leaf + _SUFFIX, torch.ones_like(groups.params[pname], dtype=torch.bool))
        self.masks = mask_buffers(model)
        self._params = {n: groups.params[n] for n in self.masks}
        reg = self.method.regularizer(groups, list(self.targets))
        if reg is not None and reg not in pl_module.regularizers:
            self._reg = reg
            pl_module.regularizers.append(reg)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._reg is not None and self._reg in pl_module.regularizers:
            pl_module.regularizers.remove(self._reg)

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch

        def val_loss() -> float:
            return evaluate(pl_module.model, *trainer.datamodule.tensors("val"))["loss"]

        ramp = self.schedule.decide(epoch, val_loss=val_loss)
        if ramp is None:
            return
        batches: List = []
        if self.method.needs_data:
            loader = trainer.datamodule.train_dataloader()
            batches = list(itertools.islice(iter(loader), self.policy.calibration_batches))
        self.prune_to(pl_module.model, ramp, batches)
        report = sparsity_report(pl_module.model)
        self.history.append({"epoch": epoch, "ramp": ramp, "sparsity": report["overall"]})
        log.debug("epoch %d: pruned to ramp %.3f, sparsity %.4f", epoch, ramp, report["overall"])

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        for name, mask in self.masks.items():
            grad = self._params[name].grad
            if grad is not None:
                grad.mul_(mask)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss):
            raise PruningError(
                f"fine-tuning diverged: loss is {float(loss)} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                f"lower finetune.lr (now {self.policy.finetune.lr}) or grad_clip.value (now {self.policy.grad_clip.value})"
            )
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        for name, mask in self.masks.items():
            self._params[name].mul_(mask)

    def reached_target(self) -> bool:
        return self.schedule.finished()

    # ------------------------------------------------------------ the pruning
    @torch.no_grad()
    def _keep_smallest_out(self, score: Tensor, mask: Tensor, k: int) -> None:
        flat_mask = mask.reshape(-1)
        s = score.reshape(-1).clone()
        s[~flat_mask] = -math.inf
        if k > 0:
            idx = torch.topk(s, k, largest=False).indices
            flat_mask[idx] = False

    def prune_to(self, model: torch.nn.Module, ramp: float, batches: List) -> None:
        """Update the masks so every target reaches ``s_i + (s_f - s_i) * ramp``, then apply them.

        Hidden-unit targets first; a hybrid policy then prunes, in each weight target, that level
        of the weights the removed units left (units and weights ramp together).
        """
        groups = self.groups
        assert groups is not None, "setup() must run first"
        s_i = self.policy.schedule.initial_sparsity

        def level(target: float) -> float:
            return s_i + (target - s_i) * ramp if target > s_i else target * ramp

        with self.method.step():  # a hybrid's units and weights are scored from one pass over the batches
            if self.policy.granularity == "hidden_unit":
                self._prune_units(model, groups, level, batches)
                if self.weight_targets:
                    self._prune_weights(model, groups, self.weight_targets, level, batches, self._unit_alive(groups))
            else:
                self._prune_weights(model, groups, self.targets, level, batches, None)
        self.apply_masks()

    def _prune_units(self, model: torch.nn.Module, groups: ModelGroups, level: Any, batches: List) -> None:
        scores = self.method.unit_scores(model, groups, batches)
        for lname, final in self.targets.items():
            layer = groups.layers[lname]
            k = units_removed(layer.hidden, level(final))
            keep = self._kept_units(layer)
            s = scores[lname].clone()
            s[~keep] = -math.inf
            if k > 0:
                keep = keep.clone()
                keep[torch.topk(s, k, largest=False).indices] = False
            groups.apply_unit_mask(layer, keep, self.masks)

    def _kept_units(self, layer: Any) -> Tensor:
        return self.masks[layer.row_params[0]].reshape(layer.gates, layer.hidden, -1).any(dim=2).any(dim=0)

    def _unit_alive(self, groups: ModelGroups) -> Dict[str, Tensor]:
        """Per masked parameter, the entries the hidden-unit masks alone leave (what a weight target's sparsity is a fraction of)."""
        alive = {name: torch.ones_like(mask) for name, mask in self.masks.items()}
        for lname in self.targets:
            layer = groups.layers[lname]
            groups.apply_unit_mask(layer, self._kept_units(layer), alive)
        return alive

    def _prune_weights(self, model: torch.nn.Module, groups: ModelGroups, targets: Dict[str, float], level: Any, batches: List,
                       alive: Optional[Dict[str, Tensor]]) -> None:
        """Single weights: each target (a matrix or gate block) keeps ``1 - level`` of its entries, or of those
        ``alive`` (the hidden-unit masks) leaves; ``scope: global`` ranks all targets' weights together."""
        params = sorted({groups.target_ref(t).param for t in targets})
        scores = self.method.element_scores(model, groups, params, batches)
        if self.policy.scope == "global":
            refs = [groups.target_ref(t) for t in targets]
            flat_scores = torch.cat([ref.view(scores[ref.param]).reshape(-1) for ref in refs])
            flat_masks = torch.cat([ref.view(self.masks[ref.param]).reshape(-1) for ref in refs])
            k = int(round(level(next(iter(targets.values()))) * flat_scores.numel()))
            self._keep_smallest_out(flat_scores, flat_masks, k)
            offset = 0
            for ref in refs:
                view = ref.view(self.masks[ref.param])
                n = view.numel()
                view.copy_(flat_masks[offset : offset + n].view_as(view))
                offset += n
            return
        for t, final in targets.items():
            ref = groups.target_ref(t)
            mask = ref.view(self.masks[ref.param])
            if alive is None:
                k = int(round(level(final) * mask.numel()))
            else:  # the units' removed entries first (already masked: they rank lowest), then a share of what is left
                n_alive = int(ref.view(alive[ref.param]).sum())
                k = (mask.numel() - n_alive) + int(round(level(final) * n_alive))
            self._keep_smallest_out(ref.view(scores[ref.param]), mask, k)

    # -------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.schedule.load_state_dict(state_dict["schedule"])
        self.history = list(state_dict["history"])

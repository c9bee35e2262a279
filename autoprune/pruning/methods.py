"""Pruning methods: each says *what is important*; masks.py decides *what to keep*.

A method is a small class registered by name in ``METHODS`` (the names used in YAML
and on the CLI). It provides

* ``element_scores(model, groups, params, batches)`` → importance per weight (param name → tensor);
* ``unit_scores(...)`` → importance per hidden unit (layer name → ``[hidden]``), by default
  the element scores summed over each unit's group;
* optionally ``regularizer(groups)`` → a loss term added during fine-tuning.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, ClassVar, Dict, Iterable, Iterator, List, Optional, Tuple, Type

from autoprune.errors import ConfigError

if TYPE_CHECKING:  # torch loads only when a method runs: the config validates method names without it
    from torch import Tensor, nn

    from autoprune.pruning.groups import ModelGroups

__all__ = [
    "PruningMethod",
    "Magnitude",
    "Taylor",
    "Confidence",
    "L1",
    "GroupLasso",
    "RandomMethod",
    "METHODS",
    "get_method",
    "GRANULARITIES",
]

GRANULARITIES = ("unstructured", "hidden_unit")
METHODS: Dict[str, Type["PruningMethod"]] = {}

Batch = Tuple["Tensor", "Tensor", "Tensor"]


def register_method(cls: Type["PruningMethod"]) -> Type["PruningMethod"]:
    METHODS[cls.name] = cls
    return cls


class PruningMethod:
    """Base class of pruning methods.

    Args:
        regularization: strength of the method's penalty (``l1``, ``group_lasso``).
        seed: seeds random scores.
    """

    name: ClassVar[str] = ""
    granularities: ClassVar[Tuple[str, ...]] = GRANULARITIES
    needs_data: ClassVar[bool] = False
    uses_regularization: ClassVar[bool] = False

    def __init__(self, regularization: float = 0.0, seed: int = 0) -> None:
        self.regularization = regularization
        import torch

        self.generator = torch.Generator().manual_seed(seed)
        self._step: Optional[Dict[str, "Tensor"]] = None  # data-driven scores of the current pruning step (see step())

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One pruning step: the weights and the batches do not change within it, so a method that scores from data
        (``needs_data``) runs its passes over the batches once and serves a hybrid policy's units and weights from them."""
        self._step = {}
        try:
            yield
        finally:
            self._step = None

    def element_scores(self, model: nn.Module, groups: ModelGroups, params: List[str], batches: Iterable[Batch]) -> Dict[str, Tensor]:
        return {p: groups.params[p].detach().abs() for p in params}

    def unit_scores(self, model: nn.Module, groups: ModelGroups, batches: Iterable[Batch]) -> Dict[str, Tensor]:
        names = sorted({p for layer in groups.iter_layers() for p in layer.params})
        elem = self.element_scores(model, groups, names, batches)
        return {layer.name: groups.unit_reduce(layer, elem) for layer in groups.iter_layers()}

    def regularizer(self, groups: ModelGroups, targets: List[str]) -> Optional[Callable[[nn.Module], Tensor]]:
        return None


@register_method
class Magnitude(PruningMethod):
    """|w| per weight; the L2 norm of each unit's group for hidden units."""

    name = "magnitude"

    def unit_scores(self, model, groups, batches):
        sq = {p: groups.params[p].detach().pow(2) for layer in groups.iter_layers() for p in layer.params}
        return {layer.name: groups.unit_reduce(layer, sq).sqrt() for layer in groups.iter_layers()}


class _Saliency(PruningMethod):
    """|w · dF/dw| accumulated over batches, for an objective F of a batch."""

    needs_data = True

    def objective(self, logits: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def element_scores(self, model, groups, params, batches):
        if self._step is not None and all(p in self._step for p in params):
            return {p: self._step[p] for p in params}
        scores = self._scores(model, groups, params, batches)
        if self._step is not None:
            self._step.update(scores)
        return scores

    def _scores(self, model, groups, params, batches):
        import torch

        from autoprune.models.rnn import scored  # torch: this module stays light (the config validates method names with it)

        scores = {p: torch.zeros_like(groups.params[p]) for p in params}
        was_training = model.training
        model.eval()  # no dropout noise in the saliency
        n = 0
        for x, lengths, y in batches:
            model.zero_grad(set_to_none=True)
            self.objective(*scored(model(x, lengths), y, lengths)).backward()  # per sequence, or per valid frame
            with torch.no_grad():
                for p in params:
                    param = groups.params[p]
                    if param.grad is not None:
                        scores[p] += (param.detach() * param.grad).abs()
            n += 1
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        if n == 0:
            raise ConfigError(f"method '{self.name}' needs training batches to score weights, got none")
        return {p: s / n for p, s in scores.items()}


@register_method
class Taylor(_Saliency):
    """First-order Taylor saliency of the loss: |w · dL/dw| (Molchanov et al. 2017/2019)."""

    name = "taylor"

    def objective(self, logits, y):
        import torch.nn.functional as F

        return F.cross_entropy(logits, y)


@register_method
class Confidence(_Saliency):
    """Saliency of the model's confidence (mean top-class probability): |w · dC/dw|.

    Needs no labels: weights the prediction's confidence depends on are kept.
    """

    name = "confidence"

    def objective(self, logits, y):
        import torch

        return torch.softmax(logits, dim=1).max(dim=1).values.mean()


@register_method
class L1(PruningMethod):
    """L1 penalty λ·Σ|w| on the targeted matrices while fine-tuning, then |w| thresholding."""

    name = "l1"
    granularities = ("unstructured",)
    uses_regularization = True

    def regularizer(self, groups, targets):
        lam = self.regularization
        params = [groups.params[groups.target_ref(t).param] for t in targets]
        refs = [groups.target_ref(t) for t in targets]

        def penalty(model: nn.Module) -> Tensor:
            return lam * sum(ref.view(p).abs().sum() for ref, p in zip(refs, params))

        return penalty if lam > 0 else None


@register_method
class GroupLasso(PruningMethod):
    """Group-lasso penalty λ·Σ_units √|g|·‖w_g‖₂ on hidden-unit groups, then removal of the weakest units."""

    name = "group_lasso"
    granularities = ("hidden_unit",)
    uses_regularization = True

    def unit_scores(self, model, groups, batches):
        return Magnitude.unit_scores(self, model, groups, batches)

    def regularizer(self, groups, targets):
        lam = self.regularization
        layers = [groups.layers[t] for t in targets]
        sizes = {layer.name: groups.unit_group_sizes(layer).sqrt() for layer in layers}

        import torch

        def penalty(model: nn.Module) -> Tensor:
            total = torch.zeros(())
            for layer in layers:
                sq = {p: groups.params[p].pow(2) for p in layer.params}
                total = total + (sizes[layer.name] * (groups.unit_reduce(layer, sq) + 1e-12).sqrt()).sum()
            return lam * total

        return penalty if lam > 0 and layers else None


@register_method
class RandomMethod(PruningMethod):
    """Random scores: the baseline every other method must beat."""

    name = "random"

    def element_scores(self, model, groups, params, batches):
        import torch

        return {p: torch.rand(groups.params[p].shape, generator=self.generator) for p in params}

    def unit_scores(self, model, groups, batches):
        import torch

        return {layer.name: torch.rand(layer.hidden, generator=self.generator) for layer in groups.iter_layers()}


def get_method(name: str, granularity: str, regularization: float = 0.0, seed: int = 0) -> PruningMethod:
    """Instantiate a registered method, checking it supports ``granularity``.

    Raises:
        ConfigError: unknown method or granularity (lists the valid ones), or a pair that makes no sense.
    """
    if name not in METHODS:
        raise ConfigError(f"method: unknown pruning method {name!r}; valid: {', '.join(METHODS)}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity: unknown granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
    cls = METHODS[name]
    if granularity not in cls.granularities:
        hint = {
            "l1": "L1 regularises single weights; for hidden units use method 'group_lasso'",
            "group_lasso": "group lasso acts on whole hidden-unit groups; for single weights use method 'l1'",
        }.get(name, "")
        raise ConfigError(
            f"method {name!r} does not support granularity {granularity!r} (supports: {', '.join(cls.granularities)})"
            + (f". HINT: {hint}" if hint else "")
        )
    return cls(regularization=regularization, seed=seed)

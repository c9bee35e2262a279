"""Named prunable groups of an :class:`~autoprune.models.RNNClassifier`.

Names (the same in policies, YAML spaces, MLflow params and model cards):

* matrices: ``rnn.<layer>[.<dir>].ih``, ``rnn.<layer>[.<dir>].hh`` and ``head``
  (``<dir>`` is ``fwd``/``bwd``, only for bidirectional models);
* gate blocks of a matrix: ``rnn.<layer>[.<dir>].<ih|hh>.<gate>`` (LSTM gates i, f, g, o;
  GRU r, z, n), the rows PyTorch stacks for that gate;
* hidden-unit layers: ``rnn.<layer>[.<dir>]``. Unit *k* of a layer is its row *k* in every
  gate block of ``ih``, ``hh`` and both biases, column *k* of ``hh``, and its input
  column(s) in the next layer, or in the head and the attention projection.

Tensors are addressed by fully-qualified parameter names, never by assuming
``weight``/``bias`` (the gap that makes Lightning's ``ModelPruning`` skip RNNs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError, PruningError
from autoprune.models.arch import GATES, layer_name, units_removed
from autoprune.models.rnn import RNNClassifier

__all__ = ["MatrixRef", "UnitLayer", "ModelGroups", "check_targets"]


@dataclass(frozen=True)
class MatrixRef:
    """A prunable weight matrix, or one gate block (a row slice) of it."""

    name: str
    param: str  # fully-qualified parameter name
    rows: Optional[Tuple[int, int]] = None  # [start, stop) for a gate block

    def view(self, tensor: Tensor) -> Tensor:
        return tensor if self.rows is None else tensor[self.rows[0] : self.rows[1]]


@dataclass(frozen=True)
class Consumer:
    """Columns ``[offset, offset + hidden)`` of ``param`` read a layer's outputs."""

    param: str
    offset: int


@dataclass(frozen=True)
class UnitLayer:
    """The hidden units of one layer and direction."""

    name: str
    layer: int
    direction: int
    hidden: int
    prefix: str  # module prefix, e.g. rnn.0.dirs.1
    gates: int
    consumers: Tuple[Consumer, ...] = field(default_factory=tuple)

    @property
    def row_params(self) -> Tuple[str, ...]:
        p = self.prefix
        return (f"{p}.weight_ih_l0", f"{p}.weight_hh_l0", f"{p}.bias_ih_l0", f"{p}.bias_hh_l0")

    @property
    def hh(self) -> str:
        return f"{self.prefix}.weight_hh_l0"

    @property
    def params(self) -> Tuple[str, ...]:
        """Every parameter holding part of a unit's group: its rows (``ih``, ``hh``, biases), its ``hh`` column, its consumers' columns."""
        return (*self.row_params, self.hh, *(c.param for c in self.consumers))


class ModelGroups:
    """Resolve group names of a model to parameters and hidden-unit structure."""

    def __init__(self, model: RNNClassifier) -> None:
        self.model = model
        self.cell = model.spec.cell
        self.gate_names = GATES[self.cell]
        self.params: Dict[str, nn.Parameter] = dict(model.named_parameters())
        hidden = model.hidden_sizes
        self.bidirectional = len(hidden[0]) == 2
        self.matrices: Dict[str, MatrixRef] = {}
        self.gate_blocks: Dict[str, MatrixRef] = {}
        self.layers: Dict[str, UnitLayer] = {}
        n_layers = len(hidden)
        for l, sizes in enumerate(hidden):
            for d, h in enumerate(sizes):
                lname = layer_name(l, d, self.bidirectional)
                prefix = f"rnn.{l}.dirs.{d}"
                offset = sum(sizes[:d])
                if l < n_layers - 1:
                    consumers = tuple(Consumer(f"rnn.{l + 1}.dirs.{nd}.weight_ih_l0", offset) for nd in range(len(hidden[l + 1])))
                else:
                    consumers = (Consumer("head.weight", offset),)
                    if model.attn_proj is not None:
                        consumers = consumers + (Consumer("attn_proj.weight", offset),)
                self.layers[lname] = UnitLayer(lname, l, d, h, prefix, len(self.gate_names), consumers)
                for kind in ("ih", "hh"):
                    mname = f"{lname}.{kind}"
                    param = f"{prefix}.weight_{kind}_l0"
                    self.matrices[mname] = MatrixRef(mname, param)
                    for g, gate in enumerate(self.gate_names):
                        self.gate_blocks[f"{mname}.{gate}"] = MatrixRef(f"{mname}.{gate}", param, (g * h, (g + 1) * h))
        self.matrices["head"] = MatrixRef("head", "head.weight")

    # ------------------------------------------------------------------ names
    @property
    def rnn_matrices(self) -> List[str]:
        return [n for n in self.matrices if n != "head"]

    def valid_names(self, granularity: str) -> List[str]:
        if granularity == "hidden_unit":
            return list(self.layers) + [f"rnn.{l}" for l in range(len(self.model.rnn))] if self.bidirectional else list(self.layers)
        layers = range(len(self.model.rnn))
        both_directions = [f"rnn.{l}.{kind}" for l in layers for kind in ("ih", "hh")] if self.bidirectional else []
        return list(self.matrices) + list(self.gate_blocks) + [f"rnn.{l}" for l in layers] + (list(self.layers) if self.bidirectional else []) + both_directions

    def resolve_sparsity(self, sparsity: float | Dict[str, float], granularity: str) -> Dict[str, float]:
        """Turn a policy's sparsity (one number or a mapping of group names) into per-target values.

        Targets are hidden-unit layers for ``hidden_unit`` and matrices or gate blocks for
        ``unstructured``. A single number applies to every RNN matrix (or layer); the head
        is pruned only when named. In a mapping the most specific name wins
        (``rnn.0.hh.f`` over ``rnn.0.hh`` over ``rnn.0``); in a bidirectional model ``rnn.0.hh``
        names that matrix of both directions (``rnn.0.fwd.hh`` is one of them).

        Raises:
            ConfigError: unknown group name (lists the valid ones) or value outside [0, 1).
        """
        if isinstance(sparsity, (int, float)):
            mapping = {"*": float(sparsity)}
        else:
            mapping = dict(sparsity)
        valid = self.valid_names(granularity)
        for name, value in mapping.items():
            if name != "*" and name not in valid:
                raise ConfigError(
                    f"sparsity: unknown group '{name}' for {granularity} pruning of this model; valid names: {', '.join(valid)}"
                )
            if not isinstance(value, (int, float)) or not (0.0 <= float(value) < 1.0):
                raise ConfigError(f"sparsity.{name}: must be a number in [0, 1), got {value!r}")

        def lookup(candidates: List[str]) -> Optional[float]:
            for c in candidates:
                if c in mapping:
                    return float(mapping[c])
            return None

        out: Dict[str, float] = {}
        if granularity == "hidden_unit":
            for lname, layer in self.layers.items():
                v = lookup([lname, f"rnn.{layer.layer}", "*"])
                if v:
                    out[lname] = v
            return out
        # unstructured: gate blocks when any gate of a matrix is named, else whole matrices
        for mname in self.matrices:
            if mname == "head":
                v = lookup(["head"])
                if v:
                    out["head"] = v
                continue
            layer_name, kind = mname.rsplit(".", 1)
            layer_idx = layer_name.split(".")[1]
            both = [f"rnn.{layer_idx}.{kind}"] if self.bidirectional else []  # the matrix of both directions
            gates = [f"{mname}.{g}" for g in self.gate_names]
            if any(g in mapping for g in gates):
                for g in gates:
                    v = lookup([g, mname, *both, layer_name, f"rnn.{layer_idx}", "*"])
                    if v:
                        out[g] = v
            else:
                v = lookup([mname, *both, layer_name, f"rnn.{layer_idx}", "*"])
                if v:
                    out[mname] = v
        return out

    def targets(self, sparsity: float | Dict[str, float], granularity: str) -> Dict[str, float]:
        """A policy's targets on this model (:meth:`resolve_sparsity`), checked with :func:`check_targets`.

        Raises:
            ConfigError: unknown group name or value outside [0, 1).
            PruningError: a hidden-unit sparsity removes every unit of a layer.
        """
        targets = self.resolve_sparsity(sparsity, granularity)
        check_targets(self, targets, granularity)
        return targets

    def target_ref(self, name: str) -> MatrixRef:
        return self.matrices.get(name) or self.gate_blocks[name]

    # ------------------------------------------------------------ unit algebra
    def unit_reduce(self, layer: UnitLayer, elem: Dict[str, Tensor]) -> Tensor:
        """Sum an element-wise score map (param name → tensor) over each unit's group → ``[hidden]``."""
        h, g = layer.hidden, layer.gates
        total = torch.zeros(h)
        for pname in layer.row_params:
            t = elem.get(pname)
            if t is not None:
                total += t.reshape(g, h, -1).sum(dim=(0, 2))
        t = elem.get(layer.hh)
        if t is not None:
            total += t.sum(dim=0)
        for c in layer.consumers:
            t = elem.get(c.param)
            if t is not None:
                total += t[:, c.offset : c.offset + h].sum(dim=0)
        return total

    def unit_group_sizes(self, layer: UnitLayer) -> Tensor:
        """Number of weights in each unit's group (the same for every unit of a layer)."""
        ones = {name: torch.ones_like(self.params[name]) for name in layer.params}
        return self.unit_reduce(layer, ones)

    def apply_unit_mask(self, layer: UnitLayer, keep: Tensor, masks: Dict[str, Tensor]) -> None:
        """Clear, in ``masks`` (param name → bool mask), every entry of the pruned units' groups."""
        h, g = layer.hidden, layer.gates
        drop = ~keep
        for pname in layer.row_params:
            m = masks[pname]
            m.view(g, h, -1)[:, drop, :] = False
        masks[layer.hh][:, drop] = False
        for c in layer.consumers:
            cols = torch.nonzero(drop).flatten() + c.offset
            masks[c.param][:, cols] = False

    def iter_layers(self) -> Iterator[UnitLayer]:
        return iter(self.layers.values())


def check_targets(groups: ModelGroups, targets: Dict[str, float], granularity: str) -> None:
    """Refuse hidden-unit targets that would remove every unit of a layer (single weights may all go).

    Raises:
        PruningError: naming the layer, its size and the largest sparsity that keeps a unit.
    """
    if granularity != "hidden_unit":
        return
    for lname, s in targets.items():
        h = groups.layers[lname].hidden
        if units_removed(h, s) >= h:
            raise PruningError(
                f"sparsity {s} would remove every hidden unit of layer {lname} ({h} units); at least one unit stays: "
                f"use at most {(h - 1) / h:.4f}"
            )

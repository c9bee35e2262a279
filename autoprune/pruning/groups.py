"""Named prunable groups of an :class:`~autoprune.models.RNNClassifier`.

Names (the same in policies, YAML spaces, MLflow params and model cards):

* matrices: ``rnn.<layer>[.<dir>].ih``, ``rnn.<layer>[.<dir>].hh`` and ``head`` (the output layer)
  (``<dir>`` is ``fwd``/``bwd``, only for bidirectional models); ``head.<i>``, the head's hidden
  Linear at ``head_layers[i]``; ``front.<i>``, the front-end's Embedding / Linear / Conv1d at
  ``front[i]`` (``front`` names them all). Head and front matrices are pruned only when named;
* gate blocks of a matrix: ``rnn.<layer>[.<dir>].<ih|hh>.<gate>`` (LSTM gates i, f, g, o;
  GRU r, z, n), the rows PyTorch stacks for that gate;
* hidden-unit layers: ``rnn.<layer>[.<dir>]``. Unit *k* of a layer is its row *k* in every
  gate block of ``ih``, ``hh`` and both biases, column *k* of ``hh``, and its input
  column(s) in whatever reads the layer's output: the next layer, or the attention projection
  and the head's first Linear (through any gap, pooling, norm, activation or dropout between);
* the head's hidden units: ``head.<i>`` (named only). Unit *k* is row *k* and bias *k* of the
  Linear at ``head_layers[i]`` and column *k* of the next Linear.

Tensors are addressed by fully-qualified parameter names, never by assuming
``weight``/``bias`` (the gap that makes Lightning's ``ModelPruning`` skip RNNs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from autoprune.errors import ConfigError, PruningError
from autoprune.models.arch import GATES, LAYER_KINDS, layer_name, units_kept, units_removed
from autoprune.models.rnn import RNNClassifier

__all__ = ["MatrixRef", "UnitLayer", "ModelGroups", "check_targets", "observes_nothing"]


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
    """Columns ``[offset, offset + hidden)`` of ``param`` read a layer's outputs, through the layers of ``path``.

    ``path`` holds the kinds of the layers between (a gap's norm, the head's activation...; pooling
    and dropout count as nothing): whether a unit whose outputs are 0, or whose columns are 0, can
    go depends on them (:func:`autoprune.pruning.compact.removable_units`).
    """

    param: str
    offset: int
    path: Tuple[str, ...] = ()


@dataclass(frozen=True)
class UnitLayer:
    """The hidden units of one recurrent layer and direction, or of one hidden Linear of the head (``kind`` ``head``)."""

    name: str
    layer: int  # the recurrent layer, or the head layer's index in head_layers
    direction: int
    hidden: int
    prefix: str  # module prefix, e.g. rnn.0.dirs.1 or head_layers.0
    gates: int
    consumers: Tuple[Consumer, ...] = field(default_factory=tuple)
    kind: str = "rnn"  # rnn | head
    space: str = ""  # the features it writes into (a layer's two directions share one): rnn.<l> | head.<i>
    offset: int = 0  # where its units start in that space
    bias: bool = True  # a head Linear may have none

    @property
    def row_params(self) -> Tuple[str, ...]:
        """Parameters whose rows are the units' incoming weights (gate blocks of ``gates`` rows each)."""
        p = self.prefix
        if self.kind == "head":
            return (f"{p}.weight", f"{p}.bias") if self.bias else (f"{p}.weight",)
        return (f"{p}.weight_ih_l0", f"{p}.weight_hh_l0", f"{p}.bias_ih_l0", f"{p}.bias_hh_l0")

    @property
    def hh(self) -> Optional[str]:
        """The recurrent matrix, whose columns the units also feed (None for head units)."""
        return f"{self.prefix}.weight_hh_l0" if self.kind == "rnn" else None

    @property
    def prunable(self) -> bool:
        """Whether a unit whose rows and consumer columns are zero can be removed exactly (:func:`observes_nothing`):
        not when a LayerNorm reads its output after a layer that turns 0 into another value (a sigmoid, a BatchNorm)."""
        return all(bool(observes_nothing(True, True, c.path)) for c in self.consumers)

    @property
    def params(self) -> Tuple[str, ...]:
        """Every parameter holding part of a unit's group: its rows (``ih``, ``hh``, biases), its ``hh`` column, its consumers' columns."""
        own = tuple(p for p in (*self.row_params, self.hh) if p is not None)
        return tuple(dict.fromkeys((*own, *(c.param for c in self.consumers))))


class ModelGroups:
    """Resolve group names of a model to parameters and hidden-unit structure."""

    def __init__(self, model: RNNClassifier) -> None:
        self.model = model
        spec = model.spec
        self.cell = spec.cell
        self.gate_names = GATES[self.cell]
        self.params: Dict[str, nn.Parameter] = dict(model.named_parameters())
        hidden = model.hidden_sizes
        self.bidirectional = len(hidden[0]) == 2
        self.matrices: Dict[str, MatrixRef] = {}
        self.gate_blocks: Dict[str, MatrixRef] = {}
        self.layers: Dict[str, UnitLayer] = {}
        #: module prefix -> the space of features it reads (None: the input or the front's output, never shrunk)
        self.reads: Dict[str, Optional[str]] = {}
        readers = _readers(model)  # space -> consumers of its features (param, path)
        for i, s in enumerate(spec.front):
            if s["kind"] in ("embedding", "linear", "conv1d"):
                self.matrices[f"front.{i}"] = MatrixRef(f"front.{i}", f"front.{i}.weight")
        space: Optional[str] = None
        for l, sizes in enumerate(hidden):
            for j in range(len(spec.between[l - 1]) if spec.between and l > 0 else 0):
                self.reads[f"between.{l}.{j}"] = space
            for d, h in enumerate(sizes):
                lname = layer_name(l, d, self.bidirectional)
                prefix = f"rnn.{l}.dirs.{d}"
                self.reads[prefix] = space
                offset = sum(sizes[:d])
                consumers = tuple(Consumer(p, offset, path) for p, path in readers[f"rnn.{l}"])
                self.layers[lname] = UnitLayer(lname, l, d, h, prefix, len(self.gate_names), consumers, "rnn", f"rnn.{l}", offset)
                for kind in ("ih", "hh"):
                    mname = f"{lname}.{kind}"
                    param = f"{prefix}.weight_{kind}_l0"
                    self.matrices[mname] = MatrixRef(mname, param)
                    for g, gate in enumerate(self.gate_names):
                        self.gate_blocks[f"{mname}.{gate}"] = MatrixRef(f"{mname}.{gate}", param, (g * h, (g + 1) * h))
            space = f"rnn.{l}"
        if model.attn_proj is not None:
            self.reads["attn_proj"] = space
        for i, s in enumerate(spec.head_layers):
            self.reads[f"head_layers.{i}"] = space
            if s["kind"] == "linear":
                name = f"head.{i}"
                consumers = tuple(Consumer(p, 0, path) for p, path in readers[name])
                self.layers[name] = UnitLayer(name, i, 0, int(s["out"]), f"head_layers.{i}", 1, consumers, "head", name, 0, bool(s.get("bias", True)))
                self.matrices[name] = MatrixRef(name, f"head_layers.{i}.weight")
                space = name
        self.reads["head"] = space
        self.matrices["head"] = MatrixRef("head", "head.weight")

    # ------------------------------------------------------------------ names
    @property
    def rnn_matrices(self) -> List[str]:
        return [n for n in self.matrices if n.startswith("rnn.")]

    def valid_names(self, granularity: str) -> List[str]:
        layers = [f"rnn.{l}" for l in range(len(self.model.rnn))]
        if granularity == "hidden_unit":
            rnn = [n for n, layer in self.layers.items() if layer.kind == "rnn" and layer.prunable]
            heads = [n for n, layer in self.layers.items() if layer.kind == "head" and layer.prunable]
            return rnn + (layers if self.bidirectional else []) + heads
        front = ["front"] if any(n.startswith("front.") for n in self.matrices) else []
        both_directions = [f"rnn.{l}.{kind}" for l in range(len(self.model.rnn)) for kind in ("ih", "hh")] if self.bidirectional else []
        return list(self.matrices) + list(self.gate_blocks) + layers + (self.rnn_layers() if self.bidirectional else []) + front + both_directions

    def rnn_layers(self) -> List[str]:
        """The recurrent layers' hidden-unit groups (the head's come after them in :attr:`layers`)."""
        return [n for n, layer in self.layers.items() if layer.kind == "rnn"]

    def resolve_sparsity(self, sparsity: float | Dict[str, float], granularity: str) -> Dict[str, float]:
        """Turn a policy's sparsity (one number or a mapping of group names) into per-target values.

        Targets are hidden-unit layers for ``hidden_unit`` and matrices or gate blocks for
        ``unstructured``. A single number applies to every RNN matrix (or layer); the head's and
        the front-end's matrices and the head's hidden units are pruned only when named. In a
        mapping the most specific name wins (``rnn.0.hh.f`` over ``rnn.0.hh`` over ``rnn.0``;
        ``front.0`` over ``front``); in a bidirectional model ``rnn.0.hh`` names that matrix of
        both directions (``rnn.0.fwd.hh`` is one of them).

        Raises:
            ConfigError: unknown group name (lists the valid ones) or value outside [0, 1).
        """
        if isinstance(sparsity, (int, float)):
            mapping = {"*": float(sparsity)}
        else:
            mapping = dict(sparsity)
        valid = self.valid_names(granularity)
        for name, value in mapping.items():
            if granularity == "hidden_unit" and name in self.layers and not self.layers[name].prunable:
                raise ConfigError(
                    f"sparsity: the units of {name} cannot be removed exactly: a LayerNorm reads its outputs after a layer that turns "
                    f"a removed unit's 0 into another value ({' -> '.join(next(c.path for c in self.layers[name].consumers if 'layernorm' in c.path))}); "
                    f"prune its weights unstructured instead"
                )
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
                if not layer.prunable:  # only through "*" or rnn.<l> here (named, it was refused above)
                    continue
                v = lookup([lname, f"rnn.{layer.layer}", "*"] if layer.kind == "rnn" else [lname])
                if v:
                    out[lname] = v
            return out
        # unstructured: gate blocks when any gate of a matrix is named, else whole matrices
        for mname in self.matrices:
            if not mname.startswith("rnn."):  # the head's and the front-end's: only when named
                v = lookup([mname, "front"] if mname.startswith("front.") else [mname])
                if v:
                    out[mname] = v
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
        t = elem.get(layer.hh) if layer.hh is not None else None
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
        if layer.hh is not None:
            masks[layer.hh][:, drop] = False
        for c in layer.consumers:
            cols = torch.nonzero(drop).flatten() + c.offset
            masks[c.param][:, cols] = False

    def iter_layers(self) -> Iterator[UnitLayer]:
        return iter(self.layers.values())

    def shrunk_spec(self, targets: Dict[str, float]):
        """The architecture after removing each hidden-unit target's share of its units (as compaction rounds them)."""
        spec = self.model.spec
        hidden = [list(sizes) for sizes in spec.hidden_sizes]
        heads: Dict[str, int] = {}
        for name, fraction in targets.items():
            layer = self.layers[name]
            if layer.kind == "rnn":
                hidden[layer.layer][layer.direction] = units_kept(layer.hidden, fraction)
            else:
                heads[name] = units_kept(layer.hidden, fraction)
        return spec.with_hidden_sizes(hidden).with_head_units(heads)

    def space_width(self, space: str) -> int:
        """Features of a space (``rnn.<l>``: both directions; ``head.<i>``)."""
        return sum(layer.hidden for layer in self.layers.values() if layer.space == space)


#: kinds that leave a feature as it is for the group algebra (eval mode): never on a path
_TRANSPARENT = ("dropout",)


def observes_nothing(zero: Any, cols_dead: Any, path: Tuple[str, ...]) -> Any:
    """Whether a consumer reached through the layers of ``path`` observes nothing of a unit (bools, or bool tensors per unit).

    ``zero``: the unit's output is exactly 0 (all its incoming weights are); ``cols_dead``: the consumer's columns
    for it are 0. Either the consumer reads 0 (every layer on the way keeps 0 at 0), or it reads nothing of the unit
    (its columns are 0, every layer treats features one by one, and any LayerNorm on the way reads the unit's 0:
    compaction keeps counting that 0 in its statistics).
    """
    ln_reads_zero = True
    for kind in path:
        if kind == "layernorm":
            ln_reads_zero = ln_reads_zero & zero
        if not LAYER_KINDS[kind].zero_preserving:
            zero = zero & False
    return zero | (cols_dead & ln_reads_zero)


def _readers(model: RNNClassifier) -> Dict[str, List[Tuple[str, Tuple[str, ...]]]]:
    """For each space (``rnn.<l>``, ``head.<i>``), the parameters reading its features as columns, each with
    the kinds of the layers between (:class:`Consumer`)."""
    spec = model.spec
    out: Dict[str, List[Tuple[str, Tuple[str, ...]]]] = {}
    for l in range(spec.num_layers - 1):
        gap = tuple(s["kind"] for s in spec.between[l]) if spec.between else ()
        path = tuple(k for k in gap if k not in _TRANSPARENT)
        out[f"rnn.{l}"] = [(f"rnn.{l + 1}.dirs.{d}.weight_ih_l0", path) for d in range(len(spec.hidden_sizes[l + 1]))]
    last = f"rnn.{spec.num_layers - 1}"
    out[last] = []
    space, path = last, []
    for i, s in enumerate(spec.head_layers):
        if s["kind"] != "linear":
            if s["kind"] not in _TRANSPARENT:
                path.append(s["kind"])
            continue
        out[space].append((f"head_layers.{i}.weight", tuple(path)))
        space, path = f"head.{i}", []
        out[space] = []
    out[space].append(("head.weight", tuple(path)))
    if model.attn_proj is not None:
        out[last].append(("attn_proj.weight", ()))
    return out


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

"""Physically remove pruned hidden units: a smaller :class:`RNNClassifier` with the same outputs.

A unit (of a recurrent layer, or of one of the head's hidden Linears) can be removed exactly
when nothing it computes is observed. Its output is exactly 0 when all its incoming weights
are (its rows in every gate block of ``ih``, ``hh`` and both biases: an LSTM unit then has
i=f=o=0.5, g=0, so c and h stay 0; a GRU unit has n=0 and h_t = 0.5·h_{t-1} = 0 from h_0 = 0;
a head unit's row and bias). On the way to each consumer of its output (its column of ``hh``,
the next layer's input columns, the attention projection, the head's next Linear) it may pass
layers (a gap's norm or activation, the head's), so for every consumer one of these holds:

* its output is 0 and every layer on the way keeps 0 at 0 (ReLU, tanh, dropout...), so the
  consumer reads 0; or
* the consumer's columns for it are 0, and every layer on the way treats features one by one
  (BatchNorm, any activation), or is a LayerNorm that reads the unit's 0 (compaction keeps
  counting the removed zeros in its statistics: :class:`~autoprune.models.blocks.LayerNorm`).

Hidden-unit pruning produces exactly such units; unstructured pruning may too, by chance.
Compaction repeats until no more units can go, keeps at least one unit per group, and folds
any masks in (the result has no mask buffers).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.groups import ModelGroups, UnitLayer, observes_nothing

__all__ = ["compact", "removable_units"]


def _incoming(layer: UnitLayer, params: Dict[str, Tensor]) -> Tensor:
    """Per unit, whether any incoming weight (or bias) is non-zero."""
    h, g = layer.hidden, layer.gates
    out = torch.zeros(h, dtype=torch.bool)
    for pname in layer.row_params:
        out |= (params[pname].reshape(g, h, -1) != 0).any(dim=2).any(dim=0)
    return out


def removable_units(model: RNNClassifier) -> Dict[str, Tensor]:
    """For each hidden-unit group, a bool ``keep`` vector: False where the unit is dead."""
    groups = ModelGroups(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    out: Dict[str, Tensor] = {}
    for layer in groups.iter_layers():
        h, g = layer.hidden, layer.gates
        zero = ~_incoming(layer, params)
        removable = (zero | (params[layer.hh] == 0).all(dim=0)) if layer.hh is not None else torch.ones(h, dtype=torch.bool)
        for c in layer.consumers:
            cols_dead = (params[c.param][:, c.offset : c.offset + h] == 0).all(dim=0)
            removable = removable & observes_nothing(zero, cols_dead, c.path)
        keep = ~removable
        if not keep.any():
            # every unit is dead: keep the one with the largest incoming norm so the layer still exists
            norms = sum(params[p].reshape(g, h, -1).pow(2).sum(dim=(0, 2)) for p in layer.row_params)
            keep[int(torch.argmax(norms))] = True
        out[layer.name] = keep
    return out


def _kept_features(groups: ModelGroups, keep: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Space (``rnn.<l>``, ``head.<i>``) → indices of its features that stay (both directions of a layer concatenated)."""
    parts: Dict[str, List[Tensor]] = {}
    for layer in sorted(groups.iter_layers(), key=lambda u: (u.space, u.offset)):
        parts.setdefault(layer.space, []).append(torch.nonzero(keep[layer.name]).flatten() + layer.offset)
    return {space: torch.cat(idx) for space, idx in parts.items()}


def _new_spec(model: RNNClassifier, groups: ModelGroups, keep: Dict[str, Tensor], kept: Dict[str, Tensor]):
    """The compacted architecture: fewer units, and LayerNorms that count the removed zeros."""
    spec = model.spec
    hidden = [[0] * len(sizes) for sizes in model.hidden_sizes]
    heads: Dict[str, int] = {}
    for layer in groups.iter_layers():
        if layer.kind == "rnn":
            hidden[layer.layer][layer.direction] = int(keep[layer.name].sum())
        else:
            heads[layer.name] = int(keep[layer.name].sum())
    widths = {space: groups.space_width(space) for space in kept}

    def counted(prefix: str, s: dict) -> dict:
        space = groups.reads.get(prefix)
        if s["kind"] != "layernorm" or space is None:
            return dict(s)
        return dict(s, zeros=int(s.get("zeros", 0)) + widths[space] - len(kept[space]))

    between = [[counted(f"between.{l + 1}.{j}", s) for j, s in enumerate(gap)] for l, gap in enumerate(spec.between)]
    head_layers = [counted(f"head_layers.{i}", s) for i, s in enumerate(spec.head_layers)]
    return replace(spec, hidden_sizes=hidden, between=between, head_layers=head_layers).with_head_units(heads)


def _selections(groups: ModelGroups, keep: Dict[str, Tensor], kept: Dict[str, Tensor]) -> Dict[str, Tuple[Tensor | None, Tensor | None]]:
    """State dict key → (rows kept, columns kept): a unit's rows, the columns (or a norm's entries) of the features it reads."""
    out: Dict[str, Tuple[Tensor | None, Tensor | None]] = {}
    for layer in groups.iter_layers():
        idx = torch.nonzero(keep[layer.name]).flatten()
        rows = torch.cat([idx + gi * layer.hidden for gi in range(layer.gates)])
        for pname in layer.row_params:
            out[pname] = (rows, None)
        if layer.hh is not None:
            out[layer.hh] = (rows, idx)
    state = groups.model.state_dict()
    for prefix, space in groups.reads.items():
        if space is None:
            continue
        cols = kept[space]
        weight = f"{prefix}.weight_ih_l0" if prefix.startswith("rnn.") else f"{prefix}.weight"
        if weight in state and state[weight].dim() == 2:  # a reader: its input columns
            out[weight] = (out.get(weight, (None, None))[0], cols)
            continue
        for key in ("weight", "bias", "running_mean", "running_var"):  # a norm on the way: its entries
            if f"{prefix}.{key}" in state:
                out[f"{prefix}.{key}"] = (cols, None)
    return out


def _compact_once(model: RNNClassifier) -> tuple[RNNClassifier, bool]:
    keep = removable_units(model)
    if all(bool(k.all()) for k in keep.values()):
        return model, False
    groups = ModelGroups(model)
    kept = _kept_features(groups, keep)
    new = RNNClassifier(_new_spec(model, groups, keep, kept))
    select = _selections(groups, keep, kept)
    src = model.state_dict()
    out = {}
    for key in new.state_dict():
        t = src[key].detach()
        rows, cols = select.get(key, (None, None))
        if rows is not None:
            t = t.index_select(0, rows)
        if cols is not None:
            t = t.index_select(1, cols)
        out[key] = t
    new.load_state_dict(out)
    return new, True


def compact(model: RNNClassifier) -> RNNClassifier:
    """Return a physically smaller copy of ``model`` without its dead hidden units.

    The copy has the same class, each layer and direction with its own hidden size, no
    mask buffers, and the same outputs as ``model`` (up to float rounding). The input
    model is not changed. Returned in eval mode.
    """
    current = _plain_copy(model)
    changed = True
    while changed:
        current, changed = _compact_once(current)
    return current.eval()


def _plain_copy(model: RNNClassifier) -> RNNClassifier:
    """A copy with masks folded in and no extra buffers (a norm's running statistics are kept)."""
    new = RNNClassifier(copy.deepcopy(model.spec))
    src = model.state_dict()
    new.load_state_dict({key: src[key].detach().clone() for key in new.state_dict()})
    return new

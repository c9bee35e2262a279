"""Physically remove pruned hidden units: a smaller :class:`RNNClassifier` with the same outputs.

A unit can be removed exactly when nothing it computes is observed:

* all its incoming weights (its rows in every gate block of ``ih``, ``hh`` and both
  biases) are zero: an LSTM unit then has i=f=o=0.5, g=0, so c and h stay 0; a GRU unit
  has n=0 and h_t = 0.5·h_{t-1} = 0 from h_0 = 0; or
* all its outgoing weights (its column of ``hh`` and its input columns in the next layer,
  the head and the attention projection) are zero.

Hidden-unit pruning produces exactly such units; unstructured pruning may too, by
chance. Compaction repeats until no more units can go, keeps at least one unit per
layer and direction, and folds any masks in (the result has no mask buffers).
"""

from __future__ import annotations

import copy
from typing import Dict, List

import torch
from torch import Tensor

from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.groups import ModelGroups

__all__ = ["compact", "removable_units"]


def removable_units(model: RNNClassifier) -> Dict[str, Tensor]:
    """For each hidden-unit layer, a bool ``keep`` vector: False where the unit is dead."""
    groups = ModelGroups(model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    out: Dict[str, Tensor] = {}
    for layer in groups.iter_layers():
        h, g = layer.hidden, layer.gates
        incoming = torch.zeros(h, dtype=torch.bool)
        for pname in layer.row_params:
            incoming |= (params[pname].reshape(g, h, -1) != 0).any(dim=2).any(dim=0)
        outgoing = (params[layer.hh] != 0).any(dim=0)
        for c in layer.consumers:
            outgoing |= (params[c.param][:, c.offset : c.offset + h] != 0).any(dim=0)
        keep = incoming & outgoing
        if not keep.any():
            # every unit is dead: keep the one with the largest incoming norm so the layer still exists
            norms = sum(params[p].reshape(g, h, -1).pow(2).sum(dim=(0, 2)) for p in layer.row_params)
            keep[int(torch.argmax(norms))] = True
        out[layer.name] = keep
    return out


def _compact_once(model: RNNClassifier) -> tuple[RNNClassifier, bool]:
    keep = removable_units(model)
    groups = ModelGroups(model)
    if all(bool(k.all()) for k in keep.values()):
        return model, False
    spec = model.spec
    layers = list(groups.iter_layers())
    new_hidden: List[List[int]] = [[0] * len(sizes) for sizes in model.hidden_sizes]
    for layer in layers:
        new_hidden[layer.layer][layer.direction] = int(keep[layer.name].sum())
    new_spec = ArchSpec(spec.cell, spec.input_size, new_hidden, spec.n_classes, spec.pooling, spec.attention_dim, spec.dropout)
    new = RNNClassifier(new_spec)
    src = {k: v.detach() for k, v in model.named_parameters()}
    dst = dict(new.named_parameters())

    # kept columns of each layer's concatenated output
    out_cols: List[Tensor] = []
    for l, sizes in enumerate(model.hidden_sizes):
        cols, offset = [], 0
        for d, h in enumerate(sizes):
            name = next(x.name for x in layers if x.layer == l and x.direction == d)
            cols.append(torch.nonzero(keep[name]).flatten() + offset)
            offset += h
        out_cols.append(torch.cat(cols))

    with torch.no_grad():
        for layer in layers:
            h, g = layer.hidden, layer.gates
            idx = torch.nonzero(keep[layer.name]).flatten()
            rows = torch.cat([idx + gi * h for gi in range(g)])
            in_cols = out_cols[layer.layer - 1] if layer.layer > 0 else torch.arange(spec.input_size)
            p = layer.prefix
            dst[f"{p}.weight_ih_l0"].copy_(src[f"{p}.weight_ih_l0"][rows][:, in_cols])
            dst[f"{p}.weight_hh_l0"].copy_(src[f"{p}.weight_hh_l0"][rows][:, idx])
            dst[f"{p}.bias_ih_l0"].copy_(src[f"{p}.bias_ih_l0"][rows])
            dst[f"{p}.bias_hh_l0"].copy_(src[f"{p}.bias_hh_l0"][rows])
        last = out_cols[-1]
        dst["head.weight"].copy_(src["head.weight"][:, last])
        dst["head.bias"].copy_(src["head.bias"])
        if model.attn_proj is not None:
            dst["attn_proj.weight"].copy_(src["attn_proj.weight"][:, last])
            dst["attn_proj.bias"].copy_(src["attn_proj.bias"])
            dst["attn_score.weight"].copy_(src["attn_score.weight"])
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
    """A copy with masks folded in and no extra buffers."""
    new = RNNClassifier(copy.deepcopy(model.spec))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in new.named_parameters():
            p.copy_(params[name].detach())
    return new

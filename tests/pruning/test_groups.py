"""ModelGroups: group names, hidden-unit layers, resolve_sparsity."""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.groups import ModelGroups


def _groups(cell="lstm", layers=2, bi=False, hidden=4, pooling="last") -> ModelGroups:
    dirs = 2 if bi else 1
    return ModelGroups(RNNClassifier(ArchSpec(cell, 3, [[hidden] * dirs] * layers, 2, pooling=pooling)))


def _layer_names(layers: int, bi: bool) -> list[str]:
    return [f"rnn.{l}" + (f".{d}" if bi else "") for l in range(layers) for d in (("fwd", "bwd") if bi else ("",))]


@pytest.mark.parametrize("bi", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,gates", [("lstm", ("i", "f", "g", "o")), ("gru", ("r", "z", "n"))])
def test_group_names(cell, gates, layers, bi):
    g = _groups(cell, layers, bi)
    lnames = _layer_names(layers, bi)
    assert list(g.layers) == lnames
    assert list(g.matrices) == [f"{l}.{k}" for l in lnames for k in ("ih", "hh")] + ["head"]
    assert list(g.gate_blocks) == [f"{l}.{k}.{gate}" for l in lnames for k in ("ih", "hh") for gate in gates]
    assert g.rnn_matrices == [m for m in g.matrices if m != "head"]
    # every matrix resolves to a real parameter, gate blocks to consecutive row slices of it
    for name, ref in g.matrices.items():
        assert ref.param in g.params, name
    h = 4
    for l, lname in enumerate(lnames):
        ref = g.gate_blocks[f"{lname}.hh.{gates[1]}"]
        assert ref.rows == (h, 2 * h)
        assert ref.view(g.params[ref.param]).shape == (h, h)
    valid_hu = g.valid_names("hidden_unit")
    assert set(lnames) <= set(valid_hu)
    assert "head" not in valid_hu and not any(n.endswith((".ih", ".hh")) for n in valid_hu)
    if bi:
        assert {f"rnn.{l}" for l in range(layers)} <= set(valid_hu)  # a whole layer, both directions


def test_unit_layers_and_consumers_bidirectional_attention():
    g = _groups("gru", 2, bi=True, hidden=5, pooling="attention")
    bwd1 = g.layers["rnn.1.bwd"]
    assert (bwd1.layer, bwd1.direction, bwd1.hidden, bwd1.gates, bwd1.prefix) == (1, 1, 5, 3, "rnn.1.dirs.1")
    assert {(c.param, c.offset) for c in bwd1.consumers} == {("head.weight", 5), ("attn_proj.weight", 5)}
    fwd0 = g.layers["rnn.0.fwd"]
    assert {(c.param, c.offset) for c in fwd0.consumers} == {
        ("rnn.1.dirs.0.weight_ih_l0", 0),
        ("rnn.1.dirs.1.weight_ih_l0", 0),
    }
    # a unit's group: 3 gate rows of ih (3 inputs) and hh (5) plus 2x3 biases, its hh column,
    # one input column in each of the two next-layer directions (3 gates x 5 rows each)
    sizes = g.unit_group_sizes(fwd0)
    assert sizes.tolist() == [3 * 3 + 3 * 5 + 3 + 3 + 15 + 2 * 15] * 5


def test_resolve_single_number_covers_rnn_matrices_not_head():
    g = _groups("lstm", 2)
    assert g.resolve_sparsity(0.5, "unstructured") == {"rnn.0.ih": 0.5, "rnn.0.hh": 0.5, "rnn.1.ih": 0.5, "rnn.1.hh": 0.5}
    assert g.resolve_sparsity(0.25, "hidden_unit") == {"rnn.0": 0.25, "rnn.1": 0.25}
    assert g.resolve_sparsity(0.0, "unstructured") == {}


def test_resolve_most_specific_name_wins():
    g = _groups("lstm", 2, bi=True)
    out = g.resolve_sparsity(
        {"rnn.0": 0.1, "rnn.0.fwd": 0.2, "rnn.0.fwd.hh": 0.3, "rnn.0.fwd.hh.f": 0.4, "head": 0.6},
        "unstructured",
    )
    assert out == {
        "rnn.0.fwd.ih": 0.2,
        # one gate named: the matrix is split into gate blocks, the rest take the matrix value
        "rnn.0.fwd.hh.i": 0.3,
        "rnn.0.fwd.hh.f": 0.4,
        "rnn.0.fwd.hh.g": 0.3,
        "rnn.0.fwd.hh.o": 0.3,
        "rnn.0.bwd.ih": 0.1,
        "rnn.0.bwd.hh": 0.1,
        "head": 0.6,
    }
    hu = g.resolve_sparsity({"rnn.1": 0.5, "rnn.1.bwd": 0.25, "rnn.0.fwd": 0.75}, "hidden_unit")
    assert hu == {"rnn.0.fwd": 0.75, "rnn.1.fwd": 0.5, "rnn.1.bwd": 0.25}


def test_resolve_unknown_group_lists_valid_names():
    g = _groups("gru", 1)
    with pytest.raises(ConfigError, match=r"unknown group 'rnn\.0\.hh\.i' for unstructured pruning of this model; valid names: .*rnn\.0\.hh\.r, rnn\.0\.hh\.z, rnn\.0\.hh\.n"):
        g.resolve_sparsity({"rnn.0.hh.i": 0.5}, "unstructured")
    with pytest.raises(ConfigError, match=r"unknown group 'rnn\.3' .*valid names: rnn\.0$"):
        g.resolve_sparsity({"rnn.3": 0.5}, "hidden_unit")
    with pytest.raises(ConfigError, match=r"unknown group 'head' for hidden_unit pruning"):
        g.resolve_sparsity({"head": 0.5}, "hidden_unit")


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_resolve_sparsity_outside_unit_interval(value):
    g = _groups("lstm", 1)
    with pytest.raises(ConfigError, match=rf"sparsity\.rnn\.0\.ih: must be a number in \[0, 1\), got {value}"):
        g.resolve_sparsity({"rnn.0.ih": value}, "unstructured")
    with pytest.raises(ConfigError, match=r"sparsity\.\*: must be a number in \[0, 1\)"):
        g.resolve_sparsity(value, "hidden_unit")


def test_unit_reduce_and_apply_unit_mask_agree():
    g = _groups("lstm", 2, hidden=3)
    layer = g.layers["rnn.0"]
    masks = {p: torch.ones_like(g.params[p], dtype=torch.bool) for p in g.params}
    keep = torch.tensor([True, False, True])
    g.apply_unit_mask(layer, keep, masks)
    cleared = {p: (~m).float() for p, m in masks.items()}
    per_unit = g.unit_reduce(layer, cleared)
    # unit 1's whole group is cleared; units 0 and 2 only share hh entries with it:
    # their 4 gate rows lose column 1, and column 1 loses unit 1's 4 gate rows
    assert per_unit.tolist() == [8.0, float(g.unit_group_sizes(layer)[1]), 8.0]
    assert not masks["rnn.0.dirs.0.weight_ih_l0"].view(4, 3, -1)[:, 1].any()
    assert masks["rnn.0.dirs.0.weight_ih_l0"].view(4, 3, -1)[:, [0, 2]].all()
    assert not masks["rnn.0.dirs.0.weight_hh_l0"][:, 1].any()
    assert not masks["rnn.1.dirs.0.weight_ih_l0"][:, 1].any()
    assert masks["head.weight"].all()  # rnn.0 feeds rnn.1, not the head

"""compact(): removing dead hidden units keeps the outputs and removes exactly those units."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.compact import compact, removable_units
from autoprune.pruning.groups import ModelGroups


@st.composite
def masked_models(draw):
    cell = draw(st.sampled_from(["lstm", "gru"]))
    layers = draw(st.integers(1, 3))
    dirs = draw(st.sampled_from([1, 2]))
    pooling = draw(st.sampled_from(["last", "attention"]))
    hidden = [[draw(st.integers(1, 6)) for _ in range(dirs)] for _ in range(layers)]
    keeps = [[draw(st.lists(st.booleans(), min_size=h, max_size=h)) for h in sizes] for sizes in hidden]
    seed = draw(st.integers(0, 2**16))
    return cell, hidden, pooling, keeps, seed


def _prune_units(model: RNNClassifier, keeps) -> None:
    """Zero every weight of the units whose keep flag is False (what hidden-unit pruning does)."""
    groups = ModelGroups(model)
    masks = {p: torch.ones_like(t, dtype=torch.bool) for p, t in groups.params.items()}
    for layer in groups.iter_layers():
        groups.apply_unit_mask(layer, torch.tensor(keeps[layer.layer][layer.direction]), masks)
    with torch.no_grad():
        for p, t in groups.params.items():
            t.mul_(masks[p])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masked_models())
def test_compaction_preserves_outputs_and_removes_exactly_the_masked_units(case):
    cell, hidden, pooling, keeps, seed = case
    torch.manual_seed(seed)
    model = RNNClassifier(ArchSpec(cell, 3, hidden, 4, pooling=pooling, attention_dim=5)).eval()
    _prune_units(model, keeps)
    small = compact(model)
    # every layer keeps at least one unit (a dead one when all were pruned)
    assert small.hidden_sizes == [[max(1, sum(k)) for k in layer] for layer in keeps]
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(4, 7, 3)
    for i, n in enumerate(lengths):
        x[i, int(n) :] = 50.0  # garbage padding
    with torch.no_grad():
        torch.testing.assert_close(small(x, lengths), model(x, lengths), atol=1e-5, rtol=0)
    # the units that stay are the kept ones, in order: compare the first layer's rows
    k0 = torch.tensor(keeps[0][0])
    if k0.any():
        h, g = hidden[0][0], (4 if cell == "lstm" else 3)
        big = model.rnn[0].dirs[0].weight_ih_l0.detach().view(g, h, 3)[:, k0]
        assert torch.equal(small.rnn[0].dirs[0].weight_ih_l0.detach().view(g, int(k0.sum()), 3), big)
    # compaction does not change its input, and compacting again changes nothing
    assert model.hidden_sizes == hidden
    again = compact(small)
    assert again.hidden_sizes == small.hidden_sizes


def test_units_with_only_outgoing_weights_zero_are_removed_too():
    torch.manual_seed(0)
    model = RNNClassifier(ArchSpec("lstm", 3, [[5]], 2)).eval()
    with torch.no_grad():
        model.rnn[0].dirs[0].weight_hh_l0[:, 2] = 0  # unit 2's recurrent column
        model.head.weight[:, 2] = 0  # and its head column: nothing observes it
    assert removable_units(model)["rnn.0"].tolist() == [True, True, False, True, True]
    small = compact(model)
    assert small.hidden_sizes == [[4]]
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        torch.testing.assert_close(small(x, torch.tensor([6, 4])), model(x, torch.tensor([6, 4])), atol=1e-6, rtol=0)


def test_dense_model_compacts_to_itself():
    model = RNNClassifier(ArchSpec("gru", 3, [[4, 3], [2, 2]], 2, pooling="attention"))
    small = compact(model)
    assert small.hidden_sizes == [[4, 3], [2, 2]]
    assert not small.training
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), small.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)

"""The wider family (issue 20), one case per member: front-end kinds, poolings (none included), MLP heads,
stacked recurrent layers with norms between, token inputs. For each: padding never changes an output,
hidden-unit pruning through the real callback (every recurrent layer and every head layer) compacts to a
physically smaller model whose logits are within 1e-5 of the masked one's, and the scripted model agrees."""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.models.arch import ArchSpec
from autoprune.models.fitting import RNNModule
from autoprune.models.rnn import RNNClassifier, flat_outputs
from autoprune.pruning.callback import PruningCallback
from autoprune.pruning.compact import compact
from autoprune.pruning.groups import ModelGroups
from autoprune.pruning.policy import policy_from_dict
from autoprune.trial.run import planned_arch

LIN = {"kind": "linear", "bias": True}
CONV = {"kind": "conv1d", "stride": 1, "padding": 0, "dilation": 1, "bias": True}
BN = {"kind": "batchnorm", "eps": 1e-5, "momentum": 0.1}
LN = {"kind": "layernorm", "eps": 1e-5, "zeros": 0}

MEMBERS = {
    # front-end kinds
    "conv1d-strided-bn-relu": ArchSpec("gru", 3, [[10]], 4, pooling="max", front=[{**CONV, "out": 6, "kernel": 3, "stride": 2, "padding": 1}, BN, {"kind": "relu"}]),
    "conv1d-dilated-then-linear": ArchSpec("lstm", 3, [[9]], 3, front=[{**CONV, "out": 5, "kernel": 3, "dilation": 2, "padding": 2}, {"kind": "elu"}, {**LIN, "out": 7}]),
    "linear-layernorm-gelu": ArchSpec("lstm", 3, [[8]], 3, pooling="last", front=[{**LIN, "out": 6}, LN, {"kind": "gelu"}, {"kind": "dropout", "p": 0.2}]),
    "tokens-embedding": ArchSpec("lstm", 12, [[9]], 3, pooling="mean", front=[{"kind": "embedding", "dim": 5, "padding_idx": 0}, {"kind": "dropout", "p": 0.1}]),
    # poolings
    "attention-bidirectional": ArchSpec("gru", 3, [[7, 6]], 4, pooling="attention", attention_dim=5),
    "last-output-bidirectional": ArchSpec("gru", 3, [[6, 7], [5, 4]], 2, pooling="last_output"),
    "none-per-frame": ArchSpec("lstm", 3, [[8, 8]], 5, pooling="none", front=[{**CONV, "out": 6, "kernel": 5, "padding": 2}, {"kind": "relu"}],
                               head_layers=[{**LIN, "out": 7}, {"kind": "tanh"}]),
    # MLP heads
    "mlp-head": ArchSpec("lstm", 3, [[9]], 3, pooling="mean", head_layers=[{**LIN, "out": 8}, {"kind": "relu"}, {"kind": "dropout", "p": 0.3}, {**LIN, "out": 6, "bias": False}, {"kind": "sigmoid"}]),
    "mlp-head-with-norms": ArchSpec("gru", 3, [[8]], 3, pooling="attention", attention_dim=4, head_layers=[LN, {**LIN, "out": 7}, BN, {"kind": "silu"}, {**LIN, "out": 5}]),
    # stacked recurrent modules with norms, activations, dropout between them
    "stacked-layernorm-dropout": ArchSpec("lstm", 3, [[8], [7], [6]], 3, pooling="last", between=[[LN, {"kind": "dropout", "p": 0.2}], [BN, {"kind": "tanh"}]]),
    "stacked-bidirectional-sigmoid": ArchSpec("lstm", 3, [[6, 6], [5, 5]], 3, pooling="max", between=[[{"kind": "sigmoid"}, {"kind": "dropout", "p": 0.1}]]),
}


def _randomise_norms(model: RNNClassifier) -> None:
    """Norms with non-trivial statistics and affine parameters (their defaults would hide slicing mistakes)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
                mod.weight.uniform_(0.5, 2)
                mod.bias.uniform_(-1, 1)


def _batch(spec: ArchSpec, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 4, 1, 7])
    steps = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    if spec.tokens:
        x = torch.randint(1, spec.input_size, (4, 9), generator=g)
        return x.masked_fill(~steps, 0), lengths
    x = torch.randn(4, 9, spec.input_size, generator=g)
    return x * steps.unsqueeze(2), lengths


@pytest.mark.parametrize("member", list(MEMBERS))
def test_padding_never_changes_an_output_and_script_agrees(member):
    spec = MEMBERS[member]
    torch.manual_seed(0)
    model = RNNClassifier(spec).eval()
    _randomise_norms(model)
    x, lengths = _batch(spec)
    with torch.no_grad():
        batched = flat_outputs(model(x, lengths), lengths)
        alone = torch.cat([flat_outputs(model(x[i : i + 1, : int(n)], lengths[i : i + 1]), lengths[i : i + 1]) for i, n in enumerate(lengths)])
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.jit.script(model)(x, lengths), model(x, lengths), atol=1e-6, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == spec.param_count()
    assert (model(x, lengths).dim() == 3) == spec.per_frame


@pytest.mark.parametrize("member", list(MEMBERS))
def test_hidden_unit_pruning_compacts_exactly_to_smaller_shapes(member):
    spec = MEMBERS[member]
    torch.manual_seed(1)
    model = RNNClassifier(spec)
    _randomise_norms(model)
    groups = ModelGroups(model)
    heads = [n for n, layer in groups.layers.items() if layer.kind == "head"]
    assert heads == list(spec.head_units())  # every hidden Linear of the head is a unit group of its own
    sparsity = {name: 0.4 for name in groups.rnn_layers()} | {name: 0.5 for name in heads}
    policy = {"method": "magnitude", "granularity": "hidden_unit", "sparsity": sparsity, "schedule": {"kind": "one_shot"}, "finetune": {"epochs": 1}}
    pruner = PruningCallback(policy_from_dict(policy), seed=0)
    pruner.setup(None, RNNModule(model), "fit")  # the callback's setup reads pl_module.model only
    pruner.prune_to(model, 1.0, [])
    model.eval()
    small = compact(model)
    x, lengths = _batch(spec, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(small(x, lengths), model(x, lengths), atol=1e-5, rtol=0)
    # physically smaller: the widths the policy planned, fewer parameters, narrower matrices
    planned = planned_arch(spec, policy_from_dict(policy))
    assert small.hidden_sizes == planned.hidden_sizes
    assert small.spec.head_units() == planned.head_units()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    for l, sizes in enumerate(small.hidden_sizes):
        for d, h in enumerate(sizes):
            assert small.rnn[l].dirs[d].weight_hh_l0.shape[1] == h < model.hidden_sizes[l][d]
    assert small.head.weight.shape[1] == small.spec.head_widths()[-1] < model.head.weight.shape[1]
    assert not any(name.endswith("_mask") for name, _ in small.named_buffers())


def test_units_a_layernorm_would_still_count_are_not_a_unit_group():
    """A BatchNorm (or sigmoid) turns a removed unit's 0 into another value that a LayerNorm after it counts:
    that layer's units cannot go exactly; naming them is refused in one line, one number for all skips them."""
    model = RNNClassifier(ArchSpec("lstm", 3, [[6], [5]], 3, between=[[BN, LN]], head_layers=[{**LIN, "out": 4}, {"kind": "sigmoid"}, LN, {**LIN, "out": 4}]))
    groups = ModelGroups(model)
    assert groups.valid_names("hidden_unit") == ["rnn.1", "head.3"]  # rnn.0 feeds BN -> LN; head.0's sigmoid feeds a LayerNorm
    assert groups.resolve_sparsity(0.5, "hidden_unit") == {"rnn.1": 0.5}
    with pytest.raises(ConfigError, match=r"^sparsity: the units of rnn.0 cannot be removed exactly: a LayerNorm reads its outputs after a layer "
                       r"that turns a removed unit's 0 into another value \(batchnorm -> layernorm\); prune its weights unstructured instead$"):
        groups.resolve_sparsity({"rnn.0": 0.5}, "hidden_unit")

"""Contract every registered pruning method must meet, for every granularity it supports.

Iterates the registry: a newly registered method is tested without touching this file.
"""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.models.fitting import make_trainer
from autoprune.models.fitting import RNNModule
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.callback import PruningCallback, mask_buffers
from autoprune.pruning.compact import compact
from autoprune.pruning.groups import ModelGroups
from autoprune.pruning.methods import GRANULARITIES, METHODS, get_method
from autoprune.pruning.policy import policy_from_dict
from autoprune.tasks import build_task

SUPPORTED = [(m, g) for m, cls in METHODS.items() for g in cls.granularities]
UNSUPPORTED = [(m, g) for m, cls in METHODS.items() for g in GRANULARITIES if g not in cls.granularities]

#: (cell, hidden_sizes, pooling, unstructured sparsity mapping with a gate, a layer and the head)
ARCHS = {
    "lstm-2l": ("lstm", [[16], [16]], "last", {"rnn.0": 0.6, "rnn.0.hh.f": 0.8, "rnn.1.ih": 0.3, "head": 0.4}),
    "gru-bi-attn": ("gru", [[16, 16]], "attention", {"rnn.0.fwd": 0.7, "rnn.0.bwd.hh.z": 0.9, "rnn.0.bwd.ih": 0.2}),
    "lstm-bi-2l": ("lstm", [[8, 8], [8, 8]], "last", {"rnn.1": 0.5, "rnn.0.bwd.ih.g": 0.75, "rnn.0.fwd": 0.25}),
}


@pytest.fixture(scope="module")
def datamodule():
    dm = build_task("synthetic:sines", seed=0, batch_size=32, options={"n_train": 120, "n_test": 30, "max_len": 12})
    dm.setup("fit")
    return dm


def test_registry_is_not_empty():
    assert {"magnitude", "taylor", "confidence", "l1", "group_lasso", "random"} <= set(METHODS)
    assert SUPPORTED and all(METHODS[m].granularities for m in METHODS)


def _unit_alive(groups: ModelGroups, layer) -> torch.Tensor:
    """Units with any non-zero incoming weight (rows of ih, hh or biases)."""
    h, g = layer.hidden, layer.gates
    alive = torch.zeros(h, dtype=torch.bool)
    for p in layer.row_params:
        alive |= (groups.params[p].detach().reshape(g, h, -1) != 0).any(dim=2).any(dim=0)
    return alive


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("method,granularity", SUPPORTED, ids=[f"{m}-{g}" for m, g in SUPPORTED])
def test_method_contract(method, granularity, arch, datamodule):
    cell, hidden, pooling, mapping = ARCHS[arch]
    torch.manual_seed(0)
    model = RNNClassifier(ArchSpec(cell, datamodule.n_channels, hidden, datamodule.n_classes, pooling=pooling, attention_dim=8))
    sparsity = 0.5 if granularity == "hidden_unit" else mapping
    policy = policy_from_dict(
        {
            "method": method,
            "granularity": granularity,
            "sparsity": sparsity,
            "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": 2},
            "finetune": {"epochs": 3, "lr": 0.01},
            "regularization": 1e-3,
            "calibration_batches": 2,
        }
    )
    pruner = PruningCallback(policy, seed=0)
    module = RNNModule(model, lr=0.01)
    make_trainer(3, [pruner], grad_clip_value=1.0).fit(module, datamodule=datamodule)
    assert pruner.reached_target()
    assert [h["epoch"] for h in pruner.history] == [0, 1, 2]
    assert pruner.history[-1]["ramp"] == 1.0
    if method in ("l1", "group_lasso"):
        assert pruner.method.regularizer(pruner.groups, list(pruner.targets)) is not None
    assert module.regularizers == []  # removed again at teardown

    groups = ModelGroups(model)
    masks = mask_buffers(model)
    assert masks, "the callback registers mask buffers"
    # pruned weights are exactly zero
    for pname, mask in masks.items():
        assert mask.dtype == torch.bool
        assert torch.all(groups.params[pname].detach()[~mask] == 0), pname

    if granularity == "unstructured":
        assert set(pruner.targets) == set(groups.resolve_sparsity(mapping, "unstructured"))
        for target, requested in pruner.targets.items():
            ref = groups.target_ref(target)
            achieved = float((ref.view(groups.params[ref.param].detach()) == 0).float().mean())
            assert abs(achieved - requested) <= 0.01, (target, achieved, requested)
            assert abs(float((~ref.view(masks[ref.param])).float().mean()) - requested) <= 0.01
    else:
        assert set(pruner.targets) == set(groups.layers)
        for lname, layer in groups.layers.items():
            alive = _unit_alive(groups, layer)
            achieved = 1.0 - float(alive.float().mean())
            assert abs(achieved - 0.5) <= 0.01, (lname, achieved)
            dead = ~alive
            # a dead unit's outgoing weights are zero too: its hh column and its consumer columns
            assert torch.all(groups.params[layer.hh].detach()[:, dead] == 0)
            for c in layer.consumers:
                cols = torch.nonzero(dead).flatten() + c.offset
                assert torch.all(groups.params[c.param].detach()[:, cols] == 0), c.param

    small = compact(model)
    if granularity == "hidden_unit":
        assert small.hidden_sizes == [[h // 2 for h in sizes] for sizes in hidden]
    else:
        assert all(a <= b for la, lb in zip(small.hidden_sizes, hidden) for a, b in zip(la, lb))
    assert not any(name.endswith("_mask") for name, _ in small.named_buffers())
    x, lengths, _ = datamodule.tensors("val")
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x, lengths), model(x, lengths), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,granularity", UNSUPPORTED, ids=[f"{m}-{g}" for m, g in UNSUPPORTED])
def test_unsupported_pairs_raise(method, granularity):
    pattern = rf"method '{method}' does not support granularity '{granularity}' \(supports: "
    with pytest.raises(ConfigError, match=pattern):
        get_method(method, granularity)
    with pytest.raises(ConfigError, match=pattern):
        policy_from_dict({"method": method, "granularity": granularity})

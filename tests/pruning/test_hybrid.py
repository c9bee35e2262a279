"""Hybrid policies: hidden units removed, then the remaining weights pruned unstructured, then int8.

Compaction, size accounting and int8 handle the combination: the compacted model has the
planned hidden sizes, each hybrid target keeps (1 - weight_sparsity) of the weights the units
left, its outputs equal the masked model's, and its size counts the sparse encoding.
"""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.models.fitting import RNNModule, make_trainer
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.callback import PruningCallback
from autoprune.pruning.compact import compact
from autoprune.pruning.policy import policy_from_dict
from autoprune.runtime.measure import encoded_bytes, size_bytes, tensor_size_bytes
from autoprune.runtime.quantize import int8_size_bytes
from autoprune.tasks import build_task


@pytest.fixture(scope="module")
def datamodule():
    dm = build_task("synthetic:sines", seed=0, batch_size=32, options={"n_train": 96, "n_test": 24, "max_len": 10})
    dm.setup("fit")
    return dm


def _hybrid(units, weights, method="magnitude", epochs=3):
    return policy_from_dict({
        "method": method, "granularity": "hidden_unit", "sparsity": units, "weight_sparsity": weights,
        "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": epochs - 1}, "finetune": {"epochs": epochs, "lr": 0.003},
    })


@pytest.mark.parametrize("cell, bidirectional, method", [("lstm", False, "magnitude"), ("gru", True, "taylor"), ("lstm", True, "taylor")])
def test_hybrid_prunes_units_then_the_remaining_weights(datamodule, cell, bidirectional, method):
    torch.manual_seed(0)
    dirs = 2 if bidirectional else 1
    model = RNNClassifier(ArchSpec(cell, 3, [[16] * dirs, [12] * dirs], 3))
    policy = _hybrid({"rnn.0": 0.5, "rnn.1": 0.25}, {"rnn.0.hh": 0.6, "rnn.1.ih": 0.5}, method)
    pruner = PruningCallback(policy, seed=0)
    module = RNNModule(model, lr=0.003)
    make_trainer(3, [pruner], limit_train_batches=2, limit_val_batches=1).fit(module, datamodule=datamodule)
    assert pruner.reached_target()
    small = compact(model)
    assert small.hidden_sizes == [[8] * dirs, [9] * dirs]  # 16 - round(0.5 * 16), 12 - round(0.25 * 12)
    params = dict(small.named_parameters())
    for d in range(dirs):
        hh = params[f"rnn.0.dirs.{d}.weight_hh_l0"]  # every weight left by the units is in it after compaction
        assert int((hh == 0).sum()) == round(0.6 * hh.numel())
        ih = params[f"rnn.1.dirs.{d}.weight_ih_l0"]
        assert int((ih == 0).sum()) == round(0.5 * ih.numel())
        assert int((params[f"rnn.0.dirs.{d}.weight_ih_l0"] == 0).sum()) == 0  # not a weight target
    x, lengths, _ = datamodule.tensors("test")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(small(x, lengths), model(x, lengths), atol=1e-5)
    # size counts the sparse encoding of what is left, float32 and int8
    assert size_bytes(small) == sum(tensor_size_bytes(p.detach()) for p in small.parameters()) < 4 * sum(p.numel() for p in small.parameters())
    assert int8_size_bytes(small, "torch") < size_bytes(small) / 2


@pytest.mark.parametrize("method", ["taylor", "confidence"])
def test_a_hybrid_step_scores_units_and_weights_from_one_pass(datamodule, method, monkeypatch):
    """Within a pruning step the weights and batches do not change: a data-driven method scores them once for the units
    and the weights, and the masks are those of two separate passes."""
    import contextlib

    from autoprune.pruning.methods import PruningMethod, _Saliency

    def pruned(memo: bool):
        passes = []
        real = _Saliency._scores
        monkeypatch.setattr(_Saliency, "_scores", lambda self, *a: passes.append(1) or real(self, *a))
        if not memo:
            monkeypatch.setattr(PruningMethod, "step", lambda self: contextlib.nullcontext())
        torch.manual_seed(0)
        model = RNNClassifier(ArchSpec("lstm", 3, [[16, 16], [12, 12]], 3))
        pruner = PruningCallback(_hybrid({"rnn.0": 0.5, "rnn.1": 0.25}, {"rnn.0.hh": 0.6, "rnn.1.ih": 0.5}, method), seed=0)
        make_trainer(3, [pruner], limit_train_batches=2, limit_val_batches=1).fit(RNNModule(model, lr=0.003), datamodule=datamodule)
        monkeypatch.undo()
        return {k: v.clone() for k, v in model.state_dict().items()}, len(pruner.history), len(passes)

    once, steps, n_once = pruned(memo=True)
    twice, _, n_twice = pruned(memo=False)
    assert steps == 3 and n_once == steps and n_twice == 2 * steps
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)


def test_encoded_bytes_is_the_rule_tensor_size_bytes_applies():
    torch.manual_seed(0)
    for shape, density, elem in [((64, 32), 0.3, 4), ((64, 32), 0.05, 4), ((48, 12), 0.5, 1), ((10,), 0.2, 4), ((8, 8), 1.0, 4)]:
        t = torch.randn(shape) * (torch.rand(shape) < density)
        rows = shape[0] if len(shape) > 1 else 1
        assert tensor_size_bytes(t, elem) == encoded_bytes(t.numel(), int(torch.count_nonzero(t)), rows, elem)


def test_weight_sparsity_needs_hidden_unit_granularity():
    with pytest.raises(ConfigError, match=r"weight_sparsity prunes what is left after hidden units go: it needs granularity 'hidden_unit'"):
        policy_from_dict({"granularity": "unstructured", "sparsity": 0.5, "weight_sparsity": 0.5})
    with pytest.raises(ConfigError, match=r"weight_sparsity\.rnn\.0\.hh: sparsity must be in \[0, 1\)|sparsity must be in \[0, 1\), got 1\.0"):
        _hybrid(0.5, {"rnn.0.hh": 1.0})
    with pytest.raises(ConfigError, match=r"method 'group_lasso'"):
        policy_from_dict({"method": "group_lasso", "granularity": "hidden_unit", "sparsity": 0.5, "weight_sparsity": 0.5})

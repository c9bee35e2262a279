"""The search_quality baselines do what they claim: widths that fit a size level, the peers' pruning code really prunes."""

from __future__ import annotations

import pytest
import torch

from autoprune.dense import ensure_dense
from autoprune.models.arch import ArchSpec
from benchmarks import search_quality as sq


def test_width_for_level_is_the_largest_that_fits():
    arch = ArchSpec("lstm", 12, [[128, 128], [128, 128]], 9, "last", 32, 0.1)
    dense = sq.n_params(arch)
    assert dense == 542_985  # the JapaneseVowels study model
    for level in sq.LEVELS:
        w = sq.width_for_level(arch, level)
        assert sq.n_params(sq.arch_with_width(arch, w)) <= level * dense < sq.n_params(sq.arch_with_width(arch, w + 1))
    assert sq.width_for_level(arch, 0.02) == 16  # 10,537 parameters, 1.94 %


def test_uniform_policy_removes_the_units_that_land_on_the_width(tiny_config):
    from autoprune.search.trial import planned_arch

    arch = ArchSpec("lstm", 3, [[16]], 2, "last", 32, 0.0)
    policy = sq.uniform_unit_policy("taylor", 1 - 5 / 16, tiny_config, recovery="rewind")
    assert planned_arch(arch, policy).hidden_sizes == [[5]]
    assert policy.recovery == "rewind" and policy.schedule.kind == "agp" and policy.finetune.epochs == sq.FINETUNE_EPOCHS


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torch_global", "lightning"])
def test_peer_pruning_zeroes_the_rnn_weights_and_leaves_plain_parameters(tiny_config, runs_dir, kind):
    dense = ensure_dense(tiny_config, runs_dir)
    model, dm = sq.peer_prune(tiny_config, dense, kind, 0.8, seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith(("_orig", "_mask")) for n in names)  # prune.remove / make_pruning_permanent ran
    weights = [getattr(m, n) for m, n in sq.rnn_weights(model)]
    assert len(weights) == 2  # weight_ih_l0 and weight_hh_l0 of the one layer
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=0.01)  # one global threshold over both matrices
    assert int((model.head.weight == 0).sum()) == 0  # only the RNN weights were pruned
    x, lengths, y = dm.tensors("val")
    assert torch.isfinite(model(x, lengths)).all()

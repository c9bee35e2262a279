"""PruningCallback: masks stay applied, resumed fits continue the schedule, refusals and divergence."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprune.errors import PruningError
from autoprune.models.fitting import make_trainer
from autoprune.models.fitting import RNNModule
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.callback import PruningCallback, mask_buffers, sparsity_report
from autoprune.pruning.groups import ModelGroups, check_targets
from autoprune.pruning.policy import policy_from_dict
from autoprune.tasks import build_task


@pytest.fixture(scope="module")
def datamodule():
    dm = build_task("synthetic:sines", seed=0, batch_size=32, options={"n_train": 120, "n_test": 30, "max_len": 12})
    dm.setup("fit")
    return dm


def _model(seed: int = 0, cell: str = "lstm", hidden=((16,),)) -> RNNClassifier:
    torch.manual_seed(seed)
    return RNNClassifier(ArchSpec(cell, 3, [list(h) for h in hidden], 3))


# ------------------------------------------------------------ masks stay zero
def _attach(model: RNNClassifier, policy_data: dict) -> tuple[PruningCallback, RNNModule]:
    """The callback's setup without a Trainer (it only reads ``pl_module.model``)."""
    module = RNNModule(model)
    pruner = PruningCallback(policy_from_dict(policy_data), seed=0)
    pruner.setup(None, module, "fit")
    return pruner, module


def _batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 6, 3, generator=g), torch.randint(1, 7, (8,), generator=g), torch.randint(0, 3, (8,), generator=g))
        for _ in range(n)
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    granularity=st.sampled_from(["unstructured", "hidden_unit"]),
    method=st.sampled_from(["magnitude", "random", "taylor"]),
    sparsity=st.floats(0.1, 0.9),
    optimizer=st.sampled_from(["adam", "adamw", "sgd"]),
    cell=st.sampled_from(["lstm", "gru"]),
    seed=st.integers(0, 1000),
)
def test_masked_weights_stay_exactly_zero_after_optimizer_steps(granularity, method, sparsity, optimizer, cell, seed):
    model = _model(seed, cell, hidden=((6, 6), (5, 5)))
    pruner, module = _attach(model, {"method": method, "granularity": granularity, "sparsity": sparsity, "finetune": {"epochs": 3}})
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
    opt = opt_cls(model.parameters(), lr=0.05, weight_decay=0.01)
    batches = _batches(6, seed)
    trainer = SimpleNamespace(current_epoch=0)
    # build optimizer momentum before pruning, so masked weights would move without the hooks
    for x, lengths, y in batches[:2]:
        opt.zero_grad()
        F.cross_entropy(model(x, lengths), y).backward()
        opt.step()
    pruner.prune_to(model, 1.0, batches[:2])
    masks = mask_buffers(model)
    params = dict(model.named_parameters())
    assert any((~m).any() for m in masks.values())
    for i, (x, lengths, y) in enumerate(batches[2:]):
        opt.zero_grad()
        loss = F.cross_entropy(model(x, lengths), y)
        loss.backward()
        pruner.on_before_optimizer_step(trainer, module, opt)
        for name, mask in masks.items():
            assert torch.all(params[name].grad[~mask] == 0), name
        opt.step()
        pruner.on_train_batch_end(trainer, module, {"loss": loss.detach()}, (x, lengths, y), i)
        for name, mask in masks.items():
            assert torch.all(params[name].detach()[~mask] == 0), name


def test_without_the_batch_end_hook_adam_would_move_masked_weights():
    """The hook is what keeps weights at zero: Adam's momentum alone moves them."""
    model = _model(0)
    pruner, module = _attach(model, {"sparsity": 0.5, "finetune": {"epochs": 3}})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batches = _batches(3, 0)
    for x, lengths, y in batches[:2]:
        opt.zero_grad()
        F.cross_entropy(model(x, lengths), y).backward()
        opt.step()
    pruner.prune_to(model, 1.0, [])
    x, lengths, y = batches[2]
    opt.zero_grad()
    F.cross_entropy(model(x, lengths), y).backward()
    pruner.on_before_optimizer_step(None, module, opt)
    opt.step()
    moved = [bool((model.get_parameter(n).detach()[~m] != 0).any()) for n, m in mask_buffers(model).items()]
    assert any(moved)
    pruner.apply_masks()
    assert all(bool((model.get_parameter(n).detach()[~m] == 0).all()) for n, m in mask_buffers(model).items())


def test_masks_in_a_fit_and_in_the_state_dict(datamodule):
    model = _model(1)
    policy = policy_from_dict({"sparsity": {"rnn.0.hh": 0.75}, "schedule": {"kind": "one_shot"}, "finetune": {"epochs": 2}})
    pruner = PruningCallback(policy)
    make_trainer(2, [pruner]).fit(RNNModule(model, lr=0.01), datamodule=datamodule)
    assert list(mask_buffers(model)) == ["rnn.0.dirs.0.weight_hh_l0"]
    assert "rnn.0.dirs.0.weight_hh_l0_mask" in model.state_dict()
    assert sparsity_report(model)["per_group"]["rnn.0.hh"] == 0.75
    assert sparsity_report(model)["per_group"]["rnn.0.ih"] == 0.0
    scripted = torch.jit.script(model)  # mask buffers do not break TorchScript
    x, lengths, _ = datamodule.tensors("val")
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, lengths), model.eval()(x, lengths))
    copy.deepcopy(model)  # nor deepcopy


def test_sparsity_report_counts_zeros():
    model = _model(0, hidden=((4,),))
    with torch.no_grad():
        model.rnn[0].dirs[0].weight_hh_l0[:8] = 0  # 8 of 16 rows x 4 columns
        model.head.weight.zero_()
    rep = sparsity_report(model)
    assert rep["per_group"]["rnn.0.hh"] == 0.5
    assert rep["per_group"]["head"] == 1.0
    assert rep["rnn"] == pytest.approx(32 / (16 * 3 + 16 * 4))
    assert rep["overall"] == pytest.approx((32 + 12) / (16 * 3 + 16 * 4 + 12))


def test_global_scope_reaches_the_overall_sparsity():
    model = _model(2, hidden=((8,), (8,)))
    pruner, _ = _attach(model, {"sparsity": 0.7, "scope": "global", "finetune": {"epochs": 3}})
    pruner.prune_to(model, 1.0, [])
    groups = ModelGroups(model)
    zeros = sum(int((groups.params[groups.target_ref(t).param] == 0).sum()) for t in pruner.targets)
    total = sum(groups.params[groups.target_ref(t).param].numel() for t in pruner.targets)
    assert abs(zeros / total - 0.7) <= 0.01


# ------------------------------------------------------------ resume
def _fit(init, dm, policy, epochs, ckpt_path=None, save_to=None):
    model = copy.deepcopy(init)
    pruner = PruningCallback(policy)
    trainer = make_trainer(epochs, [pruner])
    trainer.fit(RNNModule(model, lr=0.01), datamodule=dm, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model, pruner


def test_resumed_fit_continues_the_schedule(datamodule, tmp_path):
    policy = policy_from_dict({"sparsity": 0.8, "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": 4}, "finetune": {"epochs": 5}})
    init = _model(3)
    full, full_pruner = _fit(init, datamodule, policy, 5)
    ckpt = tmp_path / "two_epochs.ckpt"
    part, part_pruner = _fit(init, datamodule, policy, 2, save_to=ckpt)
    assert [h["epoch"] for h in part_pruner.history] == [0, 1]
    assert not part_pruner.reached_target()
    resumed, resumed_pruner = _fit(init, datamodule, policy, 5, ckpt_path=str(ckpt))
    assert [h["epoch"] for h in resumed_pruner.history] == [0, 1, 2, 3, 4]
    assert resumed_pruner.history == full_pruner.history
    assert resumed_pruner.reached_target()
    assert sparsity_report(resumed) == sparsity_report(full)
    assert abs(sparsity_report(resumed)["per_group"]["rnn.0.hh"] - 0.8) <= 0.01
    full_masks, resumed_masks = mask_buffers(full), mask_buffers(resumed)
    assert list(full_masks) == list(resumed_masks)
    for name in full_masks:
        assert torch.equal(full_masks[name], resumed_masks[name]), name


# ------------------------------------------------------------ refusals
def test_pruning_every_unit_of_a_layer_is_refused(datamodule):
    policy = policy_from_dict({"granularity": "hidden_unit", "sparsity": 0.99, "finetune": {"epochs": 2}})
    pruner = PruningCallback(policy)
    with pytest.raises(PruningError, match=r"sparsity 0\.99 would remove every hidden unit of layer rnn\.0 \(16 units\); at least one unit stays: use at most 0\.9375"):
        make_trainer(2, [pruner]).fit(RNNModule(_model(0), lr=0.01), datamodule=datamodule)


def test_check_targets_only_refuses_what_rounds_to_all_units():
    groups = ModelGroups(_model(0, hidden=((16, 16),)))
    check_targets(groups, {"rnn.0.fwd": 0.96}, "hidden_unit")  # rounds to 15 of 16
    check_targets(groups, {"rnn.0.fwd.ih": 0.99}, "unstructured")  # single weights: fine
    with pytest.raises(PruningError, match=r"layer rnn\.0\.bwd \(16 units\); at least one unit stays"):
        check_targets(groups, {"rnn.0.fwd": 0.5, "rnn.0.bwd": 0.97}, "hidden_unit")


def test_nan_loss_raises_pruning_error(datamodule):
    model = _model(0)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    policy = policy_from_dict({"sparsity": 0.5, "finetune": {"epochs": 2, "lr": 0.002}, "grad_clip": {"value": 0.5}})
    with pytest.raises(PruningError, match=r"fine-tuning diverged: loss is nan at epoch 0, batch 0; lower finetune\.lr \(now 0\.002\) or grad_clip\.value \(now 0\.5\)"):
        make_trainer(2, [PruningCallback(policy)]).fit(RNNModule(model, lr=0.002), datamodule=datamodule)


def test_initial_sparsity_and_ramp_levels():
    model = _model(4, hidden=((8,),))
    pruner, _ = _attach(model, {"sparsity": {"rnn.0.hh": 0.6}, "schedule": {"initial_sparsity": 0.2}, "finetune": {"epochs": 3}})
    hh = model.rnn[0].dirs[0].weight_hh_l0
    for ramp, expected in ((0.0, 0.2), (0.5, 0.4), (1.0, 0.6)):
        pruner.prune_to(model, ramp, [])
        assert float((hh == 0).float().mean()) == pytest.approx(expected, abs=0.01)
    # masks only grow: the weights pruned at 0.2 are still pruned at 0.6
    assert int((~mask_buffers(model)["rnn.0.dirs.0.weight_hh_l0"]).sum()) == round(0.6 * hh.numel())


def test_dynamic_schedule_in_a_fit_reaches_the_target(datamodule):
    model = _model(5)
    policy = policy_from_dict(
        {"sparsity": 0.7, "schedule": {"kind": "dynamic", "start_epoch": 0, "end_epoch": 1, "tolerance": 0.0}, "finetune": {"epochs": 4}}
    )
    pruner = PruningCallback(policy)
    make_trainer(4, [pruner]).fit(RNNModule(model, lr=0.01), datamodule=datamodule)
    ramps = [h["ramp"] for h in pruner.history]
    assert ramps == sorted(ramps) and ramps[-1] == 1.0
    assert len(ramps) == 2  # two equal steps, taken at some epochs up to the last
    assert all(h["epoch"] <= 3 for h in pruner.history)
    assert abs(sparsity_report(model)["per_group"]["rnn.0.hh"] - 0.7) <= 0.01


def test_saliency_methods_need_batches():
    from autoprune.errors import ConfigError

    model = _model(0, hidden=((4,),))
    for method in ("taylor", "confidence"):
        pruner, _ = _attach(model, {"method": method, "sparsity": 0.5, "finetune": {"epochs": 3}})
        with pytest.raises(ConfigError, match=rf"method '{method}' needs training batches to score weights, got none"):
            pruner.prune_to(model, 1.0, [])

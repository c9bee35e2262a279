"""Recovery after pruning (policy.recovery): finetune | rewind | scratch, validated and searched."""

from __future__ import annotations

import optuna
import pytest
import torch

from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.pruning.policy import policy_from_dict
from autoprune.reference.dense import ensure_dense
from autoprune.search.space import SearchSpace
from autoprune.trial.result import TrialOptions, load_trial_model
from autoprune.trial.run import run_trial


def test_recovery_key_is_validated_and_defaults_to_finetune():
    assert policy_from_dict({"sparsity": 0.5}).recovery == "finetune"
    assert policy_from_dict({"sparsity": 0.5, "recovery": "rewind"}).recovery == "rewind"
    with pytest.raises(ConfigError, match=r"p\.yaml: recovery: .*'finetune', 'rewind' or 'scratch' \(got 'retrain'\)"):
        policy_from_dict({"sparsity": 0.5, "recovery": "retrain"}, source="p.yaml")


def test_search_recovery_choices_are_validated(tiny_study):
    tiny_study["search"] = {"recovery": ["finetune", "rewnd"]}
    with pytest.raises(ConfigError, match=r"tiny\.yaml: search\.recovery\.1: .*'finetune', 'rewind' or 'scratch' \(got 'rewnd'\)"):
        config_from_dict(tiny_study, source="tiny.yaml")


def test_space_samples_recovery_only_when_asked(tiny_study, tiny_config, runs_dir):
    arch = ensure_dense(tiny_config, runs_dir).arch
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert SearchSpace(tiny_config, arch).suggest(trial).recovery == "finetune"
    assert "recovery" not in trial.params  # the default space samples nothing new: old studies keep their params
    tiny_study["search"] = {"recovery": ["finetune", "scratch"], "methods": ["magnitude"], "granularities": ["hidden_unit"]}
    config = config_from_dict(tiny_study, source="tiny.yaml")
    seen = {SearchSpace(config, arch).suggest(study.ask()).recovery for _ in range(12)}
    assert seen == {"finetune", "scratch"}


def _trial(config, runs_dir, tmp_path, name, **policy):
    base = {"method": "magnitude", "granularity": "unstructured", "sparsity": 0.7, "schedule": {"kind": "one_shot"}, "finetune": {"epochs": 2}}
    trial_dir = tmp_path / name
    result = run_trial(config, policy_from_dict({**base, **policy}), TrialOptions(runs_dir=str(runs_dir), trial_dir=str(trial_dir), measure_latency=False))
    return result, load_trial_model(trial_dir / "model.pt")[0]


@pytest.mark.slow
def test_rewind_and_scratch_retrain_with_the_dense_schedule_and_keep_the_zeros(tiny_config, runs_dir, tmp_path):
    ensure_dense(tiny_config, runs_dir)
    ft, ft_model = _trial(tiny_config, runs_dir, tmp_path, "ft")
    rw, rw_model = _trial(tiny_config, runs_dir, tmp_path, "rw", recovery="rewind")
    sc, sc_model = _trial(tiny_config, runs_dir, tmp_path, "sc", recovery="scratch")
    epochs = tiny_config.train.epochs
    assert [h.get("phase") for h in ft.history] == [None, None]
    for r in (rw, sc):
        assert r.state == "complete"
        assert [h["phase"] for h in r.history[2:]] == ["recovery"] * epochs  # the dense schedule's epochs after the fine-tune
    for name, w in ft_model.named_parameters():
        if w.dim() >= 2 and name.startswith("rnn"):
            zeros = w == 0
            # rewind keeps exactly the pruned pattern; scratch keeps a pattern at least as sparse on the same shape
            assert torch.equal(dict(rw_model.named_parameters())[name] == 0, zeros), name
            assert dict(sc_model.named_parameters())[name].shape == w.shape
    assert rw.size_bytes == ft.size_bytes and rw.nonzero_params == ft.nonzero_params
    # rewind starts from the fine-tuned weights, scratch from a fresh draw: the three models differ
    w = "rnn.0.cell.weight_hh_l0" if "rnn.0.cell.weight_hh_l0" in dict(ft_model.named_parameters()) else next(n for n, p in ft_model.named_parameters() if p.dim() >= 2)
    assert not torch.equal(dict(rw_model.named_parameters())[w], dict(ft_model.named_parameters())[w])
    assert not torch.equal(dict(sc_model.named_parameters())[w], dict(rw_model.named_parameters())[w])


@pytest.mark.slow
def test_scratch_after_hidden_unit_pruning_is_a_small_dense_model(tiny_config, runs_dir, tmp_path):
    ensure_dense(tiny_config, runs_dir)
    r, model = _trial(tiny_config, runs_dir, tmp_path, "hu", granularity="hidden_unit", sparsity=0.5, recovery="scratch")
    assert r.state == "complete" and r.hidden_sizes == [[8]]  # half of the 16 units, compacted
    assert all(bool((p != 0).all()) for p in model.parameters() if p.dim() >= 2)  # nothing unstructured to keep at zero
    assert r.val_accuracy is not None and 0.0 <= r.test_accuracy <= 1.0


@pytest.mark.parametrize("model", [{"cell": "lstm", "hidden_sizes": [16]}, {"cell": "gru", "hidden_sizes": [12, 10], "bidirectional": True}])
def test_scratch_of_widths_alone_skips_the_pruning_pass_and_trains_the_same_model(tiny_study, runs_dir, tmp_path, monkeypatch, model):
    """A hidden-unit policy without weight sparsity that recovers by scratch depends on its widths alone: the trial skips
    the pruning pass and yields the very model, numbers and sparsity report of the full path (which units the pass
    would keep are thrown away with their weights)."""
    import autoprune.trial.run as trial_run

    tiny_study["model"] = model
    config = config_from_dict(tiny_study, source="tiny.yaml")
    ensure_dense(config, runs_dir)
    policy = {"method": "taylor", "granularity": "hidden_unit", "sparsity": 0.5, "recovery": "scratch", "schedule": {"kind": "agp"}}
    assert trial_run.widths_decide(policy_from_dict(policy))
    assert not trial_run.widths_decide(policy_from_dict({**policy, "weight_sparsity": 0.5}))  # hybrid: the pass picks the zeros
    assert not trial_run.widths_decide(policy_from_dict({**policy, "recovery": "rewind"}))  # rewind keeps the pass's weights
    assert not trial_run.widths_decide(policy_from_dict({**policy, "granularity": "unstructured"}))
    fits = []
    real_fit = trial_run.fit
    monkeypatch.setattr(trial_run, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))  # the pruning pass's fit
    fast, fast_model = _trial(config, runs_dir, tmp_path, "fast", **policy)
    assert fits == [] and [h["phase"] for h in fast.history] == ["recovery"] * config.train.epochs and fast.pruning_history == []
    monkeypatch.setattr(trial_run, "widths_decide", lambda policy: False)
    full, full_model = _trial(config, runs_dir, tmp_path, "full", **policy)
    assert fits == [1] and fast.state == full.state == "complete"
    assert fast.hidden_sizes == full.hidden_sizes and fast.size_bytes == full.size_bytes and fast.nonzero_params == full.nonzero_params
    assert (fast.val_accuracy, fast.test_accuracy) == (full.val_accuracy, full.test_accuracy)
    assert fast.sparsity == full.sparsity
    for (name, a), (_, b) in zip(fast_model.state_dict().items(), full_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_warm_start_retrains_uniform_hidden_unit_trials_from_scratch_when_that_is_a_choice(tiny_study, tiny_config, runs_dir):
    arch = ensure_dense(tiny_config, runs_dir).arch
    assert all("recovery" not in p for p in SearchSpace(tiny_config, arch).warm_start_params())  # the default space: unchanged
    tiny_study["search"] = {"recovery": ["finetune", "rewind", "scratch"], "granularities": ["unstructured", "hidden_unit"]}
    space = SearchSpace(config_from_dict(tiny_study, source="tiny.yaml"), arch)
    params = space.warm_start_params()
    units = [p for p in params if p["structure"] == 1.0]  # size first: units only
    weights = [p for p in params if p["structure"] == 0.0]  # single weights only
    assert units and all(p["recovery"] == "scratch" for p in units)
    assert weights and all("recovery" not in p for p in weights)  # unstructured: the sampler chooses
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(units[0])
    assert space.suggest(study.ask()).recovery == "scratch"
    tiny_study["search"]["recovery"] = ["finetune", "rewind"]
    params = SearchSpace(config_from_dict(tiny_study, source="tiny.yaml"), arch).warm_start_params()
    assert {p.get("recovery") for p in params if p["structure"] == 1.0} == {"rewind"}


def test_recovery_epochs_default_to_the_dense_recipe_and_are_validated(tiny_study):
    from autoprune.pruning.recovery import recovery_epochs

    assert recovery_epochs(config_from_dict(tiny_study)) == tiny_study["train"]["epochs"]
    tiny_study["search"] = {"recovery_epochs": 2}
    assert recovery_epochs(config_from_dict(tiny_study)) == 2
    tiny_study["search"] = {"recovery_epochs": 0}
    with pytest.raises(ConfigError, match=r"tiny\.yaml: search\.recovery_epochs: .*greater than or equal to 1"):
        config_from_dict(tiny_study, source="tiny.yaml")


def test_a_shorter_recovery_retrains_only_its_epochs(tiny_study, tiny_config, runs_dir, tmp_path):
    ensure_dense(tiny_config, runs_dir)
    tiny_study["search"] = {"recovery_epochs": 1}
    short = config_from_dict(tiny_study)
    assert tiny_config.train.epochs > 1
    r, model = _trial(short, runs_dir, tmp_path, "rw1", recovery="rewind")
    assert r.state == "complete"
    assert [h.get("phase") for h in r.history] == [None, None, "recovery"]  # 2 fine-tune epochs, then 1 retraining epoch

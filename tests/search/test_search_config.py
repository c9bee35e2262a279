"""Bad ``search:`` sections are refused with one line naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from autoprune.config import config_from_dict
from autoprune.errors import ConfigError


def _load(tiny_study: dict, search: dict):
    tiny_study["search"] = search
    return config_from_dict(tiny_study, source="bad.yaml")


def test_valid_search_section_loads(tiny_study):
    cfg = _load(tiny_study, {"trials": 4, "finetune": {"epochs": [2, 3]}, "objectives": ["val_accuracy", "size_bytes", "latency_ms"]})
    assert cfg.search.trials == 4 and cfg.search.finetune.epochs == (2, 3)


def test_unknown_sampler(tiny_study):
    with pytest.raises(ConfigError, match=r"bad\.yaml: search\.sampler: .*'nsga2'.*'tpe'.*'random'.*got 'cmaes'"):
        _load(tiny_study, {"sampler": "cmaes"})


def test_unknown_objective(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.objectives\.2: .*'latency_ms'.*got 'energy'"):
        _load(tiny_study, {"objectives": ["val_accuracy", "size_bytes", "energy"]})


@pytest.mark.parametrize("objectives", [["size_bytes", "val_accuracy"], ["val_accuracy"], ["val_accuracy", "latency_ms"], ["val_accuracy", "size_bytes", "size_bytes"]])
def test_objectives_must_start_with_accuracy_and_size(tiny_study, objectives):
    with pytest.raises(ConfigError, match=r"bad\.yaml: search: objectives must start with \[val_accuracy, size_bytes\]"):
        _load(tiny_study, {"objectives": objectives})


def test_unknown_constraint_key(tiny_study):
    with pytest.raises(ConfigError, match=r"unknown key 'search\.constraints\.max_energy'; allowed keys here: max_latency_ms, max_size_bytes"):
        _load(tiny_study, {"constraints": {"max_energy": 3}})


def test_unknown_search_key(tiny_study):
    with pytest.raises(ConfigError, match=r"unknown key 'search\.trails'; allowed keys here: .*trials"):
        _load(tiny_study, {"trails": 3})


def test_inverted_sparsity_range(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.sparsity\.range: empty or inverted range \[0\.9, 0\.5\]"):
        _load(tiny_study, {"sparsity": {"range": [0.9, 0.5]}})


def test_sparsity_range_must_stay_below_one(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.sparsity\.units: range \[0\.5, 1\.0\] must lie in \[0\.0, 1\.0\)"):
        _load(tiny_study, {"sparsity": {"units": [0.5, 1.0]}})


def test_inverted_finetune_lr(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.finetune\.lr: empty or inverted range \[0\.01, 0\.001\]"):
        _load(tiny_study, {"finetune": {"lr": [0.01, 0.001]}})


def test_inverted_finetune_epochs(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.finetune\.epochs: need 1 <= low <= high, got \[5, 2\]"):
        _load(tiny_study, {"finetune": {"epochs": [5, 2]}})


def test_nonpositive_grad_clip(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.grad_clip\.range: clipping thresholds must be > 0"):
        _load(tiny_study, {"grad_clip": {"range": [0.0, 1.0]}})


def test_unknown_method(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.methods: unknown pruning method 'obd'; valid: magnitude, .*taylor"):
        _load(tiny_study, {"methods": ["magnitude", "obd"]})


def test_unknown_schedule_kind(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.schedule\.kinds: unknown schedule 'cosine'; valid: .*agp"):
        _load(tiny_study, {"schedule": {"kinds": ["cosine"]}})


def test_no_method_supports_granularity(tiny_study):
    with pytest.raises(ConfigError, match=r"no method in \['l1'\] supports any granularity in \['hidden_unit'\]"):
        _load(tiny_study, {"methods": ["l1"], "granularities": ["hidden_unit"]})


def test_nonpositive_latency_budget(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.constraints\.max_latency_ms: .*greater than 0"):
        _load(tiny_study, {"constraints": {"max_latency_ms": 0}})


def test_schedule_window_is_one_rule_for_the_space_the_rung_check_and_the_baselines():
    """Where pruning starts and ends over a fine-tune of n epochs: the sampled policies, the config's rung check and the
    benchmarks' uniform baselines all read it from ``ScheduleSpace.window``."""
    from autoprune.config import ScheduleSpace

    sched = ScheduleSpace(end_before_last=2)
    assert sched.window(8) == (0, 5) and sched.window(6) == (0, 3) and sched.window(2) == (0, 0) and sched.window(1) == (0, 0)
    late = ScheduleSpace(start_epoch=4, end_before_last=2)
    assert late.window(8) == (4, 5) and late.window(6) == (4, 4) and late.window(3) == (2, 2)  # never past the last epoch
    assert late.window(8, start_epoch=0) == (0, 5)


def test_sampled_policies_prune_over_the_schedule_window(tiny_study):
    import optuna

    from autoprune.models.rnn import ArchSpec
    from autoprune.search.space import SearchSpace

    cfg = _load(tiny_study, {"finetune": {"epochs": [4, 6]}, "schedule": {"kinds": ["agp"], "start_epoch": 1, "end_before_last": 1}})
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        policy = space.suggest(study.ask())
        seen.add(policy.finetune.epochs)
        assert (policy.schedule.start_epoch, policy.schedule.end_epoch) == (1, policy.finetune.epochs - 2)
    assert seen == {4, 5, 6}

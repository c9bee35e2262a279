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

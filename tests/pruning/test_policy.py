"""PruningPolicy validation: every bad input names the key, the value and what is allowed."""

from __future__ import annotations

import re

import pytest

from autoprune.errors import ConfigError
from autoprune.pruning.methods import METHODS, get_method
from autoprune.pruning.policy import PruningPolicy, load_policy, policy_from_dict


def test_defaults_and_schedule_end():
    p = policy_from_dict({})
    assert (p.method, p.granularity, p.sparsity, p.schedule.kind) == ("magnitude", "unstructured", 0.5, "agp")
    assert p.schedule_end == p.finetune.epochs - 3  # two epochs of fine-tuning after the last step
    assert policy_from_dict({"finetune": {"epochs": 2}}).schedule_end == 0
    s = policy_from_dict({"schedule": {"kind": "linear", "end_epoch": 4}, "finetune": {"epochs": 6}}).make_schedule()
    assert (s.name, s.start, s.end, s.last_epoch) == ("linear", 0, 4, 5)


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_sparsity_outside_unit_interval(value):
    with pytest.raises(ConfigError, match=rf"^p\.yaml: sparsity: sparsity must be in \[0, 1\), got {value}"):
        policy_from_dict({"sparsity": value}, source="p.yaml")
    with pytest.raises(ConfigError, match=rf"sparsity must be in \[0, 1\), got {value}"):
        policy_from_dict({"sparsity": {"rnn.0.ih": 0.5, "rnn.0.hh": value}}, source="p.yaml")


def test_unknown_method_lists_valid_ones():
    valid = ", ".join(METHODS)
    with pytest.raises(ConfigError, match=rf"^p\.yaml: method: unknown pruning method 'snip'; valid: {re.escape(valid)}"):
        policy_from_dict({"method": "snip"}, source="p.yaml")


def test_unknown_granularity_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"granularity: unknown granularity 'channel'; valid: unstructured, hidden_unit"):
        policy_from_dict({"granularity": "channel"}, source="p.yaml")


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"schedule\.kind: unknown schedule 'cubic'; valid: one_shot, linear, agp, dynamic"):
        policy_from_dict({"schedule": {"kind": "cubic"}}, source="p.yaml")


def test_l1_with_hidden_units_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match=r"^p\.yaml: method 'l1' does not support granularity 'hidden_unit' \(supports: unstructured\)\. HINT: .*use method 'group_lasso'"):
        policy_from_dict({"method": "l1", "granularity": "hidden_unit"}, source="p.yaml")


def test_group_lasso_with_single_weights_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match=r"method 'group_lasso' does not support granularity 'unstructured' \(supports: hidden_unit\)\. HINT: .*use method 'l1'"):
        policy_from_dict({"method": "group_lasso", "granularity": "unstructured"}, source="p.yaml")


def test_get_method_refuses_the_same_pairs_and_unknown_names():
    with pytest.raises(ConfigError, match="does not support granularity 'hidden_unit'"):
        get_method("l1", "hidden_unit")
    with pytest.raises(ConfigError, match=r"unknown pruning method 'obd'; valid: "):
        get_method("obd", "unstructured")
    with pytest.raises(ConfigError, match=r"unknown granularity 'row'; valid: unstructured, hidden_unit"):
        get_method("magnitude", "row")


def test_schedule_end_after_last_finetune_epoch():
    with pytest.raises(ConfigError, match=r"^p\.yaml: schedule\.end_epoch=8 is after the last fine-tune epoch \(7, epochs count from 0\)"):
        policy_from_dict({"schedule": {"end_epoch": 8}, "finetune": {"epochs": 8}}, source="p.yaml")
    # the default end is the start epoch when fine-tuning is short: the message names start_epoch
    with pytest.raises(ConfigError, match=r"schedule\.start_epoch=5 is after the last fine-tune epoch \(3, "):
        policy_from_dict({"schedule": {"start_epoch": 5}, "finetune": {"epochs": 4}}, source="p.yaml")
    assert policy_from_dict({"schedule": {"end_epoch": 7}, "finetune": {"epochs": 8}}).schedule_end == 7


def test_start_after_end_and_global_scope_with_mapping():
    with pytest.raises(ConfigError, match=r"schedule\.start_epoch=3 is after schedule\.end_epoch=2"):
        policy_from_dict({"schedule": {"start_epoch": 3, "end_epoch": 2}}, source="p.yaml")
    with pytest.raises(ConfigError, match="scope 'global' uses one threshold for all targets: give sparsity as one number"):
        policy_from_dict({"scope": "global", "sparsity": {"rnn.0.ih": 0.5}}, source="p.yaml")


def test_unknown_keys_list_allowed_keys():
    with pytest.raises(ConfigError, match=r"^p\.yaml: unknown policy key 'sparsty'; allowed keys here: method, granularity, sparsity"):
        policy_from_dict({"sparsty": 0.5}, source="p.yaml")
    with pytest.raises(ConfigError, match=r"unknown policy key 'finetune\.learning_rate'; allowed keys here: epochs, lr, weight_decay, optimizer"):
        policy_from_dict({"finetune": {"learning_rate": 0.1}}, source="p.yaml")


@pytest.mark.parametrize(
    "data,pattern",
    [
        ({"finetune": {"epochs": 0}}, r"finetune\.epochs: .*greater than or equal to 1"),
        ({"finetune": {"lr": 0}}, r"finetune\.lr: .*greater than 0"),
        ({"schedule": {"frequency": 0}}, r"schedule\.frequency: .*greater than or equal to 1"),
        ({"regularization": -1}, r"regularization: .*greater than or equal to 0"),
        ({"scope": "layer"}, r"scope: Input should be 'per_group' or 'global'"),
        ({"grad_clip": {"algorithm": "max"}}, r"grad_clip\.algorithm: Input should be 'norm' or 'value'"),
    ],
)
def test_other_invalid_values(data, pattern):
    with pytest.raises(ConfigError, match=r"^p\.yaml: " + pattern):
        policy_from_dict(data, source="p.yaml")


def test_policy_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"p\.yaml: a policy must be a mapping .*got list"):
        policy_from_dict([0.5], source="p.yaml")


def test_load_policy_and_key(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("method: taylor\ngranularity: hidden_unit\nsparsity: {rnn.0: 0.25}\nfinetune: {epochs: 3}\n")
    p = load_policy(path)
    assert isinstance(p, PruningPolicy)
    assert (p.method, p.granularity, p.sparsity) == ("taylor", "hidden_unit", {"rnn.0": 0.25})
    assert p.key() == policy_from_dict(p.to_dict()).key()
    assert p.key() != policy_from_dict({**p.to_dict(), "sparsity": 0.3}).key()
    assert p.flat_params()["sparsity.rnn.0"] == 0.25 and p.flat_params()["schedule.kind"] == "agp"
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: magnitude\nsparsity: [0.5\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad)) + r":\d+: malformed YAML"):
        load_policy(bad)
    with pytest.raises(ConfigError, match=r"bad\.yaml: method: unknown pruning method 'x'"):
        bad.write_text("method: x\n")
        load_policy(bad)


def test_distillation_weight_must_be_below_one():
    from autoprune.errors import ConfigError
    from autoprune.pruning.policy import policy_from_dict

    assert policy_from_dict({"distillation": {"weight": 0.5}}).distillation.temperature == 2.0
    with pytest.raises(ConfigError, match=r"distillation\.weight"):
        policy_from_dict({"distillation": {"weight": 1.0}})

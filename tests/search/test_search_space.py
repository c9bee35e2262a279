"""The declarative search space: sampler suggestions → valid policies, group names, warm starts."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoprune.config import config_from_dict, load_config
from autoprune.models.arch import ArchSpec
from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.groups import ModelGroups
from autoprune.search.space import UNIT_SIZE_TARGETS, SearchSpace, sparsity_groups
from autoprune.trial.run import planned_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)

UNI = ArchSpec("lstm", 3, [[16], [8]], 4)
BI = ArchSpec("lstm", 3, [[16, 16], [8, 8]], 4)
GRU_BI = ArchSpec("gru", 3, [[12, 12]], 4)


def _config(tiny_study: dict, search: dict, **model):
    tiny_study["model"].update(model)
    tiny_study["search"] = {"finetune": {"epochs": [2, 3]}, "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0}, **search}
    return config_from_dict(tiny_study, source="space.yaml")


def _check_policy(arch: ArchSpec, policy) -> None:
    """The policy names only groups the model has, and a hidden-unit policy keeps a unit per layer."""
    groups = ModelGroups(RNNClassifier(arch))
    targets = groups.resolve_sparsity(policy.sparsity, policy.granularity)
    assert targets, policy
    if policy.granularity == "hidden_unit":
        planned = planned_arch(arch, policy)
        for before, after in zip(arch.hidden_sizes, planned.hidden_sizes):
            for b, a in zip(before, after):
                assert 1 <= a < b


# ---------------------------------------------------------------- sparsity_groups


def test_groups_global_uni():
    groups = sparsity_groups(UNI, "global", "unstructured")
    assert list(groups) == ["sparsity"]
    kind, keys = groups["sparsity"]
    assert kind == "all"
    assert sorted(keys) == ["rnn.0.hh", "rnn.0.ih", "rnn.1.hh", "rnn.1.ih"]


def test_groups_global_bidirectional_covers_both_directions():
    kind, keys = sparsity_groups(BI, "global", "unstructured")["sparsity"]
    assert sorted(keys) == sorted(f"rnn.{l}.{d}.{k}" for l in (0, 1) for d in ("fwd", "bwd") for k in ("ih", "hh"))


def test_groups_per_layer():
    uni = sparsity_groups(UNI, "per_layer", "unstructured")
    assert uni == {"sparsity.rnn.0": ("layer", ["rnn.0.ih", "rnn.0.hh"]), "sparsity.rnn.1": ("layer", ["rnn.1.ih", "rnn.1.hh"])}
    bi = sparsity_groups(BI, "per_layer", "unstructured")
    assert list(bi) == ["sparsity.rnn.0", "sparsity.rnn.1"]
    assert sorted(bi["sparsity.rnn.0"][1]) == ["rnn.0.bwd.hh", "rnn.0.bwd.ih", "rnn.0.fwd.hh", "rnn.0.fwd.ih"]


def test_groups_per_matrix_share_directions():
    uni = sparsity_groups(UNI, "per_matrix", "unstructured")
    assert set(uni) == {"sparsity.rnn.0.ih", "sparsity.rnn.0.hh", "sparsity.rnn.1.ih", "sparsity.rnn.1.hh"}
    assert uni["sparsity.rnn.1.hh"] == ("hh", ["rnn.1.hh"])
    bi = sparsity_groups(BI, "per_matrix", "unstructured")
    assert set(bi) == set(uni)  # one searched value per matrix, shared by both directions
    assert bi["sparsity.rnn.0.ih"] == ("ih", ["rnn.0.fwd.ih", "rnn.0.bwd.ih"])


@pytest.mark.parametrize("arch, gates", [(UNI, "ifgo"), (BI, "ifgo"), (GRU_BI, "rzn")])
def test_groups_per_gate(arch, gates):
    groups = sparsity_groups(arch, "per_gate", "unstructured")
    expected = {f"sparsity.rnn.{l}.{k}.{g}" for l in range(arch.num_layers) for k in ("ih", "hh") for g in gates}
    assert set(groups) == expected
    kind, keys = groups[f"sparsity.rnn.0.hh.{gates[1]}"]
    assert kind == "hh"
    dirs = [".fwd", ".bwd"] if arch.bidirectional else [""]
    assert keys == [f"rnn.0{d}.hh.{gates[1]}" for d in dirs]


@pytest.mark.parametrize("grouping", ["per_layer", "per_matrix", "per_gate"])
def test_groups_hidden_unit_are_layers(grouping):
    assert sparsity_groups(UNI, grouping, "hidden_unit") == {"units.rnn.0": ("units", ["rnn.0"]), "units.rnn.1": ("units", ["rnn.1"])}
    assert sparsity_groups(BI, grouping, "hidden_unit") == {
        "units.rnn.0": ("units", ["rnn.0.fwd", "rnn.0.bwd"]),
        "units.rnn.1": ("units", ["rnn.1.fwd", "rnn.1.bwd"]),
    }


def test_groups_hidden_unit_global():
    assert sparsity_groups(BI, "global", "hidden_unit") == {"units": ("units", ["rnn.0.fwd", "rnn.0.bwd", "rnn.1.fwd", "rnn.1.bwd"])}


@pytest.mark.parametrize("arch", [UNI, BI, GRU_BI])
@pytest.mark.parametrize("grouping", ["global", "per_layer", "per_matrix", "per_gate"])
def test_group_keys_are_valid_model_group_names(arch, grouping):
    valid = {g: set(ModelGroups(RNNClassifier(arch)).valid_names(g)) for g in ("unstructured", "hidden_unit")}
    for gran in ("unstructured", "hidden_unit"):
        for _, keys in sparsity_groups(arch, grouping, gran).values():
            assert set(keys) <= valid[gran], (gran, keys)


# ---------------------------------------------------------------- suggest


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("grouping", ["global", "per_layer", "per_matrix", "per_gate"])
def test_suggested_policies_validate(tiny_study, grouping, bidirectional):
    cfg = _config(
        tiny_study,
        {
            "sparsity": {"groups": grouping, "range": [0.5, 0.95], "units": [0.2, 0.9], "head": [0.1, 0.5]},
            "methods": ["magnitude", "taylor", "l1", "group_lasso", "random"],
            "schedule": {"kinds": ["agp", "one_shot", "linear", "dynamic"], "end_before_last": 1},
            "grad_clip": {"range": [0.5, 2.0], "algorithms": ["norm", "value"]},
            "max_seq_len": [None, 8],
        },
        hidden_sizes=[16, 8],
        bidirectional=bidirectional,
    )
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    space = SearchSpace(cfg, arch)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        policy = space.suggest(trial)
        seen.add((policy.method, policy.granularity))
        _check_policy(arch, policy)
        assert 0.5 <= policy.grad_clip.value <= 2.0
        assert 2 <= policy.finetune.epochs <= 3
        assert policy.schedule.end_epoch <= policy.finetune.epochs - 1
        if policy.granularity == "unstructured":
            assert 0.1 <= policy.sparsity["head"] <= 0.5
            values = {k: v for k, v in policy.sparsity.items() if k != "head"}
            assert all(0.5 <= v <= 0.95 for v in values.values())
            if bidirectional:  # both directions of a matrix share the sampled value
                for k, v in values.items():
                    if ".fwd." in k:
                        assert values[k.replace(".fwd.", ".bwd.")] == v
        else:
            assert "head" not in policy.sparsity
            assert all(0.2 <= v <= 0.9 for v in policy.sparsity.values())
            if bidirectional:
                for l in (0, 1):
                    assert policy.sparsity[f"rnn.{l}.fwd"] == policy.sparsity[f"rnn.{l}.bwd"]
        if policy.method in ("l1", "group_lasso"):
            assert trial.params[f"regularization.{policy.method}"] == policy.regularization
        study.tell(trial, [0.5, 1.0])
    assert ("group_lasso", "hidden_unit") in seen and ("l1", "unstructured") in seen
    assert ("l1", "hidden_unit") not in seen and ("group_lasso", "unstructured") not in seen


def test_hidden_unit_params_are_named_by_layer(tiny_study):
    cfg = _config(tiny_study, {"granularities": ["hidden_unit"], "methods": ["magnitude"], "sparsity": {"units": [0.25, 0.5]}}, hidden_sizes=[16, 8], bidirectional=True)
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    policy = SearchSpace(cfg, arch).suggest(trial)
    assert {k for k in trial.params if k.startswith("units.")} == {"units.rnn.0", "units.rnn.1"}
    assert "method" not in trial.params  # a single method/granularity pair is not a choice
    assert policy.sparsity == {
        "rnn.0.fwd": trial.params["units.rnn.0"],
        "rnn.0.bwd": trial.params["units.rnn.0"],
        "rnn.1.fwd": trial.params["units.rnn.1"],
        "rnn.1.bwd": trial.params["units.rnn.1"],
    }


def test_degenerate_ranges_are_constants_not_params(tiny_study):
    cfg = _config(
        tiny_study,
        {"granularities": ["unstructured"], "methods": ["magnitude"], "sparsity": {"groups": "global", "range": [0.7, 0.7]},
         "finetune": {"epochs": [2, 2], "lr": [0.001, 0.001]}, "grad_clip": {"range": [1.0, 1.0]}, "schedule": {"kinds": ["agp"], "end_before_last": 0}},
    )
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    policy = SearchSpace(cfg, arch).suggest(trial)
    assert trial.params == {}
    assert set(policy.sparsity.values()) == {0.7}
    assert policy.finetune.epochs == 2 and policy.finetune.lr == 0.001 and policy.grad_clip.value == 1.0


# ---------------------------------------------------------------- warm start / smallest arch


@pytest.mark.parametrize("bidirectional", [False, True])
def test_warm_start_params_enqueue_and_validate(tiny_study, bidirectional):
    cfg = _config(tiny_study, {"sparsity": {"groups": "per_matrix", "range": [0.5, 0.9], "units": [0.2, 0.75]}}, hidden_sizes=[16, 8], bidirectional=bidirectional)
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    space = SearchSpace(cfg, arch)
    params = space.warm_start_params()
    # unstructured 0.8, 0.9 (0.95 clips to 0.9: deduplicated); units: the fractions that fit 25 / 10 / 5 / 2 / 1 %
    # of this tiny model, clipped to 0.75 and deduplicated
    units = sorted({min(max(f, 0.2), 0.75) for f in space.unit_fractions_for_sizes(UNIT_SIZE_TARGETS)})
    assert [p["units.rnn.0"] for p in params if "units.rnn.0" in p] == units
    assert len(params) == 2 + len(units)
    assert len({tuple(sorted(p.items())) for p in params}) == len(params)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for p in params:
        study.enqueue_trial(p)
    for p in params:
        trial = study.ask()
        policy = space.suggest(trial)
        for key, value in p.items():
            assert trial.params[key] == value
        assert p["schedule.kind"] == "agp" == policy.schedule.kind
        _check_policy(arch, policy)
        study.tell(trial, [0.5, 1.0])
    assert [p["method"] for p in params] == ["magnitude/unstructured"] * 2 + ["taylor/hidden_unit"] * len(units)


def test_warm_start_unit_levels_land_on_the_largest_width_that_fits_each_size():
    """JapaneseVowels' model: the uniform widths a user would train at 25 / 10 / 5 / 2 / 1 % of dense (benchmarks' widths)."""
    cfg = load_config(Path(__file__).parents[2] / "search_spaces" / "japanese_vowels_lstm.yaml")
    arch = ArchSpec("lstm", 12, [[128, 128], [128, 128]], 9, "last", 32, 0.1)
    space = SearchSpace(cfg, arch)
    fractions = space.unit_fractions_for_sizes(UNIT_SIZE_TARGETS)
    widths = [space._with_units_removed(f).hidden_sizes[0][0] for f in fractions]
    assert widths == [62, 38, 26, 16, 10]

    def size(width):
        return sum(p.numel() for p in RNNClassifier(space._with_units_removed(1 - width / 128)).parameters())

    dense = size(128)
    for target, width in zip(UNIT_SIZE_TARGETS, widths):
        assert size(width) <= target * dense < size(width + 1)
    warm = [p for p in space.warm_start_params() if p.get("method") == "taylor/hidden_unit"]
    assert [p["units.rnn.0"] for p in warm] == fractions


def test_warm_start_single_pair_has_no_method_param(tiny_study):
    cfg = _config(tiny_study, {"methods": ["magnitude"], "granularities": ["unstructured"], "schedule": {"kinds": ["agp"]}})
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    params = space.warm_start_params()
    assert [p["sparsity.rnn.0.ih"] for p in params] == [0.8, 0.9, 0.95]
    assert all("method" not in p and "schedule.kind" not in p for p in params)


def test_smallest_arch(tiny_study):
    cfg = _config(tiny_study, {"sparsity": {"units": [0.1, 0.75]}}, hidden_sizes=[16, 8], bidirectional=True)
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    assert space.smallest_arch().hidden_sizes == [[4, 4], [2, 2]]
    cfg = _config(tiny_study, {"granularities": ["unstructured"]})
    assert SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4)).smallest_arch() is None

"""The size-first search space: a sampled size and how to spend it → a valid policy of that size; warm starts."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoprune.errors import ConfigError, ConstraintError

from autoprune.config import config_from_dict, load_config
from autoprune.models.arch import ArchSpec
from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.groups import ModelGroups
from autoprune.runtime.measure import dense_size_bytes
from autoprune.search.sizing import Allocation, Limits, planned_bytes, solve
from autoprune.search.space import UNIT_SIZE_TARGETS, SearchSpace, unit_fractions_for_sizes, with_units_removed
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
    """The policy names only groups the model has, and a hidden-unit policy removes units and keeps one per layer."""
    groups = ModelGroups(RNNClassifier(arch))
    groups.targets(policy.sparsity, policy.granularity)
    if policy.hybrid:
        groups.targets(policy.weight_sparsity, "unstructured")
    if policy.granularity == "hidden_unit":
        planned = planned_arch(arch, policy)
        pairs = [(b, a) for before, after in zip(arch.hidden_sizes, planned.hidden_sizes) for b, a in zip(before, after)]
        assert all(1 <= a <= b for b, a in pairs)
        assert any(a < b for b, a in pairs) or policy.sparsity == 0.0  # 0: the size asked is the dense model's own at its precision


def _params(arch: ArchSpec) -> int:
    return sum(p.numel() for p in RNNClassifier(arch).parameters())


# ---------------------------------------------------------------- the solver


@pytest.mark.parametrize("arch", [BI, ArchSpec("gru", 1, [[64, 64], [64, 64]], 10, "attention", 32), ArchSpec("lstm", 12, [[128, 128], [128, 128]], 9)])
@pytest.mark.parametrize("precision", ["none", "int8"])
def test_solved_plans_land_on_the_sampled_size(arch, precision):
    """Wherever the limits allow it, a plan's bytes are at most the target, over the whole range of structure shares
    and balances; once single weights may fill what one unit of width leaves, within 20 % of it (a matrix's
    encoding changes in steps: dense, bitmask, CSR)."""
    limits = Limits(units=(0.0, 0.95), weights=(0.0, 0.99))
    total = dense_size_bytes(_params(arch))
    for size in (0.3, 0.1, 0.03, 0.01):
        for structure in (1.0, 0.6, 0.2, 0.0):
            for ih_vs_hh in (-1.0, 0.0, 1.0):
                plan = solve(arch, Allocation(size, structure, (0.5, -0.5) if arch.num_layers > 1 else (), ih_vs_hh, precision), limits)
                if planned_bytes(arch, [[1] * len(s) for s in arch.hidden_sizes], {}, precision, "torch") > plan.target_bytes:
                    continue  # below what any plan reaches
                assert plan.bytes <= plan.target_bytes == int(size * total)
                if structure < 1.0:
                    assert plan.bytes >= 0.8 * plan.target_bytes, (size, structure, ih_vs_hh, plan)


def test_structure_runs_from_units_only_to_the_widest_sparse_model():
    arch = ArchSpec("gru", 1, [[64, 64], [64, 64]], 10, "attention", 32)
    limits = Limits(units=(0.2, 0.9), weights=(0.5, 0.99))
    widths = [solve(arch, Allocation(0.02, s), limits).hidden_sizes[0][0] for s in (1.0, 0.75, 0.5, 0.25, 0.0)]
    assert widths == sorted(widths) and widths[0] < widths[-1]  # more structure: narrower, denser
    assert solve(arch, Allocation(0.02, 1.0), limits).weight_sparsity == {}
    sparse = solve(arch, Allocation(0.02, 0.0), limits).weight_sparsity
    assert sparse and all(0.5 <= v <= 0.99 for v in sparse.values())
    even = solve(arch, Allocation(0.02, 0.3, (), 0.0), limits).weight_sparsity
    balanced = solve(arch, Allocation(0.02, 0.3, (), 1.0), limits).weight_sparsity
    assert balanced["rnn.1.ih"] < even["rnn.1.ih"] and balanced["rnn.1.hh"] > even["rnn.1.hh"]  # ih denser when ih_vs_hh > 0


def test_weight_densities_follow_each_matrix_shape():
    """Erdős–Rényi scaling: a matrix's density goes with (rows + cols) / (rows * cols). The one-feature input layer of
    MNIST-1D keeps all its input weights (a few hundred, under 1 % of the bytes) where uniform densities cut most
    units off the input; between two matrices of the model, the ratio of densities is the ratio of the scales."""
    arch = ArchSpec("gru", 1, [[64, 64], [64, 64]], 10, "attention", 32)
    limits = Limits(units=(0.2, 0.9), weights=(0.0, 0.99))
    plan = solve(arch, Allocation(0.02, 0.5), limits)
    assert "rnn.0.ih" not in plan.weight_sparsity  # dense
    density = {m: 1.0 - v for m, v in plan.weight_sparsity.items()}
    hh, ih1 = (192 + 64) / (192 * 64), (192 + 128) / (192 * 128)  # layer 1 reads both directions of layer 0
    assert density["rnn.1.ih"] / density["rnn.1.hh"] == pytest.approx(ih1 / hh, rel=0.02)
    assert density["rnn.0.hh"] == pytest.approx(density["rnn.1.hh"], abs=1e-3)


# ---------------------------------------------------------------- suggest


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("grouping", ["global", "per_layer", "per_matrix"])
def test_suggested_policies_validate_and_hit_their_size(tiny_study, grouping, bidirectional):
    cfg = _config(
        tiny_study,
        {
            "sparsity": {"groups": grouping, "range": [0.5, 0.95], "units": [0.2, 0.9], "head": [0.1, 0.5]},
            "methods": ["magnitude", "taylor", "l1", "group_lasso", "random"],
            "schedule": {"kinds": ["agp", "one_shot", "linear", "dynamic"], "end_before_last": 1},
            "grad_clip": {"range": [0.5, 2.0], "algorithms": ["norm", "value"]},
            "quantize": ["none", "int8"],
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
        seen.add((policy.method, policy.granularity, policy.hybrid))
        _check_policy(arch, policy)
        assert space.size_range[0] <= trial.params["size"] <= space.size_range[1]
        assert 0.5 <= policy.grad_clip.value <= 2.0 and 2 <= policy.finetune.epochs <= 3
        assert policy.schedule.end_epoch <= policy.finetune.epochs - 1
        assert ("units.rnn.0" in trial.params) == (grouping != "global")
        assert ("ih_vs_hh" in trial.params) == (grouping == "per_matrix" and policy.method not in ("group_lasso",))
        if policy.sparsity == 0.0:
            assert policy.quantize == "int8" or trial.params["size"] >= 0.45  # nothing to prune: the size asked is the model's own
        else:
            weights = policy.weight_sparsity if policy.hybrid else (policy.sparsity if policy.granularity == "unstructured" else {})
            assert all(0.1 <= v <= 0.95 for v in (weights or {}).values())
            if policy.granularity == "hidden_unit":
                assert all(0.2 - 1e-9 <= v <= 0.9 + 1e-9 for v in policy.sparsity.values())
        if policy.method in ("l1", "group_lasso"):
            assert trial.params[f"regularization.{policy.method}"] == policy.regularization
        study.tell(trial, [0.5, 1.0])
    methods = {(m, g) for m, g, _ in seen}
    assert ("group_lasso", "hidden_unit") in methods and ("l1", "unstructured") in methods
    assert ("l1", "hidden_unit") not in methods and ("group_lasso", "unstructured") not in methods
    assert any(hybrid for _, _, hybrid in seen)  # units then single weights


def test_size_is_sampled_on_a_log_scale_and_reaches_small_models(tiny_study):
    """The point of size first: about as many trials per decade of size, so small models are sampled at all."""
    cfg = _config(tiny_study, {"size": [0.005, 0.5], "sparsity": {"units": [0.0, 0.95], "range": [0.0, 0.99]}}, hidden_sizes=[64, 64], bidirectional=True)
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    space = SearchSpace(cfg, arch)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = []
    for _ in range(200):
        trial = study.ask()
        space.suggest(trial)
        sizes.append(trial.params["size"])
        study.tell(trial, [0.5, 1.0])
    small = sum(s <= 0.05 for s in sizes) / len(sizes)
    assert 0.4 <= small <= 0.6  # half of the log range lies below 5 %
    assert sum(s <= 0.02 for s in sizes) / len(sizes) >= 0.25


def test_a_size_budget_caps_the_sizes_asked(tiny_study):
    cfg = _config(tiny_study, {"constraints": {"max_size_bytes": 2000}}, hidden_sizes=[64, 64])
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    space = SearchSpace(cfg, arch)
    assert space.size_range[1] == pytest.approx(2000 / dense_size_bytes(_params(arch)))
    cfg = _config(tiny_study, {"constraints": {"max_size_bytes": 10}}, hidden_sizes=[64, 64])
    with pytest.raises(ConstraintError, match=r"max_size_bytes=10 cannot be met: the smallest model the search space allows .* the budget is 0\.0"):
        SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    cfg = _config(tiny_study, {"size": [0.0001, 0.001]}, hidden_sizes=[64, 64])  # sizes asked below what the limits reach
    with pytest.raises(ConfigError, match=r"space\.yaml: search\.size: no model the space allows is that small"):
        SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))


def test_per_gate_is_refused_in_one_line(tiny_study):
    with pytest.raises(ConfigError, match=r"search\.sparsity\.groups: per_gate is not searched by the size-first space.*use per_matrix"):
        _config(tiny_study, {"sparsity": {"groups": "per_gate"}})


def test_degenerate_ranges_are_constants_not_params(tiny_study):
    cfg = _config(
        tiny_study,
        {"granularities": ["unstructured"], "methods": ["magnitude"], "sparsity": {"groups": "global", "range": [0.7, 0.7]},
         "size": [0.5, 0.5], "finetune": {"epochs": [2, 2], "lr": [0.001, 0.001]}, "grad_clip": {"range": [1.0, 1.0]},
         "schedule": {"kinds": ["agp"], "end_before_last": 0}},
    )
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    policy = SearchSpace(cfg, arch).suggest(trial)
    assert trial.params == {}
    assert set(policy.sparsity.values()) == {0.7}  # the one sparsity the range allows
    assert policy.finetune.epochs == 2 and policy.finetune.lr == 0.001 and policy.grad_clip.value == 1.0


# ---------------------------------------------------------------- warm start / smallest arch


@pytest.mark.parametrize("bidirectional", [False, True])
def test_warm_start_params_enqueue_and_validate(tiny_study, bidirectional):
    cfg = _config(tiny_study, {"sparsity": {"groups": "per_matrix", "range": [0.5, 0.9], "units": [0.2, 0.75]}, "quantize": ["none", "int8"]},
                  hidden_sizes=[16, 8], bidirectional=bidirectional)
    arch = ArchSpec.from_config(cfg.model, 3, 4)
    space = SearchSpace(cfg, arch)
    params = space.warm_start_params()
    assert len({tuple(sorted(p.items())) for p in params}) == len(params)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for p in params:
        study.enqueue_trial(p)
    policies = []
    for p in params:
        trial = study.ask()
        policy = space.suggest(trial)
        for key, value in p.items():
            assert trial.params[key] == value
        assert p["schedule.kind"] == "agp" == policy.schedule.kind
        _check_policy(arch, policy)
        policies.append(policy)
        study.tell(trial, [0.5, 1.0])
    unstructured = [q for q in policies if q.granularity == "unstructured"]
    assert len(unstructured) == 2  # 0.95 clips to the range's 0.9
    for q, level in zip(unstructured, (0.8, 0.9)):  # the bytes of one sparsity for every matrix, spent as the space spends them
        uniform = {f"rnn.{l}.{k}": 1.0 - level for l in range(arch.num_layers) for k in ("ih", "hh")}
        target = planned_bytes(arch, arch.hidden_sizes, uniform, "none", "torch")
        spent = planned_bytes(arch, arch.hidden_sizes, {m: 1.0 - v for m, v in q.sparsity.items()}, "none", "torch")
        assert 0.8 * target <= spent <= target
    units = [q for q in policies if q.granularity == "hidden_unit"]
    assert all(not q.hybrid and q.method == "taylor" for q in units)
    assert {q.quantize for q in units} == {"none", "int8"}
    for q in units:  # uniform: every layer keeps the same share of its units (up to rounding to whole units)
        widths = planned_arch(arch, q).hidden_sizes
        ratios = [w / h for before, after in zip(arch.hidden_sizes, widths) for h, w in zip(before, after)]
        assert max(ratios) - min(ratios) <= 1 / min(min(s) for s in arch.hidden_sizes)


def test_warm_start_unit_levels_land_on_the_largest_width_that_fits_each_size():
    """JapaneseVowels' model: the uniform widths a user would train at 25 / 10 / 5 / 2 / 1 % of dense (benchmarks' widths)."""
    cfg = load_config(Path(__file__).parents[2] / "search_spaces" / "japanese_vowels_lstm.yaml")
    arch = ArchSpec("lstm", 12, [[128, 128], [128, 128]], 9, "last", 32, 0.1)
    space = SearchSpace(cfg, arch)
    fractions = unit_fractions_for_sizes(arch, UNIT_SIZE_TARGETS)
    widths = [with_units_removed(arch, f).hidden_sizes[0][0] for f in fractions]
    assert widths == [62, 38, 26, 16, 10]
    dense = _params(arch)
    for target, width in zip(UNIT_SIZE_TARGETS, widths):
        assert _params(with_units_removed(arch, 1 - width / 128)) <= target * dense < _params(with_units_removed(arch, 1 - (width + 1) / 128))
    study = optuna.create_study(directions=["maximize", "minimize"])
    planned = []
    for p in space.warm_start_params():
        study.enqueue_trial(p)
        trial = study.ask()
        policy = space.suggest(trial)
        if policy.granularity == "hidden_unit" and policy.quantize == "none":
            planned.append(planned_arch(arch, policy).hidden_sizes[0][0])
        study.tell(trial, [0.5, 1.0])
    assert planned == widths


def test_warm_start_single_method_has_no_method_param(tiny_study):
    cfg = _config(tiny_study, {"methods": ["magnitude"], "granularities": ["unstructured"], "schedule": {"kinds": ["agp"]}})
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    params = space.warm_start_params()
    assert len(params) == 3
    assert all("method" not in p and "schedule.kind" not in p and "structure" not in p for p in params)


def test_smallest_arch(tiny_study):
    cfg = _config(tiny_study, {"sparsity": {"units": [0.1, 0.75]}}, hidden_sizes=[16, 8], bidirectional=True)
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    assert space.smallest_arch().hidden_sizes == [[4, 4], [2, 2]]
    cfg = _config(tiny_study, {"granularities": ["unstructured"]})
    assert SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4)).smallest_arch() is None

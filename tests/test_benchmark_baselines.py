"""The search_quality baselines do what they claim: widths that fit a size level, the peers' pruning code really prunes."""

from __future__ import annotations

import pytest
import torch

from autoprune.models.arch import ArchSpec
from autoprune.reference.dense import ensure_dense
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
    from autoprune.trial.run import planned_arch

    arch = ArchSpec("lstm", 3, [[16]], 2, "last", 32, 0.0)
    policy = sq.uniform_unit_policy("taylor", 1 - 5 / 16, tiny_config, recovery="rewind")
    assert planned_arch(arch, policy).hidden_sizes == [[5]]
    assert policy.recovery == "rewind" and policy.schedule.kind == "agp" and policy.finetune.epochs == sq.FINETUNE_EPOCHS


def test_uniform_baselines_recover_as_the_warm_start_does(tiny_study):
    from autoprune.config import config_from_dict
    from autoprune.search.space import SearchSpace

    arch = ArchSpec("lstm", 3, [[16]], 2, "last", 32, 0.0)
    for offered, expected in ([["finetune"], "finetune"], [["finetune", "rewind"], "rewind"], [["rewind", "scratch"], "scratch"]):
        tiny_study["search"] = {"recovery": offered, "granularities": ["hidden_unit"]}
        config = config_from_dict(tiny_study)
        assert sq.uniform_recovery(config) == expected
        warm = SearchSpace(config, arch).warm_start_params()
        assert {p.get("recovery", offered[0]) for p in warm} == {expected}  # the very recovery the search starts its uniform trials with


@pytest.mark.parametrize("task", ["jv", "mnist1d"])
def test_warm_start_unit_trials_are_the_uniform_baselines(task):
    """The search's uniform hidden-unit trials run exactly what the uniform Taylor baseline runs
    (fraction, recovery, fine-tune epochs and lr, clipping, schedule), so the search's candidates
    include the baseline rather than the same shape with a sampled fine-tune."""
    from types import SimpleNamespace

    import optuna

    from autoprune.models.arch import ArchSpec as Arch
    from autoprune.pruning.policy import FinetuneConfig
    from autoprune.search.space import SearchSpace
    from autoprune.search.study import enqueue_warm_start
    from autoprune.search.tell import start_trial
    from autoprune.trial.run import planned_arch

    def next_unit_policy(study, space):  # as a search starts them (multi-fidelity's recovery attribute applied); skip the others
        while True:
            trial = study.ask()
            policy = start_trial(trial, space, "local")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if trial.params.get("structure") == 1.0 and trial.params.get("quantize", "none") == "none":
                return policy

    assert sq.BASELINE_LR == FinetuneConfig().lr
    config = sq.search_config(SimpleNamespace(quick=False), task, "nsga2")
    width = {"jv": 128, "mnist1d": 64}[task]
    inputs, classes = {"jv": (12, 9), "mnist1d": (1, 10)}[task]
    arch = Arch.from_config(config.model, inputs, classes)
    assert max(max(h) for h in arch.hidden_sizes) == width
    space = SearchSpace(config, arch)
    warm = [p for p in space.warm_start_params() if p.get("structure") == 1.0 and p.get("quantize", "none") == "none"]
    assert len(warm) >= 4
    study = optuna.create_study(directions=["maximize", "minimize"])
    enqueue_warm_start(study, space, 100)
    for _, level in zip(warm, sq.LEVELS_WARM):
        policy = next_unit_policy(study, space)
        baseline = sq.uniform_unit_policy("taylor", sq.fraction_for_level(arch, level), config, recovery=sq.uniform_recovery(config))
        rung = config.search.fidelity.finetune_epochs if config.search.fidelity.enabled else None
        same = ("method", "granularity", "recovery", "grad_clip", "distillation", "quantize")
        for field in same + (("finetune", "schedule") if rung is None else ()):
            assert getattr(policy, field) == getattr(baseline, field), field
        if rung is not None:
            # a cheap rung (JapaneseVowels): the warm start prunes over the rung's epochs, as every trial but the promotions,
            # and then retrains the found widths from a fresh, seeded init, so the model it yields is the baseline's whatever
            # the rung; a rung before a rewind would change it, and no shipped study has one
            assert policy.finetune.epochs == rung and policy.recovery == "scratch"
            assert (policy.finetune.lr, policy.finetune.min_epoch_steps, policy.schedule.kind) == (baseline.finetune.lr, baseline.finetune.min_epoch_steps, baseline.schedule.kind)
        assert set(policy.sparsity.values()) == {baseline.sparsity}  # per layer here, one number there
        assert planned_arch(arch, policy) == planned_arch(arch, baseline)


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


@pytest.mark.slow
def test_int8_variant_of_a_baseline_point(tiny_study, runs_dir):
    from autoprune.config import config_from_dict
    from autoprune.reference.cache import load_dense_model
    from autoprune.tasks import build_datamodule

    tiny_study["search"] = {"quantize": ["none", "int8"]}
    config = config_from_dict(tiny_study, source="tiny.yaml")
    assert sq.wants_int8(config) and not sq.wants_int8(config_from_dict({**tiny_study, "search": {}}, source="tiny.yaml"))
    dense = ensure_dense(config, runs_dir)
    row = sq._row("dense", 0.9, 0.8, 1.0, dense)
    q = sq.int8_variant(load_dense_model(dense.checkpoint)[0], build_datamodule(config), config, dense, row)
    assert q["trial"] == "dense int8" and q["precision"] == "int8"
    assert 0.2 < q["size_ratio"] < 0.5  # int8 weights: about a quarter of float32, plus scales
    assert 0.0 <= q["val_accuracy"] <= 1.0 and 0.0 <= q["test_accuracy"] <= 1.0


def test_resume_reuses_only_jobs_kept_by_the_same_commit_and_drops_half_run_searches(tmp_path, monkeypatch):
    from benchmarks._common import Context

    ctx = Context(quick=True, runs_root=tmp_path, results_dir=tmp_path / "results", command="test", machine={"commit at start": "abc"})
    done, half, stale = ("jv", 0, "scratch"), ("jv", 0, "autoprune"), ("jv", 0, "random")
    sq.keep_result(ctx, done, {"rows": [{"size_ratio": 0.5}], "wall_s": 7.0})
    stale_ctx = Context(quick=True, runs_root=tmp_path, results_dir=tmp_path / "results", command="test", machine={"commit at start": "old"})
    sq.keep_result(stale_ctx, stale, {"rows": [], "wall_s": 3.0})
    for job in (half, stale):  # studies a stopped run left behind
        (sq.runs_dir(ctx) / sq.study_name(job[0], job[2], job[1]) / "trials").mkdir(parents=True)
    ran = []
    monkeypatch.setattr(sq, "_guarded", lambda c, job: ran.append(job) or {"rows": [], "wall_s": 1.0})
    monkeypatch.setenv("AUTOPRUNE_SQ_RESUME", "1")
    out = sq.run_jobs(ctx, [done, half, stale], workers=1)
    assert ran == [half, stale]  # the stale job was kept by another commit: it runs again
    assert out[done] == {"rows": [{"size_ratio": 0.5}], "wall_s": 7.0, "resumed": True}
    assert not (sq.runs_dir(ctx) / sq.study_name("jv", "autoprune")).exists()
    assert not (sq.runs_dir(ctx) / sq.study_name("jv", "random")).exists()
    monkeypatch.delenv("AUTOPRUNE_SQ_RESUME")
    ran.clear()
    sq.run_jobs(ctx, [done], workers=1)
    assert ran == [done]  # without AUTOPRUNE_SQ_RESUME nothing is reused


def test_oracle_bounds_every_pick_and_is_the_best_test_accuracy_that_small():
    rows = [
        {"size_ratio": 0.009, "val_accuracy": 0.98, "test_accuracy": 0.93, "val_score": 0.98},  # the winner's curse: picked, tests low
        {"size_ratio": 0.008, "val_accuracy": 0.96, "test_accuracy": 0.97, "val_score": 0.96},
        {"size_ratio": 0.03, "val_accuracy": 0.99, "test_accuracy": 0.99, "val_score": 0.99},  # too large for 1 %
        {"size_ratio": 0.005, "val_accuracy": None, "test_accuracy": None},  # failed
    ]
    assert sq.at_level(rows, 0.01)["test_accuracy"] == 0.93 and sq.oracle_at(rows, 0.01) == 0.97
    assert sq.oracle_at(rows, 0.05) == 0.99 and sq.oracle_at(rows, 0.001) is None
    for level in sq.LEVELS:
        pick = sq.at_level(rows, level)
        assert pick is None or pick["test_accuracy"] <= sq.oracle_at(rows, level)


def test_target_lines_give_the_oracle_or_say_no_trial_is_that_small():
    row = lambda size, val, test, **kw: {"size_ratio": size, "val_accuracy": val, "test_accuracy": test, "val_score": val,
                                         "dense_val_accuracy": 0.97, "dense_test_accuracy": 0.97, **kw}
    res = {("jv", 0, key): {"rows": [row(0.5, 0.9, 0.9)]} for key, _ in sq.CONTENDERS}
    res[("jv", 0, "autoprune")] = {"rows": [row(0.04, 0.98, 0.95, origin="sampled", trial=7), row(0.03, 0.96, 0.97, origin="warm_start", trial=2)]}
    res[("jv", 0, "scratch")] = {"rows": [row(0.009, 0.96, 0.96), row(0.04, 0.96, 0.96)]}
    targets, lines = sq.targets("jv", sq.analyse("jv", [0], res), 0.97, [0], {"now": 1.0})
    at = {line.split(":")[0]: line for line in lines if line.startswith("- at ≤")}
    assert "autoprune 0.9500 vs the best baseline, small dense from scratch, 0.9600: -1.00 points" in at["- at ≤ 5%"]
    assert "any of its trials that small, 0.9700 (+1.00 points)" in at["- at ≤ 5%"]  # the warm-start trial the pick passed over
    assert "None of its trials is that small." in at["- at ≤ 1%"] and targets["margins"]["1%"]["oracle"] is None
    assert targets["margins"]["5%"]["oracle_points"] == pytest.approx(1.0)

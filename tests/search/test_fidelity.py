"""Multi-fidelity: sampled trials fine-tune, the best per size tier are promoted to retraining as new trials
that start from their pruned weights; the study stays the one record and the trial count stays exact."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

import autoprune.search.objective as objective_mod
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.search import attrs
from autoprune.search.claim import NotYet, next_trial
from autoprune.search.fidelity import Promoter, promoter_of, tier_of
from autoprune.search.run import run_search
from autoprune.search.study import open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

_spec = importlib.util.spec_from_file_location("_autoprune_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)


def _tiny(trials: int = 8, **search) -> dict:
    data = copy.deepcopy(_root.TINY_STUDY)
    data["search"] = {
        "trials": trials,
        "finetune": {"epochs": [2, 3]},
        "schedule": {"kinds": ["agp"], "end_before_last": 0},
        "early_stop": {"after_epochs": None},
        "recipe_check": {"enabled": False},
        "recovery": ["finetune", "rewind"],
        "recovery_epochs": 2,
        "fidelity": {"enabled": True, "share": 0.25, "eta": 2},
        "sampler": "tpe",
        **search,
    }
    return data


def _complete(study, size_ratio: float, acc: float, checkpoint: str = "x/model.pt", origin: str | None = None):
    """A finished fine-tune-only trial of the given size and validation accuracy, as the tell path records it."""
    trial = study.ask()
    trial.set_user_attr(attrs.POLICY, {"recovery": "finetune"})
    trial.set_user_attr(attrs.STATE, "complete")
    trial.set_user_attr(attrs.RESULT, {"state": "complete", "val_accuracy": acc, "size_bytes": int(1000 * size_ratio), "checkpoint": checkpoint,
                                       "dense": {"size_bytes": 1000, "val_accuracy": 0.9}})
    if origin:
        trial.set_user_attr(attrs.ORIGIN, origin)
    study.tell(trial, [acc, 1000 * size_ratio])
    return trial


def test_a_tier_gets_a_promotion_once_it_has_eta_trials_and_only_its_best():
    study = optuna.create_study(directions=["maximize", "minimize"])
    promoter = Promoter(total=20, share=0.25, eta=3)
    assert tier_of(0.015) == 1 and tier_of(0.3) == 5
    _complete(study, 0.015, 0.80)
    _complete(study, 0.018, 0.90)
    assert promoter.next_promotion(study) is None  # 2 of eta=3: no verdict yet
    _complete(study, 0.012, 0.85)
    _complete(study, 0.30, 0.99)  # another tier: alone, no verdict
    assert promoter.next_promotion(study) == 1  # the best of the 1-2 % tier
    promoter.promote(study, 1)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.user_attrs[attrs.PROMOTED_FROM] for t in waiting] == [1] and waiting[0].user_attrs[attrs.ORIGIN] == attrs.PROMOTED
    assert promoter.next_promotion(study) is None  # 1 of the tier's 3 promoted: floor(3 / 3)


def test_once_the_sampled_budget_is_spent_the_rest_goes_to_promotions():
    study = optuna.create_study(directions=["maximize", "minimize"])
    promoter = Promoter(total=6, share=0.34, eta=3)  # 2 promotions, 4 sampled
    for size, acc in ((0.3, 0.9), (0.3, 0.8), (0.03, 0.7), (0.015, 0.6)):
        _complete(study, size, acc)
    assert promoter.sampled_budget_left(study) == 0
    first = promoter.next_promotion(study)
    assert first in (0, 2, 3)  # one per tier first, the most accurate of the least promoted tiers
    promoter.promote(study, first)
    assert next_trial(study, promoter).user_attrs[attrs.PROMOTED_FROM] == first
    running = study.ask()  # a trial still running may still earn one: claims wait
    assert promoter.next_promotion(study) not in (None, first)  # the other tiers are still unpromoted
    study.tell(running, state=TrialState.FAIL)


def test_forced_promotions_serve_the_smallest_of_the_least_promoted_tiers_first():
    study = optuna.create_study(directions=["maximize", "minimize"])
    promoter = Promoter(total=6, share=0.34, eta=3)  # 2 promotions, 4 sampled
    for size, acc in ((0.3, 0.9), (0.04, 0.8), (0.008, 0.6), (0.009, 0.5)):
        _complete(study, size, acc)
    assert promoter.next_promotion(study) == 2  # the best of the <= 1 % tier, though 0 and 1 are more accurate
    promoter.promote(study, 2)
    assert promoter.next_promotion(study) == 1  # then the 2-5 % tier (unpromoted, smaller than 25 %+); not 3, whose tier has one
    promoter.promote(study, 1)
    assert promoter.next_promotion(study) is None  # the quota is spent


def test_max_size_ratio_keeps_promotions_at_the_sizes_to_deploy():
    study = optuna.create_study(directions=["maximize", "minimize"])
    promoter = Promoter(total=9, share=0.34, eta=3, max_size_ratio=0.10)  # 3 promotions, 6 sampled
    for acc in (0.95, 0.94, 0.93):
        _complete(study, 0.3, acc)  # a full tier of larger models: a verdict, but above max_size_ratio
    assert promoter.next_promotion(study) is None
    for size, acc in ((0.05, 0.7), (0.2, 0.99), (0.015, 0.6)):
        _complete(study, size, acc)
    assert promoter.sampled_budget_left(study) == 0
    first = promoter.next_promotion(study)
    promoter.promote(study, first)
    second = promoter.next_promotion(study)
    promoter.promote(study, second)
    assert (first, second) == (5, 3)  # the 1-2 % tier, then the 2-5 % one; nothing at 20 % or 30 %
    assert promoter.next_promotion(study) is None  # nothing left at <= 10 %: the last slot goes to a sampled trial
    assert Promoter(total=9, share=0.34, eta=3).next_promotion(study) == 0  # without the cap the 25 %+ tier has a verdict


def test_max_size_ratio_is_checked():
    assert promoter_of(config_from_dict(_tiny(fidelity={"enabled": True, "max_size_ratio": 0.05}))).max_size_ratio == 0.05
    with pytest.raises(ConfigError, match="max_size_ratio"):
        config_from_dict(_tiny(fidelity={"enabled": True, "max_size_ratio": 1.5}))


def test_nothing_due_while_others_run_is_not_yet():
    study = optuna.create_study(directions=["maximize", "minimize"])
    promoter = Promoter(total=2, share=0.5, eta=3)
    running = study.ask()
    _complete(study, 0.3, 0.9)
    promoter.promote(study, 1)
    study.ask()  # the promotion, running
    with pytest.raises(NotYet):
        next_trial(study, promoter)
    study.tell(running, state=TrialState.FAIL)


def test_fidelity_needs_a_retraining_to_promote_to(tiny_study):
    tiny_study["search"] = {"fidelity": {"enabled": True}}
    with pytest.raises(ConfigError, match=r"fidelity\.enabled promotes the best trials to a retraining: offer rewind or scratch in search\.recovery"):
        config_from_dict(tiny_study, source="tiny.yaml")
    assert promoter_of(config_from_dict(_tiny())) is not None
    assert promoter_of(config_from_dict(_tiny(fidelity={"enabled": False}))) is None


@pytest.mark.slow
def test_a_multi_fidelity_search_promotes_from_saved_weights_and_counts_exactly(runs_dir, monkeypatch):
    calls = []
    real = objective_mod.run_trial

    def recording(config, policy, options=None):
        calls.append(SimpleNamespace(recovery=policy.recovery, resume_from=options.resume_from))
        return real(config, policy, options)

    monkeypatch.setattr(objective_mod, "run_trial", recording)
    config = config_from_dict(_tiny(trials=8, warm_start=False), source="tiny.yaml")
    summary = run_search(config, str(runs_dir))
    study, _ = open_study("tiny", str(runs_dir))
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 8 == summary.n_trials - summary.n_failed
    promoted = [t for t in trials if attrs.PROMOTED_FROM in t.user_attrs]
    assert len(promoted) == 2  # round(0.25 * 8)
    by_number = {t.number: t for t in trials}
    for t in promoted:
        source = by_number[t.user_attrs[attrs.PROMOTED_FROM]]
        assert t.params == source.params  # the same policy, retrained
        assert t.user_attrs[attrs.POLICY]["recovery"] == "rewind" and source.user_attrs[attrs.POLICY]["recovery"] == "finetune"
        assert t.user_attrs[attrs.RESULT]["hidden_sizes"] == source.user_attrs[attrs.RESULT]["hidden_sizes"]
    resumed = [c for c in calls if c.resume_from]
    assert len(resumed) == 2 and all(c.recovery == "rewind" and Path(c.resume_from).is_file() for c in resumed)
    assert all(c.recovery == "finetune" for c in calls if not c.resume_from)  # sampled trials only fine-tune


def test_the_cheap_rung_fine_tunes_its_own_epochs_and_the_warm_start_too(tiny_study):
    """``fidelity.finetune_epochs`` is every non-promoted trial's fine-tune (sampled and warm start): not a parameter then."""
    from autoprune.models.arch import ArchSpec
    from autoprune.search.space import SearchSpace

    cfg = config_from_dict(_tiny(finetune={"epochs": [3, 6]}, fidelity={"enabled": True, "finetune_epochs": 2}))
    space = SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4))
    params = space.warm_start_params()
    assert params and all("finetune.epochs" not in p for p in params)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for p in params:
        study.enqueue_trial(p)
    for _ in range(len(params) + 6):
        trial = study.ask()
        policy = space.suggest(trial)
        assert policy.finetune.epochs == 2 and "finetune.epochs" not in trial.params
        assert policy.schedule.end_epoch <= 1  # pruning ends within the rung
        study.tell(trial, [0.5, 1.0])
    # without the rung the range is searched, and the warm start fine-tunes as a user would (8 epochs, clipped into it)
    plain = SearchSpace(config_from_dict(_tiny(finetune={"epochs": [3, 6]})), ArchSpec.from_config(cfg.model, 3, 4))
    assert {p["finetune.epochs"] for p in plain.warm_start_params()} == {6}
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    assert 3 <= plain.suggest(trial).finetune.epochs <= 6 and "finetune.epochs" in trial.params


def test_the_cheap_rung_is_only_multi_fidelity_s():
    """Turning multi-fidelity off (e.g. to compare) keeps the rung's key valid and fine-tunes as searched."""
    from autoprune.models.arch import ArchSpec
    from autoprune.search.space import SearchSpace

    cfg = config_from_dict(_tiny(finetune={"epochs": [3, 3]}, early_stop={"after_epochs": 2}, fidelity={"enabled": False, "finetune_epochs": 2}))
    assert SearchSpace(cfg, ArchSpec.from_config(cfg.model, 3, 4)).finetune_epochs == (3, 3)
    with pytest.raises(ConfigError, match="finetune_epochs"):
        config_from_dict(_tiny(fidelity={"enabled": True, "finetune_epochs": 0}))


def test_a_rung_that_ends_pruning_before_the_hopeless_check_is_refused():
    """A 4-epoch rung pruned over epochs 0-1 and was judged after 2 at full sparsity: every small trial stopped early
    (benchmarks/results/sampler_choice_rung4.md)."""
    sched = {"kinds": ["agp"], "end_before_last": 2}
    with pytest.raises(ConfigError, match=r"fidelity\.finetune_epochs 4 ends pruning at epoch 1, so the hopeless check after 2 epochs .* give at least 5 rung epochs"):
        config_from_dict(_tiny(schedule=sched, early_stop={"after_epochs": 2}, fidelity={"enabled": True, "finetune_epochs": 4}))
    assert config_from_dict(_tiny(schedule=sched, early_stop={"after_epochs": 2}, fidelity={"enabled": True, "finetune_epochs": 5})).search.fidelity.finetune_epochs == 5
    assert config_from_dict(_tiny(schedule=sched, early_stop={"after_epochs": None}, fidelity={"enabled": True, "finetune_epochs": 4}))

"""Small data sets (issue 14): step budgets, a validation score with a tie-break and a
small-validation warning, the recipe check before a search, and an early-stop floor that a
trial at the floor meets."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace

import optuna
import pytest
import torch

import autoprune.trial.run as dense_mod  # the module whose run_trial is under test (its own ensure_dense / build_datamodule)
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError, TrialStoppedEarly
from autoprune.models.arch import ArchSpec
from autoprune.models.fitting import HopelessStop
from autoprune.pruning.policy import policy_from_dict
from autoprune.reference.dense import ensure_dense
from autoprune.search.recipe_check import check_recipe
from autoprune.search.run import run_search
from autoprune.search.space import SearchSpace
from autoprune.search.study import open_study
from autoprune.tasks.budget import describe_epoch, epoch_steps
from autoprune.tasks.datamodule import _IndexBatches
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial
from autoprune.trial.validation import SMALL_VALIDATION, small_validation_message, val_score

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH = {
    "trials": 2,
    "population_size": 2,
    "warm_start": False,
    "methods": ["magnitude"],
    "granularities": ["unstructured"],
    "finetune": {"epochs": [2, 2], "lr": [0.001, 0.002], "min_epoch_steps": 4},
    "schedule": {"kinds": ["one_shot"], "end_before_last": 0},
    "early_stop": {"after_epochs": None},
}


def _config(tiny_study, **search):
    data = copy.deepcopy(tiny_study)
    data["search"] = {**copy.deepcopy(SEARCH), **search}
    return config_from_dict(data, source="small.yaml")


# ---------------------------------------------------------------- 1. budgets in steps


def test_an_epoch_is_at_least_min_steps_and_each_pass_covers_the_data():
    sampler = _IndexBatches(10, 4, shuffle=True, seed=0, min_batches=7)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 7
    # passes of 3 batches (4 + 4 + 2): the first two passes are whole permutations
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert sorted(torch.cat(batches[3:6]).tolist()) == list(range(10))
    assert torch.cat(batches[:3]).tolist() != torch.cat(batches[3:6]).tolist()  # reshuffled
    # a pass longer than the minimum is left alone
    assert len(list(_IndexBatches(100, 4, shuffle=True, seed=0, min_batches=7))) == 25
    assert epoch_steps(28, 32, 20) == 20 and epoch_steps(4000, 32, 20) == 125 and epoch_steps(28, 32, None) == 1
    assert "20 optimizer steps" in describe_epoch(28, 32, 20) and "one pass" in describe_epoch(28, 32, 20)


def test_trials_train_min_epoch_steps_per_epoch(tiny_study, runs_dir, monkeypatch):
    config = _config(tiny_study)
    arch = ArchSpec.from_dict(ensure_dense(config, runs_dir).arch.to_dict())
    policy = SearchSpace(config, arch).suggest(optuna.trial.FixedTrial({"method": "magnitude", "size": 0.3, "structure": 0.0, "ih_vs_hh": 0.0, "finetune.lr": 0.001, "grad_clip.value": 1.0}))
    assert policy.finetune.min_epoch_steps == 4  # the space hands the budget to every policy
    seen = []
    build = dense_mod.build_datamodule

    def recording(cfg):
        dm = build(cfg)
        seen.append(dm)
        return dm

    monkeypatch.setattr(dense_mod, "build_datamodule", recording)
    big = policy_from_dict({**policy.to_dict(), "finetune": {**policy.to_dict()["finetune"], "min_epoch_steps": 9}})
    result = run_trial(config, big, TrialOptions(runs_dir=str(runs_dir), measure_latency=False))
    assert result.state == "complete"
    (dm,) = seen
    assert dm.n_train == 96 and len(dm.train_dataloader()) == 9  # one pass would be 3 batches


# ---------------------------------------------------------------- 2. validation score


def test_val_score_breaks_ties_by_loss_and_never_reorders_counts():
    n = 12
    assert val_score(11 / n, 0.1, n) > val_score(11 / n, 0.5, n) > 11 / n
    assert val_score(11 / n, 50.0, n) > val_score(10 / n, 0.0, n)  # one more correct sequence always wins
    assert val_score(0.5, None, n) == 0.5 and val_score(0.5, float("nan"), n) == 0.5


def test_small_validation_warning_threshold():
    assert small_validation_message(SMALL_VALIDATION) is None
    msg = small_validation_message(12, 1.0)
    assert "only 12 sequences" in msg and "steps of 8.3 points" in msg and "val_score" in msg


# ---------------------------------------------------------------- 2 + 3 in a search


@pytest.mark.slow
def test_search_warns_checks_the_recipe_and_ranks_by_val_score(tiny_study, runs_dir, caplog):
    config = _config(tiny_study)
    with caplog.at_level(logging.INFO, logger="autoprune"):
        summary = run_search(config, str(runs_dir))
    text = caplog.text
    assert "the validation set has only 24 sequences" in text
    assert "a fine-tune epoch is 4 optimizer steps" in text
    assert "recipe check: the fine-tune with nothing pruned keeps validation accuracy" in text
    assert (runs_dir / "tiny" / "recipe_check.json").is_file()
    study, _ = open_study("tiny", str(runs_dir))
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert done and summary.n_complete == len(done)
    for t in done:
        result = t.user_attrs["autoprune.result"]
        assert t.values[0] == pytest.approx(result["val_accuracy"])  # the objective is accuracy (issue 19)
        assert result["val_score"] is not None  # the loss tie-break, used where a model is picked
        assert result["val_score"] == pytest.approx(val_score(result["val_accuracy"], result["val_loss"], 24))
    # a resumed search reuses the recorded recipe check (no second fine-tune)
    caplog.clear()
    monkey_calls = []
    import autoprune.search.recipe_check as rc

    original = rc._run
    rc._run = lambda *a, **k: monkey_calls.append(a) or original(*a, **k)
    try:
        run_search(config, str(runs_dir))
    finally:
        rc._run = original
    assert monkey_calls == []


# ---------------------------------------------------------------- 3. recipe check refuses


@pytest.mark.slow
def test_recipe_check_stops_a_search_whose_fine_tune_damages_the_dense_model(tiny_study, runs_dir):
    tiny_study["train"]["epochs"] = 30  # a dense model clearly above chance
    config = _config(tiny_study, finetune={"epochs": [3, 3], "lr": [3.0, 5.0], "min_epoch_steps": 4})
    dense = ensure_dense(config, runs_dir)
    assert dense.metrics["val_accuracy"] > 0.6
    with pytest.raises(ConfigError, match=r"search\.finetune: the fine-tune damages the model even with nothing pruned: 3 epochs x at least 4 steps bring validation accuracy from 0\.\d+ \(dense\) to lr 5: .*lr 3: "):
        check_recipe(config, str(runs_dir), dense.metrics, 24)
    # through the search: refused before any trial runs
    with pytest.raises(ConfigError, match="damages the model even with nothing pruned"):
        run_search(config, str(runs_dir))
    study, _ = open_study("tiny", str(runs_dir)) if (runs_dir / "tiny" / "search.json").exists() else (None, None)
    assert study is None or not study.get_trials()
    # switched off: no check
    off = _config(tiny_study, finetune={"epochs": [3, 3], "lr": [3.0, 5.0]}, recipe_check={"enabled": False})
    assert check_recipe(off, str(runs_dir), dense.metrics, 24) is None


# ---------------------------------------------------------------- 4. at the floor meets it


def _trainer(acc: float, epoch: int = 2):
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch, callback_metrics={"val_accuracy": torch.tensor(acc)})


def test_a_trial_at_the_early_stop_floor_meets_it():
    dense = 10 / 12
    stop = HopelessStop(3, dense - 0.25)  # 0.58333333333333337 in floats; 7/12 as float32 is 0.5833333
    stop.on_validation_end(_trainer(7 / 12), None)  # at the floor: goes on
    with pytest.raises(TrialStoppedEarly, match="below the floor"):
        stop.on_validation_end(_trainer(6 / 12), None)

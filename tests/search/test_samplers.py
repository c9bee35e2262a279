"""The samplers learn from the warm start: its trials are trials of the same space (the same parameter
names and distributions), so what they show (here: small uniform models are the good ones) moves
where each sampler proposes next, compared with the same sampler and seed without them."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from autoprune.config import config_from_dict
from autoprune.models.arch import ArchSpec
from autoprune.search.samplers import SAMPLERS, make_sampler
from autoprune.search.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = 0.02  # in this made-up world, models of at most 2 % of dense are the accurate ones


def _value(params: dict) -> list[float]:
    small = params["size"] <= GOOD * 1.05
    return [0.95 if small else 0.5 + 0.1 * params["size"], params["size"]]


def _proposals(tiny_study: dict, sampler: str, warm: bool, n: int = 12) -> list[float]:
    tiny_study["model"].update(hidden_sizes=[32, 32])
    tiny_study["search"] = {"sampler": sampler, "population_size": 6, "trials": 30, "size": [0.005, 0.5], "sparsity": {"units": [0.0, 0.95]}}
    config = config_from_dict(tiny_study)
    space = SearchSpace(config, ArchSpec.from_config(config.model, 3, 4))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(config, 0))
    if warm:
        for params in space.warm_start_params():
            study.enqueue_trial(params)
    seen_warm = len(study.get_trials(deepcopy=False))
    sizes = []
    for i in range(seen_warm + n):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, _value(trial.params))
        if i >= seen_warm:
            sizes.append(trial.params["size"])
    return sizes


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_warm_start_trials_move_the_samplers_proposals(tiny_study, sampler):
    import copy

    with_warm = _proposals(copy.deepcopy(tiny_study), sampler, warm=True)
    without = _proposals(copy.deepcopy(tiny_study), sampler, warm=False)

    def distance(sizes: list[float]) -> float:  # how far, in decades, the proposals are from the good region
        return statistics.fmean(max(0.0, math.log10(s / GOOD)) for s in sizes)

    assert distance(with_warm) < distance(without), (sampler, with_warm, without)
    assert sum(s <= 2 * GOOD for s in with_warm) > sum(s <= 2 * GOOD for s in without)


def test_every_sampler_name_builds_its_sampler(tiny_study):
    for name in SAMPLERS:
        tiny_study["search"] = {"sampler": name}
        assert isinstance(make_sampler(config_from_dict(tiny_study), 1), optuna.samplers.BaseSampler)


def test_nsga2_proposes_the_same_with_or_without_the_warm_start(tiny_study):
    """Why NSGA-II is not the default: its next proposals after the warm start are exactly those it makes with no
    warm start at all (the enqueued trials never become its parents), so the warm start only adds its own trials."""
    import copy

    assert _proposals(copy.deepcopy(tiny_study), "nsga2", warm=True) == _proposals(copy.deepcopy(tiny_study), "nsga2", warm=False)

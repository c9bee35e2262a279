"""Enqueued trials are asked first on both runners (issue 21 item 4): the warm start enqueues uniform
policies, and the multi-fidelity search of issue 19 promotes a candidate by enqueueing it again; both
rely on the next ask of either runner taking a WAITING trial before the sampler proposes a new one."""

from __future__ import annotations

import optuna
import pytest

from autoprune.config import config_from_dict
from autoprune.models.arch import ArchSpec
from autoprune.search.claim import claim
from autoprune.search.runners import SearchJob
from autoprune.search.samplers import make_sampler
from autoprune.search.space import SearchSpace
from autoprune.search.storage import Storage

from .conftest import study_dict

pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")

from autoprune.search.runners.ray import StudySearcher  # noqa: E402


def _setup(tmp_path, sampler: str):
    config = config_from_dict({**study_dict(), "search": {**study_dict()["search"], "sampler": sampler, "trials": 10}})
    arch = ArchSpec("lstm", 1, [[16]], 2, "last", 32, 0.0)
    space = SearchSpace(config, arch)
    study = optuna.create_study(study_name="tiny", storage=Storage(str(tmp_path / "s.journal")).open(), directions=["maximize", "minimize"],
                                sampler=make_sampler(config, 0))
    for _ in range(2):  # finished trials first: the sampler has something to propose from
        t = study.ask()
        space.suggest(t)
        study.tell(t, [0.5, 1000.0])
    wanted = space.warm_start_params()[-1]
    study.enqueue_trial(wanted)
    return config, arch, space, study, wanted


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_the_local_runner_asks_the_enqueued_trial_first(tmp_path, sampler):
    config, arch, space, study, wanted = _setup(tmp_path, sampler)
    trial = claim(study, 10, tmp_path / "ask.lock")
    policy = space.suggest(trial)
    assert {k: trial.params[k] for k in wanted} == wanted
    assert policy.to_dict() == space.suggest(optuna.trial.FixedTrial(wanted)).to_dict()


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_the_ray_searcher_asks_the_enqueued_trial_first(tmp_path, sampler):
    config, arch, space, study, wanted = _setup(tmp_path, sampler)
    job = SearchJob(config, str(tmp_path), str(tmp_path / "s.journal"), 10, arch.to_dict(), None)
    searcher = StudySearcher(study, job, space, update=lambda: {})
    suggested = searcher.suggest("tune-trial-1")
    assert suggested["number"] == 2  # the enqueued trial, not a new one
    assert suggested["policy"] == space.suggest(optuna.trial.FixedTrial(wanted)).to_dict()
    assert {k: study.trials[2].params[k] for k in wanted} == wanted

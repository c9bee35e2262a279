"""The samplers a study may name (``search.sampler`` / ``--sampler``): one table serves both the
config's validation and the lookup, as Ray Tune's ``SEARCH_ALG_IMPORT`` does.

Each entry builds the Optuna sampler from the study's ``search:`` section and a seed (one
seed per worker, per resumed run and per driver on a shared database, so that none of them
proposes the policies another already ran).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict

import optuna

__all__ = ["SAMPLERS", "make_sampler", "stable_int"]


def _nsga2(search: Any, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=search.population_size, seed=seed)


def _tpe(search: Any, seed: int) -> optuna.samplers.BaseSampler:
    # Optuna 5's multi-objective default: multivariate, with the constant liar for trials still running
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=min(10, search.trials),
                                      warn_independent_sampling=False)


def _gp(search: Any, seed: int) -> optuna.samplers.BaseSampler:
    # Gaussian process with log expected hypervolume improvement; reads the trials' constraints (Optuna >= 4.5)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, search.trials), warn_independent_sampling=False)


def _random(search: Any, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


#: sampler name -> ``factory(search_config, seed)``
SAMPLERS: Dict[str, Callable[[Any, int], optuna.samplers.BaseSampler]] = {"nsga2": _nsga2, "tpe": _tpe, "random": _random, "gp": _gp}


def stable_int(text: str) -> int:
    """A seed-sized integer from ``text``, the same in every process (``hash()`` of a str is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def make_sampler(config: Any, worker: int, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler for worker ``worker``: seeded ``search.seed + worker``, plus this run's ``salt``
    (:func:`autoprune.search.study.run_salt`: 0 for a new study on one machine, so that it is reproducible)."""
    s = config.search
    return SAMPLERS[s.sampler](s, (s.seed + worker + salt) & 0x7FFFFFFF)

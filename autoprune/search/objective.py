"""The objective of a search: the checks before any training, and the local objective that turns
an Optuna trial into a policy, runs the pure ``run_trial`` and records its result on the trial.

The Ray runner runs ``run_trial`` in its workers with the same :func:`trial_options` and records
the result on the driver with the same :func:`autoprune.search.tell.record_result`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple


from autoprune.config import StudyConfig
from autoprune.errors import ConstraintError
from autoprune.layout import study_paths
from autoprune.models.arch import ArchSpec
from autoprune.reference.dense import dense_arch
from autoprune.runtime.latency import LatencyCache, LatencySettings
from autoprune.runtime.preflight import check_dense_measurable, check_model_memory
from autoprune.search.space import SearchSpace
from autoprune.search.tell import record_result, resume_from, start_trial
from autoprune.tasks import build_datamodule
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import budget_excess, run_trial

__all__ = ["make_objective", "check_latency_budget", "prepare_space"]

log = logging.getLogger(__name__)


def check_latency_budget(config: StudyConfig, space: Any, settings: Any, cache: Any) -> Optional[float]:
    """Refuse, before any training, a latency budget no allowed architecture can meet."""
    budget = config.search.constraints.max_latency_ms
    if budget is None:
        return None
    arch = space.smallest_arch() or space.arch
    fastest = cache.get(arch, settings)
    if _over_latency_budget(config, fastest):
        how = "with every allowed hidden unit removed" if space.smallest_arch() else "(unstructured pruning does not change latency; allow granularity hidden_unit)"
        raise ConstraintError(
            f"max_latency_ms={budget} cannot be met: the smallest architecture the search space allows, "
            f"{arch.hidden_sizes} hidden units {how}, takes {fastest:.3f} ms "
            f"(batch {settings['batch_size']}, {settings['seq_len']} steps, {settings['threads']} thread(s), {settings['runtime']}); "
            f"raise the budget or widen search.sparsity.units"
        )
    return fastest


def _over_latency_budget(config: StudyConfig, latency: float) -> bool:
    return budget_excess(config.search.constraints, latency_ms=latency).get("latency_ms", 0.0) > 0


def prepare_space(config: StudyConfig, runs_dir: str) -> Tuple[StudyConfig, Any, Any, Any]:
    """Everything that can be refused before the dense model is trained.

    Returns (config, space, latency settings, latency cache); the config may narrow the
    granularities when the dense model already breaks the latency budget.
    """
    s = config.search
    dm = build_datamodule(config)
    arch = dense_arch(config, dm, runs_dir)  # a user's trained model is converted and checked here, before anything runs
    space = SearchSpace(config, arch)
    settings = LatencySettings.from_config(config.measure, dm.max_length)
    cache = LatencyCache(study_paths(runs_dir, config.study).latency_cache)

    source = config.source or "config"
    if not config.model.user_model:
        check_model_memory(arch, config.task.batch_size, dm.max_length, source)
    check_dense_measurable(arch, settings, cache, source)
    check_latency_budget(config, space, settings, cache)
    budget = s.constraints.max_latency_ms
    if budget is not None and "unstructured" in s.granularities and "hidden_unit" in s.granularities:
        if _over_latency_budget(config, cache.get(arch, settings)):
            # unstructured zeros leave the shapes, and so the latency, of the dense model: never feasible here
            log.info("the dense model takes longer than max_latency_ms=%s: searching hidden_unit pruning only", budget)
            s = s.model_copy(update={"granularities": ["hidden_unit"]})
            config = config.model_copy(update={"search": s})
            space = SearchSpace(config, arch)
    return config, space, settings, cache


def make_objective(config: StudyConfig, runs_dir: str, dense_arch_dict: Dict[str, Any]) -> Callable[[Any], List[float]]:
    """The local objective: ``objective(trial)`` suggests the trial's policy, runs ``run_trial`` on it and
    records the result; returns the objective values (:func:`autoprune.search.tell.run_and_tell` tells them).
    Picklable inputs only."""
    space = SearchSpace(config, ArchSpec.from_dict(dense_arch_dict))

    def objective(trial: Any) -> List[float]:
        policy = start_trial(trial, space, backend="local")
        options = trial_options(config, runs_dir, trial.number)
        options.resume_from = resume_from(trial.study, trial)
        result = run_trial(config, policy, options)
        return record_result(trial, config, dense_arch_dict, result.to_dict())

    return objective


def trial_options(config: StudyConfig, runs_dir: str, number: int) -> Any:
    """The ``TrialOptions`` of trial ``number`` (its weights go to ``runs/<study>/trials/<number>``)."""
    s = config.search
    return TrialOptions(
        runs_dir=runs_dir,
        trial_dir=str(study_paths(runs_dir, config.study).trial(number)),
        max_latency_ms=s.constraints.max_latency_ms,
        max_size_bytes=s.constraints.max_size_bytes,
        early_stop_after=s.early_stop.after_epochs,
        early_stop_max_drop=s.early_stop.max_drop,
    )

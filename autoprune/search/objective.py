"""The objective of a search: the checks before any training, and the function that turns
an Optuna trial into a policy, runs the pure ``run_trial`` and records its result on the trial.

Every runner (in-process, worker processes, Ray Tune) calls the same ``make_objective``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple

from autoprune.config import StudyConfig
from autoprune.errors import ConstraintError

__all__ = ["make_objective", "check_latency_budget", "prepare_space"]

log = logging.getLogger(__name__)


def check_latency_budget(config: StudyConfig, space: Any, settings: Any, cache: Any) -> Optional[float]:
    """Refuse, before any training, a latency budget no allowed architecture can meet."""
    budget = config.search.constraints.max_latency_ms
    if budget is None:
        return None
    arch = space.smallest_arch() or space.arch
    fastest = cache.get(arch, settings)
    if fastest > budget:
        how = "with every allowed hidden unit removed" if space.smallest_arch() else "(unstructured pruning does not change latency; allow granularity hidden_unit)"
        raise ConstraintError(
            f"max_latency_ms={budget} cannot be met: the smallest architecture the search space allows, "
            f"{arch.hidden_sizes} hidden units {how}, takes {fastest:.3f} ms "
            f"(batch {settings['batch_size']}, {settings['seq_len']} steps, {settings['threads']} thread(s), {settings['runtime']}); "
            f"raise the budget or widen search.sparsity.units"
        )
    return fastest


def prepare_space(config: StudyConfig, root: Any) -> Tuple[StudyConfig, Any, Any, Any]:
    """Everything that can be refused before the dense model is trained.

    Returns (config, space, latency settings, latency cache); the config may narrow the
    granularities when the dense model already breaks the latency budget.
    """
    from autoprune.dense import build_datamodule
    from autoprune.models.arch import ArchSpec
    from autoprune.search.latency import LatencyCache, LatencySettings
    from autoprune.search.space import SearchSpace

    s = config.search
    dm = build_datamodule(config)
    arch = ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes)
    space = SearchSpace(config, arch)
    settings = LatencySettings.from_config(config.measure, dm.max_length)
    cache = LatencyCache(root / "latency_cache.json")
    check_latency_budget(config, space, settings, cache)
    budget = s.constraints.max_latency_ms
    if budget is not None and "unstructured" in s.granularities and "hidden_unit" in s.granularities:
        if cache.get(arch, settings) > budget:
            # unstructured zeros leave the shapes, and so the latency, of the dense model: never feasible here
            log.info("the dense model takes longer than max_latency_ms=%s: searching hidden_unit pruning only", budget)
            s = s.model_copy(update={"granularities": ["hidden_unit"]})
            config = config.model_copy(update={"search": s})
            space = SearchSpace(config, arch)
    return config, space, settings, cache


def make_objective(config: StudyConfig, runs_dir: str, dense_arch_dict: Dict[str, Any]) -> Callable:
    """The Optuna objective: suggest a policy, ``run_trial`` it, record the result. Picklable inputs only."""
    import optuna

    from autoprune.models.arch import ArchSpec
    from autoprune.search.space import SearchSpace
    from autoprune.search.study import study_paths
    from autoprune.search.trial import TrialOptions, run_trial

    space = SearchSpace(config, ArchSpec.from_dict(dense_arch_dict))
    s = config.search
    c = s.constraints
    paths = study_paths(runs_dir, config.study)

    def objective(trial: "optuna.Trial"):
        policy = space.suggest(trial)
        trial.set_user_attr("autoprune.policy", policy.to_dict())
        options = TrialOptions(
            runs_dir=runs_dir,
            trial_dir=str(paths["trials"] / str(trial.number)),
            max_latency_ms=c.max_latency_ms,
            max_size_bytes=c.max_size_bytes,
            early_stop_after=s.early_stop.after_epochs,
            early_stop_max_drop=s.early_stop.max_drop,
        )
        try:
            result = run_trial(config, policy, options)
        except Exception as err:
            trial.set_user_attr("autoprune.error", f"{type(err).__name__}: {err}"[:2000])
            raise
        data = result.to_dict()
        data.pop("pruning_history", None)
        trial.set_user_attr("autoprune.state", result.state)
        trial.set_user_attr("autoprune.result", data)
        if result.state == "stopped_early":
            raise optuna.TrialPruned(result.reason)
        size = result.size_bytes
        if result.state == "infeasible":
            # not trained: no accuracy exists; 0 keeps the trial dominated, the constraint tells the sampler why
            from autoprune.models.rnn import RNNClassifier

            size = sum(p.numel() for p in RNNClassifier(ArchSpec(**{**dense_arch_dict, "hidden_sizes": result.hidden_sizes})).parameters()) * 4
        if c.max_latency_ms is not None:
            trial.set_constraint("latency_ms", (result.latency_ms or 0.0) - c.max_latency_ms)
        if c.max_size_bytes is not None:
            trial.set_constraint("size_bytes", float(size) - c.max_size_bytes)
        values = [result.val_accuracy if result.val_accuracy is not None else 0.0, float(size)]
        if "latency_ms" in s.objectives:
            values.append(float(result.latency_ms or 0.0))
        return values

    return objective

"""The objective of a search: the checks before any training, and the function that turns
an Optuna trial into a policy, runs the pure ``run_trial`` and records its result on the trial.

Every runner (in-process, worker processes, Ray Tune) calls the same ``make_objective``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple

from autoprune.config import StudyConfig
from autoprune.errors import ConstraintError
from autoprune.layout import study_paths
from autoprune.models.arch import ArchSpec
from autoprune.models.rnn import RNNClassifier
from autoprune.reference.dense import dense_arch
from autoprune.runtime.latency import LatencyCache, LatencySettings
from autoprune.runtime.preflight import check_dense_measurable, check_model_memory
from autoprune.search.faults import trial_error_attrs
from autoprune.search.space import SearchSpace
from autoprune.search.study import driver_id
from autoprune.tasks import build_datamodule
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial
from autoprune.trial.validation import score_of

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
    s = config.search
    dm = build_datamodule(config)
    arch = dense_arch(config, dm, root.parent)  # a user's trained model is converted and checked here, before anything runs
    space = SearchSpace(config, arch)
    settings = LatencySettings.from_config(config.measure, dm.max_length)
    cache = LatencyCache(root / "latency_cache.json")

    source = config.source or "config"
    if not config.model.user_model:
        check_model_memory(arch, config.task.batch_size, dm.max_length, source)
    check_dense_measurable(arch, settings, cache, source)
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

    space = SearchSpace(config, ArchSpec.from_dict(dense_arch_dict))

    def objective(trial: "optuna.Trial"):
        try:
            return _objective(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("autoprune.error", "interrupted: KeyboardInterrupt during this trial")
            raise
        except Exception as err:  # recorded on the trial: one line for the console and `pareto --all`, the traceback for --debug

            for key, value in trial_error_attrs(err).items():
                trial.set_user_attr(key, value)
            raise

    def _objective(trial: "optuna.Trial"):
        policy = space.suggest(trial)
        trial.set_user_attr("autoprune.policy", policy.to_dict())
        trial.set_user_attr("autoprune.backend", "local")
        trial.set_user_attr("autoprune.driver", driver_id())
        result = run_trial(config, policy, trial_options(config, runs_dir, trial.number))
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


def record_result(trial: Any, config: StudyConfig, dense_arch_dict: Dict[str, Any], data: Dict[str, Any]) -> list:
    """Record a ``TrialResult.to_dict()`` on the Optuna trial; return its objective values.

    Raises ``optuna.TrialPruned`` for a trial stopped early. Runs where the trial was asked
    (the objective in-process, the Ray driver), not necessarily where it trained.
    """
    import optuna

    c = config.search.constraints
    s = config.search
    data = {k: v for k, v in data.items() if k != "pruning_history"}
    trial.set_user_attr("autoprune.state", data["state"])
    trial.set_user_attr("autoprune.result", data)
    if data["state"] == "stopped_early":
        raise optuna.TrialPruned(data.get("reason"))
    size = data["size_bytes"]
    if data["state"] == "infeasible":
        # not trained: no accuracy exists; 0 keeps the trial dominated, the constraint tells the sampler why

        size = sum(p.numel() for p in RNNClassifier(ArchSpec(**{**dense_arch_dict, "hidden_sizes": data["hidden_sizes"]})).parameters()) * 4
    if c.max_latency_ms is not None:
        trial.set_constraint("latency_ms", (data.get("latency_ms") or 0.0) - c.max_latency_ms)
    if c.max_size_bytes is not None:
        trial.set_constraint("size_bytes", float(size) - c.max_size_bytes)

    values = [score_of(data) or 0.0, float(size)]  # val_score: accuracy, ties broken by validation loss
    if "latency_ms" in s.objectives:
        values.append(float(data.get("latency_ms") or 0.0))
    return values


"""The one tell path: how a trial starts (its policy, who runs it) and how any outcome of it
(a result, an early stop, an error in the trial or in a worker that died) becomes the trial's
state, attributes, constraints and objective values in the study.

As Optuna's own ``_optimize._run_trial`` + ``_tell``: :func:`run_and_tell` calls a function that
returns the objective values (or raises), and tells the study. The local runner calls it with
the in-process objective; the Ray runner calls it on the driver with the result a worker
reported. Either way the study is the one record that ``pareto``, ``export`` and resume read.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import optuna
from optuna.trial import TrialState

from autoprune.config import StudyConfig
from autoprune.models.arch import ArchSpec
from autoprune.pruning.policy import PruningPolicy, policy_from_dict
from autoprune.runtime.measure import dense_size_bytes
from autoprune.runtime.preflight import param_count
from autoprune.search import attrs
from autoprune.search.claim import counts_toward_total
from autoprune.search.interrupts import as_interrupt
from autoprune.trial.run import budget_excess

__all__ = ["start_trial", "promotion_recovery", "resume_from", "record_result", "run_and_tell", "failure_attrs", "RecordedFailure", "DuplicatePolicy"]


class DuplicatePolicy(Exception):
    """The sampler proposed a policy a finished trial already ran: told as a failure, not trained again
    (it does not count toward ``trials``, so another policy is asked in its place)."""


def start_trial(trial: Any, space: Any, backend: str) -> PruningPolicy:
    """Suggest the trial's policy from the search space and record it, the runner and this driver on the trial.
    An enqueued trial may carry its recovery (multi-fidelity: the warm start's and promoted trials retrain).

    Raises:
        DuplicatePolicy: a complete or stopped-early trial ran exactly this policy (training is deterministic:
            it would only repeat that result; seen after a resume, and from two drivers on one database).
        Exception: whatever the space raises for a policy it cannot build (the caller tells it as a failure).
    """
    policy = space.suggest(trial)
    recovery = trial.user_attrs.get(attrs.RECOVERY)
    if recovery is None and attrs.PROMOTED_FROM in trial.user_attrs:
        recovery = promotion_recovery(space.space.recovery)
    if recovery is not None:
        policy = policy_from_dict({**policy.to_dict(), "recovery": recovery}, source=f"trial {trial.number}")
    recorded = json.loads(json.dumps(policy.to_dict()))  # as the storage gives it back: lists, not tuples
    trial.set_user_attr(attrs.POLICY, recorded)
    trial.set_user_attr(attrs.BACKEND, backend)
    twin = next((t for t in trial.study.get_trials(deepcopy=False, states=counts_toward_total()) if t.user_attrs.get(attrs.POLICY) == recorded), None)
    if twin is not None:
        raise DuplicatePolicy(f"the same policy as trial {twin.number}, which ran to the end; not trained again (another policy is asked instead)")
    return policy


def promotion_recovery(offered: Sequence[str]) -> str:
    """What a promoted trial retrains with: scratch where the space offers it, else rewind."""
    return next(r for r in ("scratch", "rewind") if r in offered)


def resume_from(study: Any, trial: Any) -> Optional[str]:
    """A promoted trial's starting point: the promoted trial's saved, pruned weights."""
    number = trial.user_attrs.get(attrs.PROMOTED_FROM)
    if number is None:
        return None
    source = next(t for t in study.get_trials(deepcopy=False) if t.number == int(number))
    return (source.user_attrs.get(attrs.RESULT) or {}).get("checkpoint")


def record_result(trial: Any, config: StudyConfig, dense_arch_dict: Dict[str, Any], data: Dict[str, Any]) -> List[float]:
    """Record a ``TrialResult.to_dict()`` on the trial (state, result, budget constraints); return its objective values.

    Runs where the trial was asked (the local objective, the Ray driver), not where it trained.

    Raises:
        optuna.TrialPruned: the trial stopped early.
    """
    s = config.search
    data = {k: v for k, v in data.items() if k != "pruning_history"}
    trial.set_user_attr(attrs.STATE, data["state"])
    trial.set_user_attr(attrs.RESULT, data)
    if data["state"] == "stopped_early":
        raise optuna.TrialPruned(data.get("reason"))
    size = data["size_bytes"]
    if data["state"] == "infeasible":
        # not trained: no accuracy exists; 0 keeps the trial dominated, the constraint tells the sampler why
        size = dense_size_bytes(param_count(ArchSpec(**{**dense_arch_dict, "hidden_sizes": data["hidden_sizes"]})))
    for name, excess in budget_excess(s.constraints, latency_ms=data.get("latency_ms"), size_bytes=size).items():
        trial.set_constraint(name, excess)
    values = [float(data.get("val_accuracy") or 0.0), float(size)]  # accuracy; the loss tie-break (val_score) only where a model is picked
    if "latency_ms" in s.objectives:
        values.append(float(data.get("latency_ms") or 0.0))
    return values


class RecordedFailure(Exception):
    """A failure recorded elsewhere (a Ray worker): its attributes, as :func:`failure_attrs` made them there."""

    def __init__(self, attributes: Dict[str, str]) -> None:
        super().__init__(attributes.get(attrs.ERROR, "failed"))
        self.attributes = attributes


def failure_attrs(err: BaseException) -> Dict[str, str]:
    """The attributes recording why a trial failed: one line, and the traceback for ``--debug``."""
    if isinstance(err, RecordedFailure):
        return err.attributes
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {attrs.ERROR: f"{type(err).__name__}: {err}"[:2000], attrs.TRACEBACK: tb[-8000:]}


def run_and_tell(study: Any, trial: Any, compute: Callable[[], Union[float, Sequence[float]]]) -> TrialState:
    """Run ``compute()`` (the objective values of ``trial``) and tell the study how the trial ended.

    * values: COMPLETE with those values (a trial over a budget is COMPLETE and infeasible by its constraints);
    * ``optuna.TrialPruned``: PRUNED (autoprune says "stopped early");
    * any other ``Exception``: FAIL, with :func:`failure_attrs` on the trial;
    * an interrupt (``KeyboardInterrupt``, ``SearchInterrupted``) propagates, the trial still RUNNING:
      the driver marks it failed with the signal's name.

    Returns:
        The state told.
    """
    try:
        values = compute()
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except Exception as err:  # recorded on the trial: one line for the console and `pareto --all`, the traceback for --debug
        found = as_interrupt(err)
        if found is not None:  # a signal that landed in Optuna's journal lock comes out as a FileNotFoundError raised while handling it
            raise found from None
        for key, value in failure_attrs(err).items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, values)
    return TrialState.COMPLETE

"""The Optuna user-attribute keys autoprune writes on a trial (and on the study), in one place.

The study is the one record: ``pareto``, ``export``, resume, the MLflow sync and the
dashboard read a trial's policy, result, state and error from these attributes,
whichever runner ran it.
"""

from __future__ import annotations

__all__ = ["CONFIG", "SPACE", "DENSE_KEY", "POLICY", "RESULT", "STATE", "ERROR", "INTERRUPTED", "TRACEBACK", "BACKEND", "DRIVER", "NODE", "HOST",
           "ORIGIN", "PROMOTED_FROM", "WARM_START", "PROMOTED", "RECOVERY"]

#: a study attribute: the study's config (``StudyConfig.to_dict()``), for pareto / export on a machine without the runs folder
CONFIG = "autoprune.config"
#: a study attribute: the version of the search space its trials were sampled in (search.space.SPACE_VERSION)
SPACE = "autoprune.space"
#: a study attribute: the content key of the dense reference every trial of the study starts from
DENSE_KEY = "autoprune.dense_key"
#: the pruning policy the trial ran (``PruningPolicy.to_dict()``)
POLICY = "autoprune.policy"
#: what ``run_trial`` returned (``TrialResult.to_dict()`` without the pruning history)
RESULT = "autoprune.result"
#: complete | infeasible | stopped_early (a COMPLETE Optuna trial may be infeasible)
STATE = "autoprune.state"
#: why the trial failed, one line
ERROR = "autoprune.error"
#: true on a trial failed because its search was interrupted (not by its own error): a warm-start policy runs again
INTERRUPTED = "autoprune.interrupted"
#: the failure's traceback (``--debug``)
TRACEBACK = "autoprune.traceback"
#: the runner that ran it: local | ray
BACKEND = "autoprune.backend"
#: ``host:pid`` of the process that asked the trial (resume repairs only its own dead drivers' trials)
DRIVER = "autoprune.driver"
#: Ray: the node id and ``host:pid`` where the trial ran
NODE = "autoprune.node"
HOST = "autoprune.host"
#: where a trial's parameters came from: the sampler (no attribute), the warm start, or a promotion
ORIGIN = "autoprune.origin"
WARM_START = "warm_start"
PROMOTED = "promoted"
#: a promoted trial: the number of the trial whose pruned weights it retrains
PROMOTED_FROM = "autoprune.promoted_from"
#: an enqueued trial's recovery when the space does not sample it (multi-fidelity: warm start and promotions retrain)
RECOVERY = "autoprune.recovery"

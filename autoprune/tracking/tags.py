"""The MLflow tag names autoprune writes and reads, in one place.

The search's parent run carries :data:`PARENT_TAG`; each trial's nested run carries
:data:`TRIAL_TAG` (its number), :data:`STATE_TAG`, :data:`PARETO_TAG` (kept up to date as
the front changes) and the others below. ``autoprune ui``'s front view filters on
:data:`PARETO_TAG`; ``export`` finds a trial's run by :data:`TRIAL_TAG`.
"""

from __future__ import annotations

__all__ = [
    "PARENT_TAG",
    "TRIAL_TAG",
    "PARETO_TAG",
    "STATE_TAG",
    "PRECISION_TAG",
    "HIDDEN_SIZES_TAG",
    "REASON_TAG",
    "ERROR_TAG",
    "HYPERVOLUME_TAG",
    "LATENCY_DEVICE_TAG",
    "MLFLOW_PARENT_TAG",
]

PARENT_TAG = "autoprune.search"
TRIAL_TAG = "autoprune.trial"
PARETO_TAG = "autoprune.pareto"
STATE_TAG = "autoprune.state"
PRECISION_TAG = "autoprune.precision"
HIDDEN_SIZES_TAG = "autoprune.hidden_sizes"
REASON_TAG = "autoprune.reason"
ERROR_TAG = "autoprune.error"
HYPERVOLUME_TAG = "autoprune.hypervolume"
#: where the trial's latency was measured ("cpu, 1 thread, torch"): latency is a property of a device
LATENCY_DEVICE_TAG = "autoprune.latency_device"
#: MLflow's own tag that nests a run under its parent
MLFLOW_PARENT_TAG = "mlflow.parentRunId"

"""One exception hierarchy for the package.

The CLI turns every :class:`AutopruneError` into one readable line and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AutopruneError",
    "ConfigError",
    "TaskError",
    "PruningError",
    "ConstraintError",
    "TrialError",
    "ExportError",
    "TrialStoppedEarly",
]


class AutopruneError(Exception):
    """Base class of every error autoprune raises on purpose."""


class ConfigError(AutopruneError, ValueError):
    """A configuration file, policy or option is invalid."""


class TaskError(AutopruneError):
    """A data source cannot be found, loaded or used."""


class PruningError(AutopruneError):
    """A pruning policy cannot be applied to the model (or training diverged)."""


class ConstraintError(AutopruneError):
    """A search constraint (latency or size budget) cannot be met."""


class TrialError(AutopruneError):
    """A search study or trial does not exist or is in the wrong state."""


class ExportError(AutopruneError):
    """An export could not be written or did not verify."""


class TrialStoppedEarly(AutopruneError):
    """A trial was stopped early: after some fine-tune epochs it was hopelessly below dense.

    ``history`` holds the fine-tune's epochs so far (validation accuracy and loss per epoch).
    """

    def __init__(self, message: str, history: list | None = None) -> None:
        super().__init__(message)
        self.history = list(history or [])

"""autoprune: search how to prune recurrent neural networks (LSTM, GRU) automatically.

Light at import time: the heavy pieces (Lightning, Optuna, MLflow) load when used.
"""

from importlib.metadata import PackageNotFoundError, version

from autoprune.errors import AutopruneError, ConfigError, ConstraintError, ExportError, PruningError, TaskError, TrialError

try:
    __version__ = version("autoprune")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "__version__",
    "AutopruneError",
    "ConfigError",
    "ConstraintError",
    "ExportError",
    "PruningError",
    "TaskError",
    "TrialError",
]

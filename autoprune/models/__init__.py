"""The RNN family (recurrent stack, pooling, head), its architecture spec, the LightningModule, fitting and checkpoints.

``from autoprune.models import RNNClassifier`` works; torch loads on first use of it.
"""

from typing import Any

__all__ = ["RNNClassifier"]


def __getattr__(name: str) -> Any:
    if name == "RNNClassifier":  # torch takes a second to import: only when the class is used
        from autoprune.models.rnn import RNNClassifier

        return RNNClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

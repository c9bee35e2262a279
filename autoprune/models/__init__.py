"""RNN stack, pooling and head (``rnn``), its architecture spec (``arch``) and the
LightningModule (``module``). Torch and Lightning load on first use of a class that needs them."""

from typing import Any

from autoprune.models.arch import GATES, ArchSpec

__all__ = ["GATES", "ArchSpec", "RNNClassifier", "RNNLayer", "RNNStack", "convert_torch_rnn", "reverse_padded", "RNNModule"]

_LAZY = {
    "RNNClassifier": "autoprune.models.rnn",
    "RNNLayer": "autoprune.models.rnn",
    "RNNStack": "autoprune.models.rnn",
    "convert_torch_rnn": "autoprune.models.rnn",
    "reverse_padded": "autoprune.models.rnn",
    "RNNModule": "autoprune.models.module",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

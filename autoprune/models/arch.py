"""Architecture description of an RNN classifier, importable without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, List

__all__ = ["ArchSpec", "GATES"]

#: Gate blocks of the weight rows, in PyTorch's order.
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


@dataclass
class ArchSpec:
    """Everything needed to rebuild an :class:`RNNClassifier` (before loading weights).

    ``hidden_sizes[layer][direction]``: each layer and direction has its own width
    (after hidden-unit pruning they differ).
    """

    cell: str
    input_size: int
    hidden_sizes: List[List[int]]
    n_classes: int
    pooling: str = "last"
    attention_dim: int = 32
    dropout: float = 0.0

    @property
    def bidirectional(self) -> bool:
        return len(self.hidden_sizes[0]) == 2

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpec":
        return cls(**data)

    @classmethod
    def from_config(cls, model_cfg: Any, input_size: int, n_classes: int) -> "ArchSpec":
        dirs = 2 if model_cfg.bidirectional else 1
        return cls(
            cell=model_cfg.cell,
            input_size=input_size,
            hidden_sizes=[[h] * dirs for h in model_cfg.hidden_sizes],
            n_classes=n_classes,
            pooling=model_cfg.pooling,
            attention_dim=model_cfg.attention_dim,
            dropout=model_cfg.dropout,
        )

    def signature(self) -> str:
        """A short string naming the compute-relevant architecture (latency cache key)."""
        widths = "-".join("/".join(str(h) for h in layer) for layer in self.hidden_sizes)
        return f"{self.cell}:{self.input_size}:{widths}:{self.n_classes}:{self.pooling}:{self.attention_dim}"

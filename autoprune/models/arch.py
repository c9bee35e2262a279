"""Architecture description of an RNN classifier, importable without torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Tuple

__all__ = ["ArchSpec", "GATES", "DIRECTIONS", "layer_name", "units_removed", "units_kept"]

#: Gate blocks of the weight rows, in PyTorch's order.
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}

#: names of the directions of a bidirectional layer
DIRECTIONS = ("fwd", "bwd")


def layer_name(layer: int, direction: int, bidirectional: bool) -> str:
    """The group name of one layer and direction's hidden units: ``rnn.<layer>[.fwd|.bwd]``."""
    return f"rnn.{layer}" + (f".{DIRECTIONS[direction]}" if bidirectional else "")


def units_removed(hidden: int, fraction: float) -> int:
    """How many of a layer's ``hidden`` units a hidden-unit sparsity ``fraction`` removes (rounded to the nearest unit)."""
    return int(round(fraction * hidden))


def units_kept(hidden: int, fraction: float) -> int:
    """How many of a layer's ``hidden`` units are left after removing ``fraction`` of them."""
    return hidden - units_removed(hidden, fraction)


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

    def layer_names(self) -> Dict[str, Tuple[int, int]]:
        """Hidden-unit group name → (layer, direction), layers in order, forward first."""
        return {layer_name(l, d, self.bidirectional): (l, d) for l, sizes in enumerate(self.hidden_sizes) for d in range(len(sizes))}

    def with_hidden_sizes(self, hidden_sizes: List[List[int]]) -> "ArchSpec":
        """The same architecture with other hidden sizes (what compaction and hidden-unit pruning change)."""
        return replace(self, hidden_sizes=[list(sizes) for sizes in hidden_sizes])

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

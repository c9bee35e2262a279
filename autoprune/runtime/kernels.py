"""Which precisions exist and which runtime has an int8 kernel for which cell: checked before anything
trains (a study's config, a policy's ``quantize``). Imports nothing heavy: the config validates with it."""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple, get_args

from autoprune.errors import ConfigError

__all__ = ["Quantize", "PRECISIONS", "INT8_CELLS", "precision_name", "check_int8_kernel"]

#: a policy's ``quantize``: the precision it ships in after pruning
Quantize = Literal["none", "int8"]
PRECISIONS: Tuple[str, ...] = get_args(Quantize)
#: cells with an int8 kernel in each runtime (ONNX Runtime quantizes LSTM, not GRU)
INT8_CELLS: Dict[str, Tuple[str, ...]] = {"torch": ("lstm", "gru"), "onnxruntime": ("lstm",)}


def precision_name(quantize: Optional[str]) -> str:
    """``float32`` or ``int8``: what MLflow and the model card call a policy's precision."""
    return "int8" if quantize == "int8" else "float32"


def check_int8_kernel(runtime: str, cell: str, where: str = "quantize") -> None:
    """Refuse int8 where the runtime has no int8 kernel for the cell (before anything trains).

    Raises:
        ConfigError: naming the runtime, the cell and what would work.
    """
    cells = INT8_CELLS.get(runtime, ())
    if cell not in cells:
        others = [r for r, c in INT8_CELLS.items() if cell in c]
        raise ConfigError(
            f"{where}: int8 needs an int8 {cell.upper()} kernel, and runtime {runtime!r} (measure.runtime) has "
            + (f"int8 kernels for {', '.join(c.upper() for c in cells)} only" if cells else "none")
            + f"; use measure.runtime: {others[0]} or quantize: none" * bool(others)
        )

"""The one checkpoint loader: every file autoprune writes with ``torch.save`` is read here.

All of them (dense ``model.pt``, a trial's ``model.pt``, an exported ``model_state.pt``)
hold tensors and plain containers only, so they load with ``weights_only=True``: a
checkpoint that someone replaced with a pickle carrying code is refused instead of run.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, Dict

import torch

from autoprune.errors import AutopruneError

__all__ = ["load_checkpoint", "CheckpointError"]


class CheckpointError(AutopruneError):
    """A checkpoint file is missing, truncated, or not one autoprune wrote."""


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ("arch", "state_dict")) -> Dict[str, Any]:
    """Load a checkpoint written by autoprune onto the CPU, with ``weights_only=True``.

    Args:
        path: the ``.pt`` file.
        required: keys the payload must have.

    Returns:
        The stored payload (a dict).

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (it would call {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain containers{what}; "
            f"autoprune never writes such checkpoints, so this file was not written by it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or corrupted?): {first}") from None
    if not isinstance(payload, dict) or any(k not in payload for k in required):
        raise CheckpointError(f"{path}: not an autoprune checkpoint: expected a mapping with keys {', '.join(required)}")
    return payload

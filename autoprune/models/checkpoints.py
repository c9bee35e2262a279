"""The one checkpoint loader and writer: every file autoprune writes with ``torch.save`` is written
by :func:`save_checkpoint` and read by :func:`load_checkpoint`.

All of them (dense ``model.pt``, a trial's ``model.pt``, an exported ``model_state.pt``)
hold tensors and plain containers only, so they load with ``weights_only=True``: a
checkpoint that someone replaced with a pickle carrying code is refused instead of run.
They are serialised in memory and written by Python: torch's own file writer aborts the
whole process (a C++ ``terminate``) when the disk fills up mid-write.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict

import torch

from autoprune.errors import AutopruneError
from autoprune.layout import write_atomic
from autoprune.models.arch import ArchSpec
from autoprune.models.rnn import RNNClassifier

__all__ = ["load_checkpoint", "save_checkpoint", "model_from", "CheckpointError"]


class CheckpointError(AutopruneError):
    """A checkpoint file is missing, truncated, or not one autoprune wrote."""


def save_checkpoint(payload: Dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` (tensors and plain containers) to ``path`` whole or not at all: ``torch.save`` into
    memory, then a temporary file beside ``path`` renamed over it.

    Raises:
        OSError: the disk is full or read-only (nothing is left behind; the CLI says it in one line).
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = write_atomic(path, buffer.getbuffer())
    os.chmod(path, 0o644)  # weights are not secret: readable as torch.save left them
    return path


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


def model_from(payload: Dict[str, Any], path: str | os.PathLike) -> RNNClassifier:
    """The :class:`RNNClassifier` a loaded checkpoint describes (``arch``) with its weights (``state_dict``), in eval mode.

    Raises:
        CheckpointError: one line naming ``path``: the architecture is not one autoprune writes, or the
            weights do not fit it (a file edited or mixed from two checkpoints).
    """
    try:
        model = RNNClassifier(ArchSpec.from_dict(payload["arch"]))
    except Exception as err:  # TypeError, KeyError, ValueError, ...: whatever a malformed arch makes the constructor raise
        raise CheckpointError(f"{path}: not an autoprune checkpoint: its 'arch' is not an architecture ({type(err).__name__}: {str(err)[:160]})") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # RuntimeError (missing keys, size mismatch), TypeError (not a mapping)
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else type(err).__name__)[:200]
        raise CheckpointError(f"{path}: its weights do not fit its architecture ({detail}); the file was changed after autoprune wrote it") from None
    return model.eval()

"""What one trial is given and what it produces: ``TrialOptions``, ``TrialResult``, and the
trial's saved weights (``trials/<n>/model.pt`` + ``result.json``, written atomically).

Light on purpose (no Lightning): ``export`` and ``pareto`` read trials through this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


from autoprune.models.checkpoints import load_checkpoint, model_from, save_checkpoint
from autoprune.models.rnn import RNNClassifier

__all__ = ["TRIAL_FORMAT", "TrialOptions", "TrialResult", "save_trial", "load_trial_model"]

#: bump when a trial's saved payload changes meaning
TRIAL_FORMAT = 1


@dataclass
class TrialOptions:
    """Everything besides the config and policy that a trial needs (plain values only)."""

    runs_dir: str = "runs"
    trial_dir: Optional[str] = None  # where the pruned weights go; None: not saved
    max_latency_ms: Optional[float] = None
    max_size_bytes: Optional[int] = None
    early_stop_after: Optional[int] = None  # fine-tune epochs before the hopeless check
    early_stop_max_drop: float = 0.2  # allowed validation-accuracy drop below dense
    threads: Optional[int] = 1  # torch threads while training (tiny RNNs run best on one; None: leave as is)
    measure_latency: bool = True
    progress: bool = False
    resume_from: Optional[str] = None  # a promoted trial: the saved, pruned weights it retrains (no pruning again)


@dataclass
class TrialResult:
    """What one trial produced. ``state``: complete | infeasible | stopped_early | failed."""

    state: str
    val_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    val_loss: Optional[float] = None
    val_score: Optional[float] = None  # accuracy + a loss tie-break (trial/validation.py): what the search ranks by
    n_val: Optional[int] = None  # scored validation samples (sequences, or frames): val_accuracy's resolution and noise
    size_bytes: Optional[int] = None
    nonzero_params: Optional[int] = None
    params: Optional[int] = None
    macs: Optional[int] = None
    latency_ms: Optional[float] = None
    latency_device: Optional[str] = None  # where latency_ms was measured: "cpu, 1 thread, torch", "cuda (NAME), torch"
    hidden_sizes: Optional[List[List[int]]] = None
    sparsity: Dict[str, Any] = field(default_factory=dict)
    dense: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    pruning_history: List[Dict[str, Any]] = field(default_factory=list)
    reason: Optional[str] = None
    duration_s: float = 0.0
    checkpoint: Optional[str] = None
    precision: str = "float32"  # float32 | int8: what size, accuracy and latency were measured on
    int8: Dict[str, Any] = field(default_factory=dict)  # int8 only: runtime, float32 numbers, correct test predictions per runtime

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def save_trial(trial_dir: Path, model: RNNClassifier, policy: Any, result: TrialResult, study: str) -> Path:
    """Write the compacted weights and the result atomically (a killed trial leaves nothing half-written)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    target = trial_dir / "model.pt"
    payload = {
        "format": TRIAL_FORMAT,
        "arch": model.spec.to_dict(),
        "state_dict": model.state_dict(),
        "policy": policy.to_dict(),
        "study": study,
    }
    save_checkpoint(payload, target)
    info = {**result.to_dict(), "checkpoint": str(target), "policy": policy.to_dict()}
    (trial_dir / "result.json").write_text(json.dumps(info, indent=2, default=str))
    return target


def load_trial_model(path: str | os.PathLike) -> tuple[RNNClassifier, Dict[str, Any]]:
    """Rebuild a trial's compacted model from its ``model.pt`` (no retraining)."""
    payload = load_checkpoint(path)
    return model_from(payload, path), payload

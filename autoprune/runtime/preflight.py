"""Checks before anything is built, trained, measured or written: will it fit in memory?

An RNN of 3 x 8192 bidirectional LSTM units is allowed by the config (each size is in
range) but has 3.8 G parameters: training it needs about 60 GB. Building it first and
failing after 40 s with an out-of-memory traceback helps no one, so the memory a model
needs is estimated from its shape and compared with what the machine has.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from autoprune.errors import ConfigError

__all__ = [
    "param_count",
    "training_bytes",
    "inference_bytes",
    "available_bytes",
    "check_model_memory",
    "check_measurable",
    "check_dense_measurable",
    "fmt_bytes",
]

log = logging.getLogger(__name__)

_GATE_BLOCKS = {"lstm": 4, "gru": 3}


def param_count(arch: Any) -> int:
    """Parameters of an :class:`~autoprune.models.arch.ArchSpec` (same count as the built model, without building it)."""
    return int(arch.param_count())


def _activation_floats(arch: Any, batch: int, seq_len: int) -> int:
    blocks = _GATE_BLOCKS[arch.cell]
    return batch * seq_len * sum(h * (blocks + 2) for layer in arch.hidden_sizes for h in layer)


def training_bytes(arch: Any, batch: int, seq_len: int) -> int:
    """A lower estimate of training memory: weights, gradients, two Adam moments, and the activations kept for backward."""
    return 4 * (4 * param_count(arch) + 2 * _activation_floats(arch, batch, seq_len))


def inference_bytes(arch: Any, batch: int, seq_len: int) -> int:
    """A lower estimate of memory for one forward pass (latency measurement): weights, input and gate activations."""
    return 4 * (param_count(arch) + batch * seq_len * arch.input_size + _activation_floats(arch, batch, 1) * 2)


def available_bytes() -> Optional[int]:
    """Memory this process can still use: MemAvailable, or the cgroup limit if smaller; None when unknown."""
    avail: Optional[int] = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 60):
            used = 0
            for cur in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
                try:
                    with open(cur) as fh:
                        used = int(fh.read().strip())
                    break
                except (OSError, ValueError):
                    continue
            left = max(0, int(raw) - used)
            avail = left if avail is None else min(avail, left)
        break
    return avail


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def check_model_memory(arch: Any, batch: int, seq_len: int, source: str = "model", available: Optional[int] = None) -> int:
    """Refuse a model whose training would not fit in the memory left.

    Args:
        arch: the dense architecture.
        batch, seq_len: the training batch size and longest sequence.
        source: the config file (named in the error).
        available: bytes available (default: measured).

    Returns:
        The estimated training bytes.

    Raises:
        ConfigError: one line with the model, the estimate and what is available.
    """
    need = training_bytes(arch, batch, seq_len)
    have = available_bytes() if available is None else available
    if have is not None and need > have:
        widths = [layer[0] for layer in arch.hidden_sizes]
        raise ConfigError(
            f"{source}: model.hidden_sizes {widths} ({arch.cell}{', bidirectional' if arch.bidirectional else ''}) has "
            f"{param_count(arch) / 1e6:,.1f} M parameters; training it needs at least {fmt_bytes(need)} of memory "
            f"(weights, gradients, Adam moments, activations at batch {batch} x {seq_len} steps), "
            f"only {fmt_bytes(have)} is available; use smaller model.hidden_sizes"
        )
    return need


def check_measurable(arch: Any, settings: Any, source: str = "measure", available: Optional[int] = None) -> None:
    """Refuse latency-measurement settings whose input and model would not fit in memory.

    Raises:
        ConfigError: naming measure.batch_size / measure.seq_len and the memory needed.
    """
    need = inference_bytes(arch, settings["batch_size"], settings["seq_len"])
    have = available_bytes() if available is None else available
    if have is not None and need > have:
        raise ConfigError(
            f"{source}: measuring latency at measure.batch_size={settings['batch_size']} and seq_len={settings['seq_len']} "
            f"needs at least {fmt_bytes(need)} of memory, only {fmt_bytes(have)} is available; "
            f"measure.batch_size should be the batch your deployment runs (usually 1)"
        )


def check_dense_measurable(arch: Any, settings: Any, cache: Any, source: str = "measure") -> float:
    """Measure the dense model's latency (cached) before a search creates anything; failures become one line.

    Returns:
        The dense latency in milliseconds.

    Raises:
        ConfigError: the measurement settings cannot be run on this machine.
    """
    check_measurable(arch, settings, source)
    try:
        return cache.get(arch, settings)
    except ConfigError:
        raise
    except (MemoryError, RuntimeError, ValueError) as err:
        reason = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)[:200]
        raise ConfigError(
            f"{source}: cannot measure the dense model's latency with measure settings "
            f"batch_size={settings['batch_size']}, seq_len={settings['seq_len']}, threads={settings['threads']}, "
            f"runtime={settings['runtime']}: {type(err).__name__}: {reason}"
        ) from None

"""Latency of an architecture, measured once and cached by architecture signature.

Latency depends only on the compacted architecture and the measurement settings, not
on the weights' values, so a trial can be judged against a latency budget before any
training: build an untrained model of the sampled shape, look up or measure it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.pruning.measure import latency_ms

__all__ = ["LatencyCache", "LatencySettings"]


class LatencySettings(dict):
    """``batch_size``, ``seq_len``, ``threads``, ``runtime``, ``repeats``, ``warmup`` and optionally ``quantize`` (kwargs of ``latency_ms``)."""

    @classmethod
    def from_config(cls, measure_cfg, max_length: int) -> "LatencySettings":
        return cls(
            batch_size=measure_cfg.batch_size,
            seq_len=measure_cfg.seq_len or max_length,
            threads=measure_cfg.threads,
            runtime=measure_cfg.runtime,
            repeats=measure_cfg.repeats,
            warmup=measure_cfg.warmup,
        )

    def key(self) -> str:
        precision = self.get("quantize", "none")
        return f"b{self['batch_size']}-t{self['seq_len']}-th{self['threads']}-{self['runtime']}" + ("" if precision == "none" else f"-{precision}")

    def with_precision(self, quantize: str) -> "LatencySettings":
        """The same settings for a model quantized as ``quantize`` (``none`` | ``int8``)."""
        return LatencySettings(self, quantize=quantize)


class LatencyCache:
    """A JSON file mapping ``settings key|arch signature`` → milliseconds.

    Safe for several worker processes: entries are only added, and the file is
    replaced atomically (a lost race costs one repeated measurement, never a corrupt file).
    """

    def __init__(self, path: Optional[str | os.PathLike]) -> None:
        self.path = Path(path) if path else None
        self._mem: dict[str, float] = {}

    def _load(self) -> dict[str, float]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, arch: ArchSpec, settings: LatencySettings) -> float:
        key = f"{settings.key()}|{arch.signature()}"
        if key in self._mem:
            return self._mem[key]
        disk = self._load()
        if key in disk:
            self._mem[key] = disk[key]
            return disk[key]
        value = latency_ms(RNNClassifier(arch).eval(), **settings)
        self._mem[key] = value
        if self.path is not None:
            disk = self._load()
            disk[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".latency.")
            with os.fdopen(fd, "w") as fh:
                json.dump(disk, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        return value

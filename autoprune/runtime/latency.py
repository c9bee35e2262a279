"""Latency: the median time of repeated forward passes, measured once per architecture and cached.

``latency_ms`` is the median wall time of repeated forward passes after warm-up, at a
given batch size, sequence length and thread count, in torch or ONNX Runtime (float32 or
int8). It depends only on the compacted architecture and the measurement settings, not
on the weights' values, so a trial can be judged against a latency budget before any
training: build an untrained model of the sampled shape, look up or measure it
(``LatencyCache``).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

from autoprune.errors import ConfigError
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.runtime.convert import example_inputs, onnx_available, onnx_int8_bytes, ort_session, to_onnx_bytes, torch_int8

__all__ = ["latency_ms", "LatencyCache", "LatencySettings"]


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def latency_ms(
    model: RNNClassifier,
    batch_size: int = 1,
    seq_len: int = 40,
    threads: int = 1,
    runtime: str = "torch",
    repeats: int = 30,
    warmup: int = 5,
    quantize: str = "none",
    device: str = "cpu",
) -> float:
    """Median forward time in milliseconds after ``warmup`` untimed runs.

    ``quantize="int8"`` times the int8 form the runtime runs (see :mod:`autoprune.runtime.quantize`).
    ``device="cuda"`` (torch, float32) times the model on the GPU, waiting for each forward to finish.

    Raises:
        ConfigError: unknown runtime, or ``onnxruntime`` requested but not installed.
    """
    x, lengths = example_inputs(model, batch_size, seq_len, random=True)
    times = []
    was_training = model.training
    if runtime == "torch":
        model.eval()
        run = model
        if quantize == "int8":
            run = torch_int8(model)
        if device != "cpu":
            if quantize != "none" or not torch.cuda.is_available():
                raise ConfigError(f"measure.device {device}: " + ("int8 runs on the CPU" if quantize != "none" else "no CUDA GPU is visible to torch here"))
            run, x, lengths = copy.deepcopy(model).to(device), x.to(device), lengths.to(device)
        sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
        with _threads(threads), torch.inference_mode():
            for _ in range(warmup):
                run(x, lengths)
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                run(x, lengths)
                sync()
                times.append(time.perf_counter() - t0)
        model.train(was_training)
    elif runtime == "onnxruntime":
        if not onnx_available():
            raise ConfigError("runtime 'onnxruntime' needs the onnx extra: pip install 'autoprune[onnx]'")
        with _threads(threads):
            sess = ort_session(onnx_int8_bytes(model) if quantize == "int8" else to_onnx_bytes(model), threads)
        model.train(was_training)
        feed = {"x": x.numpy(), "lengths": lengths.numpy()}
        for _ in range(warmup):
            sess.run(None, feed)
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
    else:
        raise ConfigError(f"latency runtime must be 'torch' or 'onnxruntime', got {runtime!r}")
    return statistics.median(times) * 1000.0


class LatencySettings(dict):
    """``batch_size``, ``seq_len``, ``threads``, ``runtime``, ``repeats``, ``warmup``, ``device`` and optionally ``quantize`` (kwargs of ``latency_ms``)."""

    @classmethod
    def from_config(cls, measure_cfg, max_length: int) -> "LatencySettings":
        return cls(
            batch_size=measure_cfg.batch_size,
            seq_len=measure_cfg.seq_len or max_length,
            threads=measure_cfg.threads,
            runtime=measure_cfg.runtime,
            repeats=measure_cfg.repeats,
            warmup=measure_cfg.warmup,
            device=measure_cfg.device,
        )

    def key(self) -> str:
        precision = self.get("quantize", "none")
        device = self.get("device", "cpu")  # left out on the CPU: keys cached before the device was a setting stay valid
        return (
            f"b{self['batch_size']}-t{self['seq_len']}-th{self['threads']}-{self['runtime']}"
            + ("" if precision == "none" else f"-{precision}")
            + ("" if device == "cpu" else f"-{device}")
        )

    def device_label(self) -> str:
        """Where latency is measured, as every record states it: ``cpu, 1 thread, torch`` or ``cuda (NAME), torch``."""
        device = self.get("device", "cpu")
        if device == "cpu":
            return f"cpu, {self['threads']} thread{'s' if self['threads'] != 1 else ''}, {self['runtime']}"
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "not visible"
        return f"{device} ({name}), {self['runtime']}"

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

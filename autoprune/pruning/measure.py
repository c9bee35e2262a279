"""Honest measurements of a (pruned, compacted) model: size, parameters, MACs, latency.

* ``size_bytes`` is what an exported model needs: dense float32 bytes for fully dense
  tensors; for a tensor that still holds zeros, the smaller of its dense bytes and a
  sparse encoding (non-zero values plus a bitmask, or CSR with int32 column indices and
  row pointers).
* ``macs`` counts multiply-accumulates per sequence of the model as dense kernels run it.
  Unstructured zeros do not reduce it: with dense kernels they save size, not time. Only
  removing hidden units (compaction) makes the matrices, and the latency, smaller.
* ``latency_ms`` is the median wall time of repeated forward passes after warm-up, at a
  given batch size, sequence length and thread count, in torch or ONNX Runtime.
"""

from __future__ import annotations

import io
import math
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, Optional

import torch
from torch import Tensor

from autoprune.errors import ConfigError
from autoprune.models.rnn import GATES, RNNClassifier

__all__ = [
    "tensor_size_bytes",
    "size_bytes",
    "count_params",
    "macs_per_sequence",
    "latency_ms",
    "Measurement",
    "measure",
    "onnx_available",
]

_BYTES = 4  # float32


def tensor_size_bytes(t: Tensor, elem_bytes: int = _BYTES) -> int:
    """Bytes to store ``t`` at ``elem_bytes`` per value (4: float32, 1: int8): dense, or the smaller sparse encoding when it holds zeros."""
    numel = t.numel()
    dense = numel * elem_bytes
    nnz = int(torch.count_nonzero(t))
    if nnz == numel:
        return dense
    bitmask = nnz * elem_bytes + math.ceil(numel / 8)
    rows = t.shape[0] if t.dim() > 1 else 1
    csr = nnz * elem_bytes + nnz * 4 + (rows + 1) * 4
    return min(dense, bitmask, csr)


def size_bytes(model: torch.nn.Module) -> int:
    """Storage of every parameter of ``model`` (see module docstring)."""
    return sum(tensor_size_bytes(p.detach()) for p in model.parameters())


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(non-zero parameters, all parameters)."""
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return nonzero, sum(p.numel() for p in model.parameters())


def macs_per_sequence(model: RNNClassifier, seq_len: int) -> int:
    """Multiply-accumulates for one sequence of ``seq_len`` steps with dense kernels."""
    g = len(GATES[model.spec.cell])
    total = 0
    in_size = model.spec.input_size
    for sizes in model.hidden_sizes:
        for h in sizes:
            total += seq_len * g * h * (in_size + h)
        in_size = sum(sizes)
    if model.attn_proj is not None:
        # per step: projection (in x A), score (A), and the weighted sum of the outputs (in)
        total += seq_len * (in_size * model.spec.attention_dim + model.spec.attention_dim + in_size)
    total += in_size * model.spec.n_classes
    return total


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def to_onnx_bytes(model: torch.nn.Module, input_size: Optional[int] = None, batch_size: int = 1, seq_len: int = 8) -> bytes:
    """Export ``model(x, lengths)`` to ONNX in memory with dynamic batch and time axes.

    Uses the TorchScript-based exporter: fast, and it emits the native ONNX LSTM/GRU ops
    that ONNX Runtime runs well. ``input_size`` defaults to ``model.spec.input_size``.
    """
    channels = input_size if input_size is not None else model.spec.input_size
    x = torch.zeros(batch_size, seq_len, channels)
    lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x, lengths),
            buf,
            dynamo=False,
            input_names=["x", "lengths"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return buf.getvalue()


def latency_ms(
    model: RNNClassifier,
    batch_size: int = 1,
    seq_len: int = 40,
    threads: int = 1,
    runtime: str = "torch",
    repeats: int = 30,
    warmup: int = 5,
    quantize: str = "none",
) -> float:
    """Median forward time in milliseconds after ``warmup`` untimed runs.

    ``quantize="int8"`` times the int8 form the runtime runs (see :mod:`autoprune.quantize`).

    Raises:
        ConfigError: unknown runtime, or ``onnxruntime`` requested but not installed.
    """
    x = torch.randn(batch_size, seq_len, model.spec.input_size)
    lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    times = []
    was_training = model.training
    if runtime == "torch":
        model.eval()
        run = model
        if quantize == "int8":
            from autoprune.quantize import torch_int8

            run = torch_int8(model)
        with _threads(threads), torch.inference_mode():
            for _ in range(warmup):
                run(x, lengths)
            for _ in range(repeats):
                t0 = time.perf_counter()
                run(x, lengths)
                times.append(time.perf_counter() - t0)
        model.train(was_training)
    elif runtime == "onnxruntime":
        if not onnx_available():
            raise ConfigError("runtime 'onnxruntime' needs the onnx extra: pip install 'autoprune[onnx]'")
        from autoprune.quantize import onnx_int8_bytes, ort_session

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


@dataclass
class Measurement:
    """What :func:`measure` reports."""

    size_bytes: int
    nonzero_params: int
    params: int
    macs: int
    hidden_sizes: list
    latency_ms: Optional[float] = None

    def to_dict(self) -> Dict:
        return asdict(self)


def measure(
    compacted: RNNClassifier,
    seq_len: int,
    latency: Optional[dict] = None,
) -> Measurement:
    """Size, parameters, MACs and (when ``latency`` settings are given) latency of a compacted model."""
    nonzero, total = count_params(compacted)
    m = Measurement(
        size_bytes=size_bytes(compacted),
        nonzero_params=nonzero,
        params=total,
        macs=macs_per_sequence(compacted, seq_len),
        hidden_sizes=compacted.hidden_sizes,
    )
    if latency is not None:
        m.latency_ms = latency_ms(compacted, **latency)
    return m

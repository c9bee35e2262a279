"""Honest measurements of a (pruned, compacted) model: size, parameters, MACs.

* ``size_bytes`` is what an exported model needs: dense float32 bytes for fully dense
  tensors; for a tensor that still holds zeros, the smaller of its dense bytes and a
  sparse encoding (non-zero values plus a bitmask, or CSR with int32 column indices and
  row pointers).
* ``macs`` counts multiply-accumulates per sequence of the model as dense kernels run it.
  Unstructured zeros do not reduce it: with dense kernels they save size, not time. Only
  removing hidden units (compaction) makes the matrices, and the latency, smaller.
* latency (:mod:`autoprune.runtime.latency`) is the median wall time of repeated forward passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from autoprune.models.arch import conv_length, layer_out
from autoprune.models.rnn import GATES, RNNClassifier
from autoprune.runtime.latency import latency_ms

__all__ = [
    "encoded_bytes",
    "tensor_size_bytes",
    "size_bytes",
    "dense_size_bytes",
    "count_params",
    "macs_per_sequence",
    "Measurement",
    "measure",
]

_BYTES = 4  # float32


def dense_size_bytes(params: int) -> int:
    """Bytes of ``params`` dense float32 values: the size of a dense model, the reference every size ratio divides by."""
    return int(params) * _BYTES


def encoded_bytes(numel: int, nnz: int, rows: int, elem_bytes: int = _BYTES) -> int:
    """Bytes of a tensor of ``numel`` values (``rows`` rows), ``nnz`` of them non-zero, at ``elem_bytes`` per value:
    dense, or when it holds zeros the smaller of dense, non-zero values plus a bitmask, and CSR (int32 column
    indices and row pointers). The rule every size autoprune reports follows (and the size-first search plans with)."""
    dense = numel * elem_bytes
    if nnz >= numel:
        return dense
    bitmask = nnz * elem_bytes + math.ceil(numel / 8)
    csr = nnz * elem_bytes + nnz * 4 + (rows + 1) * 4
    return min(dense, bitmask, csr)


def tensor_size_bytes(t: Tensor, elem_bytes: int = _BYTES) -> int:
    """Bytes to store ``t`` at ``elem_bytes`` per value (4: float32, 1: int8): see :func:`encoded_bytes`."""
    return encoded_bytes(t.numel(), int(torch.count_nonzero(t)), t.shape[0] if t.dim() > 1 else 1, elem_bytes)


def size_bytes(model: torch.nn.Module) -> int:
    """Storage of every parameter of ``model`` (see module docstring)."""
    return sum(tensor_size_bytes(p.detach()) for p in model.parameters())


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(non-zero parameters, all parameters)."""
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return nonzero, sum(p.numel() for p in model.parameters())


def macs_per_sequence(model: RNNClassifier, seq_len: int) -> int:
    """Multiply-accumulates for one sequence of ``seq_len`` steps with dense kernels.

    Counted: the front-end's Linear and Conv1d layers (a strided Conv1d shortens what follows), the
    recurrent layers, attention pooling, and the head (per frame when the model has no pooling).
    Embeddings, norms and activations cost no multiply-accumulates of weights.
    """
    spec = model.spec
    g = len(GATES[spec.cell])
    total, steps, width = 0, seq_len, spec.input_size
    for layer in spec.front:
        out_steps = conv_length(layer, steps)
        if layer["kind"] == "linear":
            total += steps * width * layer["out"]
        elif layer["kind"] == "conv1d":
            total += out_steps * width * layer["kernel"] * layer["out"]
        steps, width = out_steps, layer_out(layer, width)
    in_size = width
    for sizes in model.hidden_sizes:
        for h in sizes:
            total += steps * g * h * (in_size + h)
        in_size = sum(sizes)
    if model.attn_proj is not None:
        # per step: projection (in x A), score (A), and the weighted sum of the outputs (in)
        total += steps * (in_size * spec.attention_dim + spec.attention_dim + in_size)
    per_output = steps if spec.per_frame else 1
    widths = spec.head_widths()
    for layer, width in zip(spec.head_layers, widths):
        if layer["kind"] == "linear":
            total += per_output * width * layer["out"]
    total += per_output * widths[-1] * spec.n_classes
    return total


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


def measure(compacted: RNNClassifier, seq_len: int, latency: Optional[dict] = None) -> Measurement:
    """Size, parameters, MACs and (when ``latency`` settings, the keywords of :func:`latency_ms`, are given) latency of a compacted model."""
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

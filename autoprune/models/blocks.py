"""The non-recurrent parts of the family as torch modules: a run of layers (front-end, a gap between
recurrent layers, the head's hidden layers) built from the layer dicts of :mod:`autoprune.models.arch`.

Sequences are batch-first ``[B, T, C]`` with their lengths ``[B]``. Padding never changes a
prediction: after every layer that could make a padded step non-zero (an embedding, a Linear or
Conv1d with its bias, a norm, a sigmoid), padded steps are set back to 0, so a Conv1d reads zeros
past a sequence's end exactly as its own zero padding would when the sequence runs alone; a
Conv1d maps the lengths as it maps the steps. Everything here is TorchScript- and ONNX-exportable.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprune.models.arch import ACTIVATIONS, LAYER_KINDS, layer_out

__all__ = ["Layers", "LayerNorm", "build_layer", "valid_steps"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "elu": nn.ELU}


def valid_steps(lengths: Tensor, steps: int) -> Tensor:
    """``[B, steps]`` bool: True where a step lies within its sequence's length."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, as if ``zeros`` more features, all exactly 0, were there.

    Compaction removes features that are 0 before a LayerNorm (pruned hidden units); the
    statistics must still count them for the outputs to stay the same:
    mean = Σx / (n + z), var = (Σ(x - mean)² + z·mean²) / (n + z).
    """

    def __init__(self, size: int, eps: float = 1e-5, zeros: int = 0) -> None:
        super().__init__(size, eps=eps)
        self.zeros = int(zeros)

    def forward(self, x: Tensor) -> Tensor:
        if self.zeros == 0:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        n = x.size(-1) + self.zeros
        mean = x.sum(-1, keepdim=True) / n
        var = ((x - mean) ** 2).sum(-1, keepdim=True) / n + self.zeros * mean * mean / n
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def build_layer(spec: Dict[str, Any], width: int) -> nn.Module:
    """The torch module of one layer dict receiving ``width`` features (an embedding: ``width`` is the vocabulary)."""
    kind = spec["kind"]
    if kind == "embedding":
        return nn.Embedding(width, int(spec["dim"]), padding_idx=spec.get("padding_idx"))
    if kind == "linear":
        return nn.Linear(width, int(spec["out"]), bias=bool(spec.get("bias", True)))
    if kind == "conv1d":
        return nn.Conv1d(
            width, int(spec["out"]), int(spec["kernel"]), stride=int(spec.get("stride", 1)), padding=int(spec.get("padding", 0)),
            dilation=int(spec.get("dilation", 1)), bias=bool(spec.get("bias", True)),
        )
    if kind == "batchnorm":
        return nn.BatchNorm1d(width, eps=float(spec.get("eps", 1e-5)), momentum=float(spec.get("momentum", 0.1)))
    if kind == "layernorm":
        return LayerNorm(width, eps=float(spec.get("eps", 1e-5)), zeros=int(spec.get("zeros", 0)))
    if kind == "dropout":
        return nn.Dropout(float(spec.get("p", 0.1)))
    if kind == "leaky_relu":
        return nn.LeakyReLU(float(spec.get("slope", 0.01)))
    if kind in ACTIVATIONS:
        return _ACTIVATIONS[kind]()
    raise ValueError(f"unknown layer kind {kind!r}")  # the config and the converter refuse it first


class Layers(nn.ModuleList):
    """A run of layers ``forward(x, lengths) -> (x, lengths)``; a ModuleList of the layers themselves
    (state dict keys ``<i>.weight``), so a front-end's keys are ``front.<i>.weight``.

    ``x`` is ``[B, T, C]`` (or token ids ``[B, T]`` before an embedding) or, in a pooled head, ``[B, C]``.
    """

    def __init__(self, specs: List[Dict[str, Any]], width: int) -> None:
        modules, kinds, geometry, mask = [], [], [], []
        for spec in specs:
            modules.append(build_layer(spec, width))
            kinds.append(spec["kind"])
            k, s, p, d = (int(spec.get(key, dflt)) for key, dflt in (("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1)))
            geometry.append([k, s, p, d])
            mask.append(not LAYER_KINDS[spec["kind"]].zero_preserving)
            width = layer_out(spec, width)
        super().__init__(modules)
        self.kinds: List[str] = kinds
        self.geometry: List[List[int]] = geometry  # kernel, stride, padding, dilation (1, 1, 0, 1: the length stays)
        self.mask: List[bool] = mask  # re-zero padded steps after this layer
        self.output_size = width

    def forward(self, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        for i, layer in enumerate(self):
            kind = self.kinds[i]
            if kind == "conv1d":
                k, s, p, d = self.geometry[i][0], self.geometry[i][1], self.geometry[i][2], self.geometry[i][3]
                x = layer(x.transpose(1, 2)).transpose(1, 2)
                lengths = torch.clamp(torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1, min=1)
            elif kind == "batchnorm" and x.dim() == 3:
                x = layer(x.transpose(1, 2)).transpose(1, 2)
            else:
                x = layer(x)
            if self.mask[i] and x.dim() == 3:
                x = x * valid_steps(lengths, x.size(1)).unsqueeze(2).to(x.dtype)
        return x, lengths

"""The family's model (front-end → recurrent layers → pooling → head) built around a stack of single-layer LSTM/GRU modules.

``nn.LSTM(num_layers=k)`` forces one hidden size on every layer; after hidden-unit
pruning each layer (and each direction) keeps its own, so the stack holds one
single-layer ``nn.LSTM``/``nn.GRU`` per layer and direction. Sequences are padded
at the end and come with their lengths; padding never changes a prediction:
the forward direction reads valid steps first, the backward direction runs on
each sequence reversed within its own length, ``last`` pooling gathers the last
valid step, mean / max / attention pooling mask padded steps (the front-end's layers
re-zero them, :mod:`autoprune.models.blocks`).

Everything here is TorchScript- and ONNX-exportable (no packed sequences).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.models.arch import GATES, ArchSpec, check_arch
from autoprune.models.blocks import Layers, valid_steps

__all__ = [
    "ArchSpec",
    "RNNLayer",
    "RNNStack",
    "RNNClassifier",
    "GATES",
    "reverse_padded",
    "convert_torch_rnn",
    "Normalized",
    "flat_outputs",
    "flat_labels",
    "scored",
    "scored_count",
    "evaluate",
]

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a batch-first padded batch within its own length.

    Positions past a sequence's length stay where they are, so applying it twice is
    the identity.
    """
    t = x.size(1)
    steps = torch.arange(t, device=x.device).unsqueeze(0)  # [1, T]
    lens = lengths.to(x.device).unsqueeze(1)  # [B, 1]
    idx = torch.where(steps < lens, lens - 1 - steps, steps)  # [B, T]
    return x.gather(1, idx.unsqueeze(2).expand(-1, -1, x.size(2)))


class RNNLayer(nn.Module):
    """One layer: a single-layer LSTM/GRU per direction (``dirs[0]`` forward, ``dirs[1]`` backward)."""

    def __init__(self, cell: str, input_size: int, hidden_sizes: List[int]) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ConfigError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if len(hidden_sizes) not in (1, 2):
            raise ConfigError(f"a layer has 1 or 2 directions, got {len(hidden_sizes)}")
        for h in hidden_sizes:
            if h < 1:
                raise ConfigError(f"every layer keeps at least one hidden unit, got hidden size {h}")
        self.cell = cell
        self.hidden_sizes = list(hidden_sizes)
        self.dirs = nn.ModuleList([_CELLS[cell](input_size, h, num_layers=1, batch_first=True) for h in hidden_sizes])

    @property
    def output_size(self) -> int:
        return sum(self.hidden_sizes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        outs: List[Tensor] = []
        for i, rnn in enumerate(self.dirs):
            if i == 0:
                out = rnn(x)[0]
            else:
                out = reverse_padded(rnn(reverse_padded(x, lengths))[0], lengths)
            outs.append(out)
        if len(outs) == 1:
            return outs[0]
        return torch.cat(outs, dim=2)


class RNNStack(nn.ModuleList):
    """A stack of :class:`RNNLayer` with dropout between layers; returns the last layer's outputs.

    A ``ModuleList`` of the layers itself, so ``stack[l]`` is layer ``l`` and its state dict
    keys are ``<l>.dirs.<d>.weight_ih_l0``...: :class:`RNNClassifier` holds one as ``rnn``,
    and checkpoints and group names (``rnn.<l>.dirs.<d>...``) rely on those keys.
    """

    def __init__(self, cell: str, input_size: int, hidden_sizes: List[List[int]], dropout: float = 0.0) -> None:
        layers = []
        size = input_size
        for layer_sizes in hidden_sizes:
            layer = RNNLayer(cell, size, layer_sizes)
            layers.append(layer)
            size = layer.output_size
        super().__init__(layers)
        self.dropout = float(dropout)  # a float, not an nn.Dropout: a child module would be one more list item
        self.output_size = size

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        for i, layer in enumerate(self):
            if i > 0:
                x = F.dropout(x, self.dropout, self.training)  # what nn.Dropout does
            x = layer(x, lengths)
        return x


class RNNClassifier(nn.Module):
    """The family's model: front-end → recurrent layers (with gaps) → pooling → head (see :mod:`autoprune.models.arch`).

    ``forward(x, lengths)`` takes a batch-first padded float tensor ``[B, T, C]`` (token ids
    ``[B, T]`` int64 when the front starts with an embedding) and the int64 lengths ``[B]``, and
    returns logits ``[B, n_classes]``, or ``[B, T, n_classes]`` per frame (``pooling: none``).
    Models of the original family (no front, gaps or head layers) keep their state dict keys:
    ``rnn.<l>.dirs.<d>.*``, ``attn_proj``, ``attn_score``, ``head``.
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        problem = check_arch(spec)
        if problem:
            raise ConfigError(problem)
        self.spec = spec
        self.front = Layers(spec.front, spec.input_size) if spec.front else None
        self.rnn = RNNStack(spec.cell, spec.rnn_input_size, spec.hidden_sizes, spec.dropout)
        # one run of layers before each recurrent layer (the first empty): the gaps between them
        gaps = [Layers([], 0)] + [Layers(g, sum(spec.hidden_sizes[l])) for l, g in enumerate(spec.between)]
        self.between = nn.ModuleList(gaps) if spec.between else None
        self.dropout = nn.Dropout(spec.dropout)
        self.pooling = spec.pooling
        last = spec.hidden_sizes[-1]
        self.fwd_size = last[0]
        self.bidirectional = len(last) == 2
        out_size = sum(last)
        if spec.pooling == "attention":
            self.attn_proj = nn.Linear(out_size, spec.attention_dim)
            self.attn_score = nn.Linear(spec.attention_dim, 1, bias=False)
        else:
            self.attn_proj = None
            self.attn_score = None
        self.head_layers = Layers(spec.head_layers, out_size) if spec.head_layers else None
        self.head = nn.Linear(spec.head_widths()[-1], spec.n_classes)

    def recurrent(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The last recurrent layer's outputs ``[B, T, D]`` (the gaps' layers between the recurrent layers)."""
        if self.between is None:
            return self.rnn(x, lengths)
        for gap, layer in zip(self.between, self.rnn):
            x, _ = gap(x, lengths)
            x = layer(x, lengths)
        return x

    def pool(self, h: Tensor, lengths: Tensor) -> Tensor:
        if self.pooling == "none":
            return h
        valid = valid_steps(lengths.to(h.device), h.size(1))  # [B, T]
        if self.attn_proj is not None and self.attn_score is not None:
            scores = self.attn_score(torch.tanh(self.attn_proj(h))).squeeze(2)  # [B, T]
            scores = scores.masked_fill(~valid, -1e9)
            weights = torch.softmax(scores, dim=1)
            return (weights.unsqueeze(2) * h).sum(1)
        if self.pooling == "mean":
            return (h * valid.unsqueeze(2).to(h.dtype)).sum(1) / lengths.to(h.device).clamp(min=1).unsqueeze(1).to(h.dtype)
        if self.pooling == "max":
            return h.masked_fill(~valid.unsqueeze(2), float("-inf")).max(1)[0]
        idx = (lengths.to(h.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.size(2))
        last = h.gather(1, idx).squeeze(1)
        if self.bidirectional and self.pooling == "last":
            # the backward direction has seen the whole sequence at step 0
            return torch.cat([last[:, : self.fwd_size], h[:, 0, self.fwd_size :]], dim=1)
        return last

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if self.front is not None:
            x, lengths = self.front(x, lengths)
        h = self.recurrent(x, lengths)  # the last RNN layer's outputs [B, T, D]
        z = self.dropout(self.pool(h, lengths))
        if self.head_layers is not None:
            z, _ = self.head_layers(z, lengths)
        return self.head(z)

    @property
    def hidden_sizes(self) -> List[List[int]]:
        return [list(layer.hidden_sizes) for layer in self.rnn]

    @classmethod
    def from_torch(
        cls,
        rnn: nn.Module,
        head: nn.Linear,
        pooling: str = "last",
        attention: Optional[tuple[nn.Linear, nn.Linear]] = None,
    ) -> "RNNClassifier":
        """Build a classifier from a user's multi-layer ``nn.LSTM``/``nn.GRU`` and linear head.

        Args:
            rnn: the user's recurrent module (any ``num_layers``, uni- or bidirectional,
                ``batch_first`` either way; the classifier is always batch-first).
            head: the linear layer applied to the pooled features.
            pooling: one of :data:`~autoprune.models.arch.POOLINGS`.
            attention: with attention pooling, the (projection, score) linear layers.
        """
        stack = convert_torch_rnn(rnn)
        dirs = 2 if rnn.bidirectional else 1
        spec = ArchSpec(
            cell="lstm" if isinstance(rnn, nn.LSTM) else "gru",
            input_size=rnn.input_size,
            hidden_sizes=[[rnn.hidden_size] * dirs for _ in range(rnn.num_layers)],
            n_classes=head.out_features,
            pooling=pooling,
            attention_dim=attention[0].out_features if attention else 32,
            dropout=float(rnn.dropout),
        )
        model = cls(spec)
        model.rnn.load_state_dict(stack.state_dict())
        model.head.load_state_dict(head.state_dict())
        if attention is not None:
            if model.attn_proj is None or model.attn_score is None:
                raise ConfigError("attention layers given but pooling is not 'attention'")
            model.attn_proj.load_state_dict(attention[0].state_dict())
            model.attn_score.load_state_dict(attention[1].state_dict())
        return model


class Normalized(nn.Module):
    """Raw inputs → per-channel normalisation (padding stays zero) → ``model``: what exports ship.

    Token ids (``mean``/``std`` None) pass through unchanged: an embedding reads them as they are.
    """

    def __init__(self, model: nn.Module, mean: Optional[Tensor], std: Optional[Tensor]) -> None:
        super().__init__()
        self.model = model
        self.scale = mean is not None and std is not None
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(1)).reshape(1, 1, -1).float().clone())
        self.register_buffer("std", (std if std is not None else torch.ones(1)).reshape(1, 1, -1).float().clone())

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.scale:
            return self.model(x, lengths)
        valid = valid_steps(lengths, x.size(1)).unsqueeze(2).to(x.dtype)
        return self.model((x - self.mean) / self.std * valid, lengths)


def convert_torch_rnn(rnn: nn.Module) -> RNNStack:
    """Convert a multi-layer ``nn.LSTM``/``nn.GRU`` into an :class:`RNNStack` with identical outputs.

    The stack is batch-first; for full-length inputs ``stack(x, lengths)`` equals
    ``rnn(x)[0]`` (with ``x`` transposed if the original is not batch-first).

    Raises:
        ConfigError: for modules other than nn.LSTM/nn.GRU, ``proj_size``, or no bias.
    """
    if isinstance(rnn, nn.LSTM):
        cell = "lstm"
        if rnn.proj_size:
            raise ConfigError("nn.LSTM with proj_size > 0 is not supported; got proj_size=%d" % rnn.proj_size)
    elif isinstance(rnn, nn.GRU):
        cell = "gru"
    else:
        raise ConfigError(f"expected nn.LSTM or nn.GRU, got {type(rnn).__name__}")
    if not rnn.bias:
        raise ConfigError(f"{type(rnn).__name__}(bias=False) is not supported: autoprune's layers carry biases")
    dirs = 2 if rnn.bidirectional else 1
    stack = RNNStack(cell, rnn.input_size, [[rnn.hidden_size] * dirs for _ in range(rnn.num_layers)], float(rnn.dropout))
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
                target = stack[layer].dirs[d]
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(target, f"{name}_l0").copy_(getattr(rnn, name + suffix))
    return stack


def flat_outputs(logits: Tensor, lengths: Tensor) -> Tensor:
    """The outputs that are scored: ``[B, C]`` as they are, per-frame ``[B, T, C]`` as ``[ΣL, C]`` (the valid frames, sequence by sequence).

    The one rule of what counts, wherever loss or accuracy is computed (training, evaluation, int8,
    export verification): a sequence, or each frame within a sequence's true length.
    """
    if logits.dim() == 3:
        return logits[valid_steps(lengths.to(logits.device), logits.size(1))]
    return logits


def flat_labels(y: Tensor, lengths: Tensor) -> Tensor:
    """Labels in the order of :func:`flat_outputs`: ``[B]`` as they are, per-frame ``[B, T]`` as ``[ΣL]``."""
    if y.dim() == 2:
        return y[valid_steps(lengths.to(y.device), y.size(1))]
    return y


def scored_count(y: Tensor, lengths: Tensor) -> int:
    """How many outputs of a split are scored: its sequences, or its valid frames (the step of its accuracy is one over this)."""
    return int(flat_labels(y, lengths).numel())


def scored(logits: Tensor, y: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """``(outputs, labels)`` that are scored (:func:`flat_outputs`, :func:`flat_labels`; per-frame labels trimmed to the outputs' steps)."""
    if logits.dim() == 3:
        y = y[:, : logits.size(1)]
    return flat_outputs(logits, lengths), flat_labels(y, lengths)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, lengths: Tensor, y: Tensor, batch_size: int = 512) -> dict[str, float]:
    """Loss and accuracy of ``model`` on full tensors, in eval mode, without Lightning: per sequence,
    or per frame over the true lengths (:func:`scored`)."""
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    for i in range(0, len(lengths), batch_size):
        xb, lb, yb = x[i : i + batch_size], lengths[i : i + batch_size], y[i : i + batch_size]
        xb = xb[:, : int(lb.max())]
        logits, yb = scored(model(xb, lb), yb, lb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        n += len(yb)
    model.train(was_training)
    n = max(n, 1)
    return {"loss": total_loss / n, "accuracy": correct / n}

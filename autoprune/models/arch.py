"""Architecture description of an RNN model, importable without torch.

The family (front-end → recurrent layers → pooling → head)::

    x [B, T, C] float (or token ids [B, T] int64)
      → front: Embedding | Linear | Conv1d | BatchNorm | LayerNorm | activation | Dropout, in any order
      → recurrent layers (LSTM or GRU, each layer and direction its own width), with norms,
        activations or dropout between them (``between``)
      → pooling over the true lengths: last | last_output | mean | max | attention | none (one output per frame)
      → head: Linear layers with activations, norms and dropout between them (``head_layers``), then the
        output Linear to the classes.

A layer of the front, the gaps or the head is a plain dict, its ``kind`` one of :data:`LAYER_KINDS`;
widths that follow from the layer before (a norm's size, a Linear's input) are not stored, so that
changing the recurrent widths (hidden-unit pruning) changes nothing else in the spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "ArchSpec",
    "GATES",
    "DIRECTIONS",
    "POOLINGS",
    "ACTIVATIONS",
    "LAYER_KINDS",
    "LayerKind",
    "layer_name",
    "units_removed",
    "units_kept",
    "layer_out",
    "layer_params",
    "conv_length",
    "normalize_layer",
    "check_arch",
    "task_mismatch",
]

#: Gate blocks of the weight rows, in PyTorch's order.
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}

#: names of the directions of a bidirectional layer
DIRECTIONS = ("fwd", "bwd")

#: how the recurrent outputs ``[B, T, D]`` become the head's input, over each sequence's true length:
#: ``last``: the final states (forward at the last valid step, backward at step 0: h_n);
#: ``last_output``: every direction's output at the last valid step (the backward direction has seen one step there);
#: ``mean`` / ``max`` over the valid steps; ``attention``: a learned softmax over the valid steps;
#: ``none``: no pooling, one output per frame.
POOLINGS = ("last", "last_output", "mean", "max", "attention", "none")

#: activations a front-end, gap or head may hold (f(0) = 0 for all but sigmoid)
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu")


@dataclass(frozen=True)
class LayerKind:
    """What a layer kind does to the features, as compaction and the group algebra need it.

    Attributes:
        places: where it may stand (``front``, ``between``, ``head``).
        per_feature: output feature *k* depends on input feature *k* only (a removed feature's
            value may be anything when nothing reads it afterwards).
        zero_preserving: a feature that is 0 stays 0 (eval mode).
        weighted: it has a weight matrix (a prunable ``front.<i>`` / ``head.<i>`` matrix).
    """

    places: Tuple[str, ...]
    per_feature: bool = True
    zero_preserving: bool = True
    weighted: bool = False


LAYER_KINDS: Dict[str, LayerKind] = {
    "embedding": LayerKind(("front",), per_feature=False, zero_preserving=False, weighted=True),
    "linear": LayerKind(("front", "head"), per_feature=False, zero_preserving=False, weighted=True),
    "conv1d": LayerKind(("front",), per_feature=False, zero_preserving=False, weighted=True),
    "batchnorm": LayerKind(("front", "between", "head"), zero_preserving=False),
    "layernorm": LayerKind(("front", "between", "head"), per_feature=False, zero_preserving=False),
    "dropout": LayerKind(("front", "between", "head")),
    **{a: LayerKind(("front", "between", "head"), zero_preserving=a != "sigmoid") for a in ACTIVATIONS},
}

#: the keys each kind stores beside ``kind``, with their defaults (None: required)
LAYER_KEYS: Dict[str, Dict[str, Any]] = {
    "embedding": {"dim": None, "padding_idx": None},
    "linear": {"out": None, "bias": True},
    "conv1d": {"out": None, "kernel": None, "stride": 1, "padding": 0, "dilation": 1, "bias": True},
    "batchnorm": {"eps": 1e-5, "momentum": 0.1},
    "layernorm": {"eps": 1e-5, "zeros": 0},
    "dropout": {"p": 0.1},
    "leaky_relu": {"slope": 0.01},
}


def layer_name(layer: int, direction: int, bidirectional: bool) -> str:
    """The group name of one layer and direction's hidden units: ``rnn.<layer>[.fwd|.bwd]``."""
    return f"rnn.{layer}" + (f".{DIRECTIONS[direction]}" if bidirectional else "")


def units_removed(hidden: int, fraction: float) -> int:
    """How many of a layer's ``hidden`` units a hidden-unit sparsity ``fraction`` removes (rounded to the nearest unit)."""
    return int(round(fraction * hidden))


def units_kept(hidden: int, fraction: float) -> int:
    """How many of a layer's ``hidden`` units are left after removing ``fraction`` of them."""
    return hidden - units_removed(hidden, fraction)


def layer_out(spec: Dict[str, Any], width: int) -> int:
    """The feature width after a layer that receives ``width`` features."""
    kind = spec["kind"]
    if kind == "embedding":
        return int(spec["dim"])
    if kind in ("linear", "conv1d"):
        return int(spec["out"])
    return width


def layer_params(spec: Dict[str, Any], width: int) -> int:
    """Parameters of a layer that receives ``width`` features (an embedding: ``width`` is the vocabulary)."""
    kind = spec["kind"]
    if kind == "embedding":
        return width * int(spec["dim"])
    if kind == "linear":
        return int(spec["out"]) * (width + int(bool(spec.get("bias", True))))
    if kind == "conv1d":
        return int(spec["out"]) * (width * int(spec["kernel"]) + int(bool(spec.get("bias", True))))
    if kind in ("batchnorm", "layernorm"):
        return 2 * width
    return 0


def conv_length(spec: Dict[str, Any], length: int) -> int:
    """Steps after a layer given ``length`` steps (a Conv1d maps them; every other kind keeps them)."""
    if spec["kind"] != "conv1d":
        return length
    k, s, p, d = (int(spec.get(key, dflt)) for key, dflt in (("kernel", 1), ("stride", 1), ("padding", 0), ("dilation", 1)))
    return max(1, (length + 2 * p - d * (k - 1) - 1) // s + 1)


def _widths(layers: List[Dict[str, Any]], width: int) -> List[int]:
    """Input width of every layer, then the output width (``len(layers) + 1`` numbers)."""
    out = [width]
    for spec in layers:
        width = layer_out(spec, width)
        out.append(width)
    return out


@dataclass
class ArchSpec:
    """Everything needed to rebuild an :class:`~autoprune.models.rnn.RNNClassifier` (before loading weights).

    ``hidden_sizes[layer][direction]``: each recurrent layer and direction has its own width (after
    hidden-unit pruning they differ). ``input_size`` is the model's input channels, or the vocabulary
    size when the front starts with an embedding (token inputs). ``front`` / ``between`` /
    ``head_layers`` are lists of layer dicts (module docstring); ``between`` is empty (the ``dropout``
    between every two layers) or holds one list per gap between recurrent layers.
    """

    cell: str
    input_size: int
    hidden_sizes: List[List[int]]
    n_classes: int
    pooling: str = "last"
    attention_dim: int = 32
    dropout: float = 0.0
    front: List[Dict[str, Any]] = field(default_factory=list)
    between: List[List[Dict[str, Any]]] = field(default_factory=list)
    head_layers: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def bidirectional(self) -> bool:
        return len(self.hidden_sizes[0]) == 2

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)

    @property
    def tokens(self) -> bool:
        """The model takes token ids ``[B, T]`` int64: its front starts with an embedding."""
        return bool(self.front) and self.front[0]["kind"] == "embedding"

    @property
    def per_frame(self) -> bool:
        """One output per frame (``pooling: none``): logits ``[B, T, n_classes]``."""
        return self.pooling == "none"

    @property
    def rnn_input_size(self) -> int:
        """Features the first recurrent layer reads: the front's output width."""
        return _widths(self.front, self.input_size)[-1]

    @property
    def output_size(self) -> int:
        """Features of the last recurrent layer's output (both directions)."""
        return sum(self.hidden_sizes[-1])

    def head_widths(self) -> List[int]:
        """Input width of every head layer, then the output layer's input width."""
        return _widths(self.head_layers, self.output_size)

    def head_units(self) -> Dict[str, int]:
        """Hidden-unit groups of the head: ``head.<i>`` (the Linear at ``head_layers[i]``) → its width."""
        return {f"head.{i}": int(s["out"]) for i, s in enumerate(self.head_layers) if s["kind"] == "linear"}

    def with_head_units(self, widths: Dict[str, int]) -> "ArchSpec":
        """The same architecture with other head widths (``head.<i>`` → units kept)."""
        layers = [dict(s, out=int(widths[f"head.{i}"])) if f"head.{i}" in widths else dict(s) for i, s in enumerate(self.head_layers)]
        return replace(self, head_layers=layers)

    def layer_names(self) -> Dict[str, Tuple[int, int]]:
        """Hidden-unit group name → (layer, direction), layers in order, forward first."""
        return {layer_name(l, d, self.bidirectional): (l, d) for l, sizes in enumerate(self.hidden_sizes) for d in range(len(sizes))}

    def with_hidden_sizes(self, hidden_sizes: List[List[int]]) -> "ArchSpec":
        """The same architecture with other hidden sizes (what compaction and hidden-unit pruning change)."""
        return replace(self, hidden_sizes=[list(sizes) for sizes in hidden_sizes])

    def out_length(self, length: int) -> int:
        """Steps the recurrent layers see for an input of ``length`` steps (strided convolutions shorten it)."""
        for spec in self.front:
            length = conv_length(spec, length)
        return length

    def param_count(self) -> int:
        """Parameters of the built model, counted from the spec (no torch)."""
        blocks = len(GATES[self.cell])
        widths = _widths(self.front, self.input_size)
        n = sum(layer_params(s, w) for s, w in zip(self.front, widths))
        inp = widths[-1]
        for l, layer in enumerate(self.hidden_sizes):
            if self.between and l > 0:
                n += sum(layer_params(s, inp) for s in self.between[l - 1])
            for h in layer:
                n += blocks * h * (inp + h + 2)  # weight_ih, weight_hh, bias_ih, bias_hh
            inp = sum(layer)
        if self.pooling == "attention":
            n += inp * self.attention_dim + self.attention_dim + self.attention_dim
        heads = self.head_widths()
        n += sum(layer_params(s, w) for s, w in zip(self.head_layers, heads))
        return n + heads[-1] * self.n_classes + self.n_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchSpec":
        return cls(**data)

    @classmethod
    def from_config(cls, model_cfg: Any, input_size: int, n_classes: int, padding_id: Optional[int] = None) -> "ArchSpec":
        """The spec of a study's ``model:`` section for data of ``input_size`` channels (or tokens) and ``n_classes``;
        an embedding without ``padding_idx`` takes the task's ``padding_id``."""
        dirs = 2 if model_cfg.bidirectional else 1
        gaps = len(model_cfg.hidden_sizes) - 1
        between = [[dict(s) for s in model_cfg.between] for _ in range(gaps)] if getattr(model_cfg, "between", None) else []
        return cls(
            cell=model_cfg.cell,
            input_size=input_size,
            hidden_sizes=[[h] * dirs for h in model_cfg.hidden_sizes],
            n_classes=n_classes,
            pooling=model_cfg.pooling,
            attention_dim=model_cfg.attention_dim,
            dropout=model_cfg.dropout,
            front=[dict(s, padding_idx=padding_id) if s["kind"] == "embedding" and s.get("padding_idx") is None else dict(s)
                   for s in getattr(model_cfg, "front", None) or []],
            between=between,
            head_layers=[dict(s) for s in getattr(model_cfg, "head", None) or []],
        )

    def signature(self) -> str:
        """A short string naming the compute-relevant architecture (latency cache key).

        Models of the original family (no front, gaps or head layers) keep the signature they had.
        """
        widths = "-".join("/".join(str(h) for h in layer) for layer in self.hidden_sizes)
        base = f"{self.cell}:{self.input_size}:{widths}:{self.n_classes}:{self.pooling}:{self.attention_dim}"
        extra = {k: getattr(self, k) for k in ("front", "between", "head_layers") if getattr(self, k)}
        return base + (":" + json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else "")


def normalize_layer(entry: Any, place: str, where: str = "layer") -> Dict[str, Any]:
    """A layer as written in a study (``relu``, ``{kind: conv1d, out: 32, kernel: 5}``) → its stored dict.

    Raises:
        ValueError: an unknown kind, a kind that cannot stand in ``place``, unknown or missing keys, bad values.
    """
    spec = {"kind": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, dict) else None
    if spec is None or not isinstance(spec.get("kind"), str):
        raise ValueError(f"{where}: a layer is a kind name (relu) or a mapping with 'kind' ({{kind: linear, out: 64}}), got {entry!r}")
    kind = spec["kind"]
    allowed = [k for k, v in LAYER_KINDS.items() if place in v.places]
    if kind not in allowed:
        words = {"front": "front-end", "between": "gap between recurrent layers", "head": "head"}[place]
        raise ValueError(f"{where}: layer kind {kind!r} cannot stand in the {words}; allowed there: {', '.join(allowed)}")
    keys = LAYER_KEYS.get(kind, {})
    unknown = sorted(set(spec) - set(keys) - {"kind"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for a {kind} layer; allowed: {', '.join(['kind', *keys]) }")
    out: Dict[str, Any] = {"kind": kind}
    for key, default in keys.items():
        value = spec.get(key, default)
        if value is None and key != "padding_idx":
            raise ValueError(f"{where}: a {kind} layer needs '{key}'")
        out[key] = value
    _check_values(out, where)
    return out


def _check_values(spec: Dict[str, Any], where: str) -> None:
    def whole(key: str, low: int) -> None:
        v = spec[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{where}: {spec['kind']}.{key} must be an integer >= {low}, got {v!r}")

    for key in ("out", "dim", "kernel", "stride", "dilation"):
        if key in spec:
            whole(key, 1)
    for key in ("padding", "zeros"):
        if key in spec:
            whole(key, 0)
    if spec.get("padding_idx") is not None:
        whole("padding_idx", 0)
    if "p" in spec and not (isinstance(spec["p"], (int, float)) and 0.0 <= spec["p"] < 1.0):
        raise ValueError(f"{where}: dropout.p must be in [0, 1), got {spec['p']!r}")
    for key in ("eps", "momentum", "slope"):
        if key in spec and not (isinstance(spec[key], (int, float)) and not isinstance(spec[key], bool) and spec[key] >= 0):
            raise ValueError(f"{where}: {spec['kind']}.{key} must be a number >= 0, got {spec[key]!r}")
    if "bias" in spec and not isinstance(spec["bias"], bool):
        raise ValueError(f"{where}: {spec['kind']}.bias must be true or false, got {spec['bias']!r}")


def task_mismatch(spec: ArchSpec, task: str, tokens: bool, per_frame: bool) -> Optional[str]:
    """Why a model cannot take a task's data (token ids or frames; one label per sequence or per frame), or None."""
    if tokens and not spec.tokens:
        return f"task {task} gives token ids: the model's front-end must start with an embedding, e.g. front: [{{kind: embedding, dim: 32}}]"
    if spec.tokens and not tokens:
        return f"the model's front-end starts with an embedding (it reads token ids) but task {task} gives float frames"
    if per_frame and not spec.per_frame:
        return f"task {task} gives one label per frame: the model needs pooling: none (one output per frame), not {spec.pooling!r}"
    if spec.per_frame and not per_frame:
        return f"task {task} gives one label per sequence: pooling none gives one output per frame; use last, last_output, mean, max or attention"
    return None


def check_arch(spec: ArchSpec) -> Optional[str]:
    """Why ``spec`` cannot be built (one line), or None.

    Checks what the layer dicts alone cannot: an embedding only first, a per-frame model keeping
    its length through the front, an embedding's padding id inside the vocabulary.
    """
    if spec.pooling not in POOLINGS:
        return f"pooling must be one of {', '.join(POOLINGS)}, got {spec.pooling!r}"
    for i, s in enumerate(spec.front):
        if s["kind"] == "embedding" and i > 0:
            return f"front[{i}]: an embedding must be the first front-end layer (it reads the token ids)"
        if s["kind"] == "embedding" and s.get("padding_idx") is not None and not 0 <= s["padding_idx"] < spec.input_size:
            return f"front[{i}]: padding_idx {s['padding_idx']} is outside the vocabulary of {spec.input_size} tokens"
    if spec.per_frame:
        for i, s in enumerate(spec.front):
            if s["kind"] == "conv1d" and any(conv_length(s, n) != n for n in (1, 2, 7, 64)):
                return (
                    f"front[{i}]: a per-frame model (pooling: none) must keep one output per input frame, but this conv1d "
                    f"(kernel {s['kernel']}, stride {s['stride']}, padding {s['padding']}, dilation {s['dilation']}) changes the length; "
                    f"use stride 1 and padding = dilation * (kernel - 1) / 2"
                )
    if spec.between and len(spec.between) != spec.num_layers - 1:
        return f"between holds {len(spec.between)} gaps, but {spec.num_layers} recurrent layers have {spec.num_layers - 1}"
    return None

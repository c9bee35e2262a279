"""A user's trained ``nn.Module`` converted into the family (front-end → recurrent layers → pooling → head).

The structure is read from what the module's ``forward`` does, not from how its attributes are
named: the module runs once on a batch of equal-length sequences with a hook on every layer,
which records the order of the calls and what each layer received and returned. Then

* the calls before the first ``nn.LSTM``/``nn.GRU`` are the front-end, those between two of them
  a gap, those after the last one the pooling and the head;
* whatever ``forward`` does between two layers with plain functions (``F.relu(x)``, a transpose
  for a Conv1d, packing) is found by comparing one layer's output with the next one's input:
  as it is, or one of the activations; anything else is refused, naming the two layers;
* the pooling is found the same way: the head's input is compared with the last recurrent
  layer's outputs taken at the last step (final states, or every direction's output there),
  averaged, maxed, or weighted by an attention projection and score found among the calls.

``model: {front: [...], rnn: [...], head: [...], pooling: ...}`` in a study names the submodules
and the pooling: the names are checked against the module and against what its forward does.
Anything that does not fit gets one line naming the part and why.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoprune.errors import ConfigError
from autoprune.models.arch import ArchSpec, check_arch
from autoprune.models.rnn import RNNClassifier, convert_torch_rnn

__all__ = ["SUPPORTED", "Names", "convert_user_module", "takes_lengths", "call_user", "default_sample"]

log = logging.getLogger(__name__)

SUPPORTED = (
    "supported: a front-end of Embedding, Linear, Conv1d, BatchNorm1d, LayerNorm, activations and Dropout; one or more nn.LSTM "
    "or nn.GRU (any layers, bidirectional, batch_first either way; norms, activations or Dropout between them); pooling over the "
    "true lengths (last step, mean, max, attention) or none (one output per frame); a head of nn.Linear layers with activations, "
    "norms and Dropout between; or an autoprune RNNClassifier"
)
FRONT_KINDS = "Embedding (first), Linear, Conv1d, BatchNorm1d, LayerNorm, an activation or Dropout"

_ACTIVATIONS: Dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "silu": F.silu, "elu": F.elu,
    "leaky_relu": functools.partial(F.leaky_relu, negative_slope=0.01),
}
_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.GELU: "gelu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu", nn.ELU: "elu", nn.LeakyReLU: "leaky_relu"}
_WEIGHTED = (nn.Embedding, nn.Linear, nn.Conv1d, nn.BatchNorm1d, nn.LayerNorm, nn.LSTM, nn.GRU)
_RNNS = (nn.LSTM, nn.GRU)
_PLACES = {
    "front": (nn.Embedding, nn.Linear, nn.Conv1d, nn.BatchNorm1d, nn.LayerNorm, nn.Dropout, nn.Identity, *_ACTIVATION_MODULES),
    "between": (nn.BatchNorm1d, nn.LayerNorm, nn.Dropout, nn.Identity, *_ACTIVATION_MODULES),
    "head": (nn.Linear, nn.BatchNorm1d, nn.LayerNorm, nn.Dropout, nn.Identity, *_ACTIVATION_MODULES),
}
_POOLINGS = ("last", "last_output", "mean", "max")


@dataclass(frozen=True)
class Names:
    """What a study says about the module: the submodules of each part and the pooling (None: found from the module)."""

    front: Optional[Tuple[str, ...]] = None
    rnn: Optional[Tuple[str, ...]] = None
    head: Optional[Tuple[str, ...]] = None
    pooling: Optional[str] = None


@dataclass
class Call:
    """One call of a layer in forward: its input and output in the family's layout (batch first, channels last)."""

    name: str
    module: nn.Module
    inp: Any
    out: Any
    extra: Tuple[Any, ...] = ()  # further positional arguments (an RNN's initial state)


@dataclass
class Part:
    """The layers of one part, as layer dicts, each with the user's module its weights come from (None: found in forward)."""

    layers: List[Dict[str, Any]] = field(default_factory=list)
    sources: List[Optional[nn.Module]] = field(default_factory=list)
    text: List[str] = field(default_factory=list)

    def add(self, spec: Dict[str, Any], source: Optional[nn.Module], text: str) -> None:
        self.layers.append(spec)
        self.sources.append(source)
        self.text.append(text)


# --------------------------------------------------------------------------- calling and tracing


def takes_lengths(module: Any) -> bool:
    """Whether ``module.forward`` takes ``(x, lengths)`` rather than ``(x)``."""
    import inspect

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def call_user(module: Any, x: Tensor, lengths: Tensor) -> Tensor:
    """The user's logits for a batch (its first output when it returns several)."""
    got = module(x, lengths) if takes_lengths(module) else module(x)
    return got[0] if isinstance(got, (tuple, list)) else got


def _batch_first(t: Any, batch_first: bool = True) -> Any:
    if isinstance(t, nn.utils.rnn.PackedSequence):
        return nn.utils.rnn.pad_packed_sequence(t, batch_first=True)[0]
    if isinstance(t, Tensor) and not batch_first:
        return t.transpose(0, 1)
    return t


def _layout(module: nn.Module, args: Tuple[Any, ...], output: Any) -> Tuple[Any, Any, Tuple[Any, ...]]:
    """A call's input and output in the family's layout."""
    inp = args[0] if args else None
    if isinstance(module, _RNNS):
        out = output[0] if isinstance(output, tuple) else output
        return _batch_first(inp, module.batch_first), _batch_first(out, module.batch_first), tuple(args[1:])
    if isinstance(module, nn.Conv1d) or (isinstance(module, nn.BatchNorm1d) and isinstance(inp, Tensor) and inp.dim() == 3):
        return inp.transpose(1, 2), output.transpose(1, 2), ()
    return inp, output, ()


def trace(module: nn.Module, x: Tensor, lengths: Tensor) -> Tuple[List[Call], Tensor]:
    """Run ``module`` once with a hook on every layer; return the calls in order and the logits.

    Raises:
        Exception: whatever the user's forward raises (the caller words it).
    """
    calls: List[Call] = []

    def record(name: str, mod: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        inp, out, extra = _layout(mod, args, output)
        calls.append(Call(name, mod, inp, out, extra))

    handles = [sub.register_forward_hook(functools.partial(record, name)) for name, sub in module.named_modules() if name and not list(sub.children())]
    try:
        with torch.no_grad():
            out = call_user(module, x, lengths)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def default_sample(module: nn.Module, batch: int = 4, steps: int = 6) -> Tuple[Tensor, Tensor]:
    """A batch of equal-length random inputs the module's first layer takes (when no data is given)."""
    torch.manual_seed(0)
    first = next((m for m in module.modules() if isinstance(m, _WEIGHTED)), None)
    lengths = torch.full((batch,), steps, dtype=torch.long)
    if isinstance(first, nn.Embedding):
        return torch.randint(0, first.num_embeddings, (batch, steps)), lengths
    width = {nn.Linear: "in_features", nn.Conv1d: "in_channels", nn.LSTM: "input_size", nn.GRU: "input_size"}
    size = next((getattr(first, attr) for cls, attr in width.items() if isinstance(first, cls)), None)
    if size is None:
        size = getattr(first, "num_features", None) or int(first.normalized_shape[-1])
    return torch.randn(batch, steps, size), lengths


# --------------------------------------------------------------------------- checks before running


def _label(name: str, module: nn.Module) -> str:
    return f"'{name}' ({type(module).__name__})" if name else f"parameters of {type(module).__name__} itself"


def check_static(module: nn.Module, names: Names, where: str) -> None:
    """What can be refused without running the module: named submodules that do not exist or are not what
    their part allows, recurrent layers autoprune cannot hold (``proj_size``, no bias), no recurrent layer at all.

    Raises:
        ConfigError: one line naming the part (or the ``model.<key>``) and why.
    """
    subs = dict(module.named_modules())
    weighted = [n for n, m in subs.items() if n and any(True for _ in m.parameters(recurse=False))]
    for key, place in (("front", "front"), ("rnn", None), ("head", "head")):
        for name in getattr(names, key) or ():
            if name not in subs or not name:
                raise ConfigError(f"{where}: model.{key}: no submodule {name!r} in {type(module).__name__}; its submodules with weights: {', '.join(weighted) or 'none'}")
            sub = subs[name]
            if place is None and not isinstance(sub, _RNNS):
                raise ConfigError(f"{where}: model.rnn: {_label(name, sub)} is not an nn.LSTM or nn.GRU")
            if place == "front" and not isinstance(sub, _PLACES["front"]):
                raise ConfigError(f"{where}: model.front: front-end layer {_label(name, sub)} is not supported: a front-end layer is {FRONT_KINDS}")
            if place == "head" and not isinstance(sub, _PLACES["head"]):
                raise ConfigError(f"{where}: model.head: head layer {_label(name, sub)} is not supported: a head layer is an nn.Linear, a norm, an activation or Dropout")
    rnns = [(n, m) for n, m in subs.items() if isinstance(m, (nn.RNNBase,))]
    for name, rnn in rnns:
        if not isinstance(rnn, _RNNS):
            raise ConfigError(f"{where}: recurrent layer {_label(name, rnn)} is not supported: autoprune holds nn.LSTM and nn.GRU; {SUPPORTED}")
        if getattr(rnn, "proj_size", 0):
            raise ConfigError(
                f"{where}: nn.LSTM {name!r} has proj_size={rnn.proj_size}: LSTM(proj_size) is not supported (autoprune's LSTM layers have no "
                "projection); train it without proj_size"
            )
        if not rnn.bias:
            raise ConfigError(f"{where}: {type(rnn).__name__}(bias=False) {name!r} is not supported: autoprune's layers carry biases")
    if not rnns:
        raise ConfigError(f"{where}: {type(module).__name__} needs at least one nn.LSTM or nn.GRU, found none; {SUPPORTED}")
    order = list(subs)
    first = order.index(rnns[0][0])
    for i, (name, sub) in enumerate(subs.items()):
        if any(True for _ in sub.parameters(recurse=False)) and not isinstance(sub, _WEIGHTED):
            if i < first:  # defined before the recurrent layers: read as the front-end
                raise ConfigError(f"{where}: front-end layer {_label(name, sub)} is not supported: a front-end layer is {FRONT_KINDS}")
            raise ConfigError(f"{where}: unsupported module {_label(name, sub)} in {type(module).__name__}; {SUPPORTED}")


def diagnose_failed_call(module: nn.Module, where: str, err: Exception, channels: Optional[int] = None, task: str = "the task") -> ConfigError:
    """The one line for a module whose forward failed on the task's data: a mismatch seen from its layers
    (in the order they are defined) when there is one, else what forward raised."""
    layers = [(n, m) for n, m in module.named_modules() if n and isinstance(m, _WEIGHTED)]
    first = layers[0][1] if layers else None
    takes = {nn.Linear: "in_features", nn.Conv1d: "in_channels", nn.LSTM: "input_size", nn.GRU: "input_size"}
    width = next((getattr(first, a) for cls, a in takes.items() if isinstance(first, cls)), None)
    if channels is not None and width is not None and width != channels:
        return ConfigError(f"{where}: the model takes {width} input channels but {task} has {channels}")
    last_rnn = max((i for i, (_, m) in enumerate(layers) if isinstance(m, _RNNS)), default=None)
    if last_rnn is not None:
        name, rnn = layers[last_rnn]
        out = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        head = next(((n, m) for n, m in layers[last_rnn + 1 :] if isinstance(m, nn.Linear)), None)
        if head is not None and head[1].in_features != out and head[1].out_features != 1:
            n, lin = head
            return ConfigError(
                f"{where}: the head's first layer '{n}' (Linear {lin.in_features}->{lin.out_features}) does not take the {out} features "
                f"recurrent layer '{name}' gives; {SUPPORTED}"
            )
    detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
    return ConfigError(f"{where}: calling {type(module).__name__} on a batch of the task's test sequences raised {detail}")


# --------------------------------------------------------------------------- what lies between two layers


def _same(a: Any, b: Any) -> bool:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        return False
    if not a.is_floating_point() or not b.is_floating_point():
        return torch.equal(a, b)
    return bool(torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5))


def glue(a: Any, b: Any) -> Optional[str]:
    """What forward does to ``a`` (one layer's output) to make ``b`` (the next one's input): ``identity``, an activation, or None."""
    if _same(a, b):
        return "identity"
    if isinstance(a, Tensor) and a.is_floating_point():
        for kind, fn in _ACTIVATIONS.items():
            if _same(fn(a), b):
                return kind
    return None


def _glue_or_fail(a: Any, b: Any, before: str, after: str, where: str) -> Optional[str]:
    kind = glue(a, b)
    if kind is None:
        raise ConfigError(
            f"{where}: cannot tell what your forward does between {before} and {after}: it is not the output as it is nor one of "
            f"{', '.join(_ACTIVATIONS)}; make it a layer of the module, or keep to {SUPPORTED}"
        )
    return None if kind == "identity" else kind


# --------------------------------------------------------------------------- layers as the family's layer dicts


def layer_spec(module: nn.Module, name: str, where: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """A user's layer as a layer dict (None for an Identity) and how the mapping shows it.

    Raises:
        ConfigError: a layer the family cannot hold as it is (a grouped or non-zero-padded Conv1d, a BatchNorm1d
            without running statistics, a LayerNorm over more than the features).
    """
    kind = _ACTIVATION_MODULES.get(type(module))
    if kind is not None:
        slope = {"slope": float(module.negative_slope)} if kind == "leaky_relu" else {}
        return {"kind": kind, **slope}, f"{name} ({kind})"
    if isinstance(module, nn.Identity):
        return None, name
    if isinstance(module, nn.Dropout):
        return {"kind": "dropout", "p": float(module.p)}, f"{name} (Dropout {module.p:g})"
    if isinstance(module, nn.Embedding):
        return {"kind": "embedding", "dim": module.embedding_dim, "padding_idx": module.padding_idx}, f"{name} (Embedding {module.num_embeddings}x{module.embedding_dim})"
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "out": module.out_features, "bias": module.bias is not None}, f"{name} (Linear {module.in_features}->{module.out_features})"
    if isinstance(module, nn.Conv1d):
        pad = module.padding
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(pad, str) or len(set(pad)) != 1:
            raise ConfigError(f"{where}: Conv1d {name!r} is not supported as it is: autoprune's Conv1d has groups=1 and zero padding given as a number")
        spec = {"kind": "conv1d", "out": module.out_channels, "kernel": module.kernel_size[0], "stride": module.stride[0],
                "padding": pad[0], "dilation": module.dilation[0], "bias": module.bias is not None}
        return spec, f"{name} (Conv1d {module.in_channels}->{module.out_channels}, kernel {module.kernel_size[0]}, stride {module.stride[0]})"
    if isinstance(module, nn.BatchNorm1d):
        if not module.track_running_stats:
            raise ConfigError(f"{where}: BatchNorm1d {name!r} keeps no running statistics (it normalises each batch by itself): not supported")
        return {"kind": "batchnorm", "eps": float(module.eps), "momentum": float(module.momentum or 0.1)}, f"{name} (BatchNorm1d)"
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ConfigError(f"{where}: LayerNorm {name!r} normalises over {tuple(module.normalized_shape)}: autoprune's normalises the features only")
        return {"kind": "layernorm", "eps": float(module.eps), "zeros": 0}, f"{name} (LayerNorm)"
    raise ConfigError(f"{where}: unsupported module {_label(name, module)}; {SUPPORTED}")


def _weights_into(target: nn.Module, source: nn.Module) -> None:
    """Copy a user's layer into the family's (a norm without affine parameters: weight 1, bias 0)."""
    state = dict(source.state_dict())
    own = target.state_dict()
    for key in ("weight", "bias"):
        if key in own and key not in state:
            state[key] = torch.ones_like(own[key]) if key == "weight" else torch.zeros_like(own[key])
    target.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in own})


def _chain(calls: Sequence[Call], start: Any, before: str, part: Part, place: str, where: str) -> Tuple[Any, str]:
    """Walk the calls of one part from ``start`` (what reaches the first of them), adding their layers and the
    activations forward applies between them to ``part``; returns the last output and its name."""
    prev, prev_name = start, before
    for c in calls:
        if not isinstance(c.module, _PLACES[place]):
            words = {"front": f"front-end layer {_label(c.name, c.module)} is not supported: a front-end layer is {FRONT_KINDS}",
                     "between": f"layer {_label(c.name, c.module)} between the recurrent layers is not supported: only norms, activations and Dropout",
                     "head": f"head layer {_label(c.name, c.module)} is not supported: a head layer is an nn.Linear, a norm, an activation or Dropout"}
            raise ConfigError(f"{where}: {words[place]}")
        kind = _glue_or_fail(prev, c.inp, prev_name, f"'{c.name}'", where)
        if kind:
            part.add({"kind": kind}, None, f"{kind} (in forward)")
        spec, text = layer_spec(c.module, c.name, where)
        if spec is not None:
            part.add(spec, c.module if isinstance(c.module, _WEIGHTED) else None, text)
        prev, prev_name = c.out, f"'{c.name}'"
    return prev, prev_name


# --------------------------------------------------------------------------- the parts of the module


def _roles(calls: List[Call], names: Names, where: str) -> Tuple[List[Call], List[List[Call]], List[Call], List[Call]]:
    """Split the calls into the front-end, the gaps between recurrent layers, the recurrent layers and what follows."""
    seen = Counter(id(c.module) for c in calls if isinstance(c.module, _WEIGHTED))
    for c in calls:
        if seen[id(c.module)] > 1:
            raise ConfigError(f"{where}: '{c.name}' is called {seen[id(c.module)]} times in forward: autoprune needs each layer once (no shared weights)")
    idx = [i for i, c in enumerate(calls) if isinstance(c.module, _RNNS)]
    if not idx:
        raise ConfigError(f"{where}: forward never calls an nn.LSTM or nn.GRU; {SUPPORTED}")
    rnn_calls = [calls[i] for i in idx]
    front, after = calls[: idx[0]], calls[idx[-1] + 1 :]
    gaps = [calls[a + 1 : b] for a, b in zip(idx, idx[1:])]
    weighted = lambda part: [c.name for c in part if isinstance(c.module, _WEIGHTED)]  # noqa: E731
    for key, found in (("rnn", [c.name for c in rnn_calls]), ("front", weighted(front))):
        given = getattr(names, key)
        if given is not None and list(given) != found:
            raise ConfigError(f"{where}: model.{key} names {list(given)}, but forward calls {found or 'none'} there, in that order")
    if names.head is not None:
        extra = [n for n in names.head if n not in weighted(after)]
        if extra:
            raise ConfigError(f"{where}: model.head names {extra}, but forward does not call them after the recurrent layers")
    for c in rnn_calls:
        state = c.extra[0] if c.extra else None
        states = state if isinstance(state, tuple) else (state,)
        if any(isinstance(s, Tensor) and bool(s.abs().sum() > 0) for s in states):
            raise ConfigError(f"{where}: forward gives '{c.name}' an initial state: autoprune's recurrent layers start from zeros")
    return front, gaps, rnn_calls, after


def _pool(h: Tensor, kind: str, fwd: int) -> Tensor:
    """A pooling of equal-length outputs ``h [B, T, D]`` (``fwd``: the forward direction's width)."""
    if kind == "last":
        return torch.cat([h[:, -1, :fwd], h[:, 0, fwd:]], dim=1) if h.size(2) > fwd else h[:, -1]
    if kind == "last_output":
        return h[:, -1]
    if kind == "mean":
        return h.mean(1)
    return h.max(1)[0]


def _attention(after: List[Call], h: Tensor) -> Optional[Tuple[Call, Call, Tensor, List[Call]]]:
    """An attention pooling among the calls after the recurrent layers: a Linear reading their outputs as they are,
    a Linear with one output reading tanh of it. Returns (projection, score, pooled, the calls that belong to it)."""
    proj = next((c for c in after if isinstance(c.module, nn.Linear) and _same(c.inp, h)), None)
    score = None if proj is None else next(
        (c for c in after if isinstance(c.module, nn.Linear) and c.module.out_features == 1 and _same(torch.tanh(proj.out), c.inp)), None
    )
    if proj is None or score is None:
        return None
    a, b = after.index(proj), after.index(score)
    weights = torch.softmax(score.out.squeeze(2), dim=1)  # the score's bias adds the same to every step: softmax ignores it
    return proj, score, (weights.unsqueeze(2) * h).sum(1), after[a : b + 1]


def _pooling(after: List[Call], h: Tensor, fwd: int, names: Names, where: str) -> Tuple[str, Tensor, List[Call], Optional[Tuple[Call, Call]]]:
    """How forward pools the last recurrent outputs: (pooling, pooled features, the head's calls, attention layers)."""
    attention = _attention(after, h)
    head = [c for c in after if attention is None or c not in attention[3]]
    if not head:
        raise ConfigError(f"{where}: forward calls no nn.Linear head after the recurrent layers; {SUPPORTED}")
    z = head[0].inp
    candidates: List[Tuple[str, Tensor]] = []
    if attention is not None:
        candidates.append(("attention", attention[2]))
    if isinstance(z, Tensor) and z.dim() == 3:
        candidates.append(("none", h))
    candidates += [(kind, _pool(h, kind, fwd)) for kind in _POOLINGS]
    if names.pooling is not None:
        candidates = [(k, p) for k, p in candidates if k == names.pooling]
    for kind, pooled in candidates:
        if glue(pooled, z) is not None:
            if kind == "last_output" and h.size(2) > fwd:
                log.warning(
                    "%s: your model reads the backward direction at the last valid step, where it has seen that step only; "
                    "autoprune keeps it so (pooling: last_output); the final states (pooling: last) see the whole sequence", where,
                )
            return kind, pooled, head, (attention[0], attention[1]) if kind == "attention" and attention else None
    asked = f"pooling {names.pooling!r}" if names.pooling else "the last step (final states or outputs), mean, max, attention or none (per frame)"
    raise ConfigError(
        f"{where}: the input of '{head[0].name}' is not the recurrent outputs pooled by {asked} over the true lengths; "
        f"for a bidirectional model the backward direction's final state is its output at step 0 (h_n), not at the last valid step; {SUPPORTED}"
    )


# --------------------------------------------------------------------------- the converted model


def _recurrent(rnn_calls: List[Call], gaps: List[Part], where: str) -> Tuple[str, List[List[int]], List[List[Dict[str, Any]]], float]:
    """Cell, hidden sizes, the gaps between layers (explicit when there are several modules) and the dropout."""
    modules = [c.module for c in rnn_calls]
    cells = {type(m) for m in modules}
    if len(cells) > 1:
        raise ConfigError(f"{where}: forward mixes nn.LSTM and nn.GRU ({', '.join(c.name for c in rnn_calls)}): autoprune's recurrent layers share one cell")
    if len({m.bidirectional for m in modules}) > 1:
        raise ConfigError(f"{where}: the recurrent layers {', '.join(c.name for c in rnn_calls)} differ in directions: autoprune's all have the same number")
    hidden = [[m.hidden_size] * (2 if m.bidirectional else 1) for m in modules for _ in range(m.num_layers)]
    if len(modules) == 1:
        return ("lstm" if isinstance(modules[0], nn.LSTM) else "gru"), hidden, [], float(modules[0].dropout)
    between: List[List[Dict[str, Any]]] = []
    for k, m in enumerate(modules):
        between += [[{"kind": "dropout", "p": float(m.dropout)}] if m.dropout else [] for _ in range(m.num_layers - 1)]
        if k < len(modules) - 1:
            between.append(list(gaps[k].layers))
    return ("lstm" if isinstance(modules[0], nn.LSTM) else "gru"), hidden, between, 0.0


def _load(model: RNNClassifier, front: Part, rnn_calls: List[Call], gaps: List[Part], head: Part, attention: Optional[Tuple[Call, Call]]) -> None:
    """Copy the user's weights into the family's model."""
    for i, src in enumerate(front.sources):
        if src is not None:
            _weights_into(model.front[i], src)
    layer = 0
    for k, c in enumerate(rnn_calls):
        stack = convert_torch_rnn(c.module)
        for j in range(c.module.num_layers):
            model.rnn[layer + j].load_state_dict(stack[j].state_dict())
        layer += c.module.num_layers
        if k < len(gaps):
            for i, src in enumerate(gaps[k].sources):
                if src is not None:
                    _weights_into(model.between[layer][i], src)  # the gap before recurrent layer `layer`
    if attention is not None:
        _weights_into(model.attn_proj, attention[0].module)
        model.attn_score.weight.data.copy_(attention[1].module.weight.data.float())
    for i, src in enumerate(head.sources[:-1]):
        if src is not None:
            _weights_into(model.head_layers[i], src)
    _weights_into(model.head, head.sources[-1])


def _convert(module: nn.Module, x: Tensor, lengths: Tensor, names: Names, where: str) -> Tuple[RNNClassifier, str]:
    calls, output = trace(module, x, lengths)
    front_calls, gap_calls, rnn_calls, after = _roles(calls, names, where)
    front, gaps = Part(), [Part() for _ in gap_calls]
    prev, prev_name = _chain(front_calls, x, "the input", front, "front", where)
    for k, c in enumerate(rnn_calls):
        if k > 0:
            prev, prev_name = _chain(gap_calls[k - 1], prev, prev_name, gaps[k - 1], "between", where)
        kind = _glue_or_fail(prev, c.inp, prev_name, f"'{c.name}'", where)
        if kind:
            (front if k == 0 else gaps[k - 1]).add({"kind": kind}, None, f"{kind} (in forward)")
        prev, prev_name = c.out, f"'{c.name}'"
    last = rnn_calls[-1].module
    pooling, pooled, head_calls, attention = _pooling(after, prev, last.hidden_size, names, where)
    head = Part()
    out, out_name = _chain(head_calls, pooled, "the pooling", head, "head", where)
    if not head.layers or head.layers[-1]["kind"] != "linear" or not _same(out, output):
        raise ConfigError(f"{where}: the model's output is not the output of its last nn.Linear ({out_name}): forward changes it after that layer; {SUPPORTED}")
    cell, hidden, between, dropout = _recurrent(rnn_calls, gaps, where)
    first = front.layers[0] if front.layers else None
    input_size = rnn_calls[0].module.input_size if first is None else (front.sources[0].num_embeddings if first["kind"] == "embedding" else int(x.size(-1)))
    final = head.sources[-1]
    spec = ArchSpec(cell, int(input_size), hidden, final.out_features, pooling, attention[0].module.out_features if attention else 32, dropout,
                    front.layers, between, head.layers[:-1])
    problem = check_arch(spec)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    model = RNNClassifier(spec)
    _load(model, front, rnn_calls, gaps, head, attention)
    rnn_text = ", ".join(f"{c.name} ({type(c.module).__name__} {c.module.input_size}->{c.module.hidden_size}"
                         f"{f' x{c.module.num_layers}' if c.module.num_layers > 1 else ''}{', bidirectional' if c.module.bidirectional else ''})"
                         for c in rnn_calls)
    attn_text = f" ({attention[0].name}, {attention[1].name})" if attention else ""
    mapping = (f"front-end: {', '.join(front.text) or 'none'}; recurrent: {rnn_text}"
               + "".join(f"; between: {', '.join(g.text)}" for g in gaps if g.text)
               + f"; pooling: {pooling}{attn_text}; head: {', '.join(head.text)}")
    return model.eval(), mapping


def convert_user_module(module: Any, where: str = "model", sample: Optional[Tuple[Tensor, Tensor]] = None, names: Names = Names()) -> RNNClassifier:
    """Convert a supported module into an :class:`RNNClassifier` (see the module docstring); logs the mapping.

    Args:
        module: the user's trained module (an autoprune RNNClassifier is copied as it is).
        where: the start of every message (the study file and key).
        sample: ``(x, lengths)``, a batch of equal-length sequences of the task (default: random inputs its first layer takes).
        names: what the study says about the parts.

    Raises:
        ConfigError: one line naming the part that does not fit and why.
    """
    return convert_with_mapping(module, where, sample, names)[0]


def convert_with_mapping(module: Any, where: str = "model", sample: Optional[Tuple[Tensor, Tensor]] = None, names: Names = Names(),
                         channels: Optional[int] = None, task: str = "the task") -> Tuple[RNNClassifier, str]:
    """:func:`convert_user_module`, and the mapping it found as one line (front-end, recurrent, pooling, head);
    ``channels`` and ``task`` word the message when the module's forward fails on the task's data."""
    if isinstance(module, RNNClassifier):
        return copy.deepcopy(module).eval(), "an autoprune RNNClassifier, as it is"
    check_static(module, names, where)
    module = as_float32(module, where)
    x, lengths = sample if sample is not None else default_sample(module)
    try:
        model, mapping = _convert(module.eval(), x, lengths, names, where)
    except ConfigError:
        raise
    except Exception as err:  # the user's forward failed on the sample: say what does not fit, if a layer shows it
        raise diagnose_failed_call(module, where, err, channels, task) from err
    log.info("%s: your model as autoprune reads it: %s", where, mapping)
    return model, mapping


def as_float32(module: nn.Module, where: str) -> nn.Module:
    """The module with float32 weights: itself, or a float32 copy of a float64 module.

    Raises:
        ConfigError: weights of another type (float16, bfloat16, ...).
    """
    dtypes = {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers() if b.is_floating_point()}
    if dtypes <= {torch.float32}:
        return module
    if dtypes <= {torch.float32, torch.float64}:
        log.info("%s: your model's weights are float64: converted to float32 (its logits are checked against the float64 model's)", where)
        return copy.deepcopy(module).float()
    kinds = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes - {torch.float32}))
    raise ConfigError(f"{where}: your model's weights are {kinds}: autoprune converts float32 and float64 models; call .float() on it first")

"""Size first: from a sampled model size and a way to spend it to the sparsities of a policy.

A trial of the search first samples how big the model will be, its fraction of the dense
model's float32 bytes (log-uniform), then how to spend that budget:

* ``structure`` (0..1): where on the line of models of that size the trial lies, from 1 (only
  hidden units removed: the narrowest dense model that fits, fastest; if the units range cannot
  reach the size, as small as it gets) to 0 (the widest model
  the single-weight sparsity range can bring to that size); the keep ratio of the units is
  interpolated geometrically between the two, and the weight density solved for the rest;
* per layer, a log2 multiplier of the units it keeps (``units.rnn.<l>``) and so of its
  weight density: layers are not all equally prunable;
* ``ih_vs_hh``: the log2 ratio of input-to-hidden to hidden-to-hidden weight density, on top of
  each matrix's Erdős–Rényi scale (RigL's ERK: a matrix with few inputs or outputs stays denser);
* the precision (float32 or int8).

:func:`solve` turns these into hidden sizes and per-matrix weight sparsities that land on the
sampled size by construction, as AMC clamps each layer's ratio so that the budget stays
reachable: the widths come from one keep ratio (binary search) scaled by the layer
multipliers and clamped into ``search.sparsity.units``; the weight densities from one
density (binary search) scaled by the balance and clamped into ``search.sparsity.range``;
sizes are computed with the same encoding rule as every reported size (dense, bitmask or
CSR; int8 with its scales), on a model built on the meta device (no memory, no random draws).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from autoprune.models.arch import ArchSpec, layer_name
from autoprune.models.rnn import RNNClassifier
from autoprune.runtime.measure import dense_size_bytes, encoded_bytes
from autoprune.runtime.quantize import int8_matrix_bytes, int8_params

__all__ = ["Allocation", "Limits", "Plan", "solve", "planned_bytes"]

_BISECT_STEPS = 40


@dataclass(frozen=True)
class Allocation:
    """How a sampled size is spent (see the module docstring)."""

    size: float  # fraction of dense float32 bytes
    structure: float = 1.0  # share of the log compression from hidden units (0: single weights only)
    layer_log2: Tuple[float, ...] = ()  # per recurrent layer, log2 multiplier of its keep ratio (empty: all 0)
    ih_vs_hh: float = 0.0  # log2 of ih density / hh density
    precision: str = "none"  # none | int8


@dataclass(frozen=True)
class Limits:
    """What the space allows: fraction of units removed per layer, weight sparsity per matrix, and the runtime (int8 scales)."""

    units: Tuple[float, float] = (0.0, 0.95)
    weights: Tuple[float, float] = (0.0, 0.99)
    ih: Optional[Tuple[float, float]] = None
    hh: Optional[Tuple[float, float]] = None
    head: Optional[Tuple[float, float]] = None  # None: the head stays dense
    runtime: str = "torch"
    prune_units: bool = True  # the method and granularities allow removing hidden units
    prune_weights: bool = True  # ... and pruning single weights


@dataclass(frozen=True)
class Plan:
    """The solved allocation: hidden sizes, the unit fractions and weight sparsities that make them, and the planned bytes."""

    hidden_sizes: List[List[int]]
    unit_fractions: Dict[str, float]  # layer name -> fraction of its units removed (only those > 0)
    weight_sparsity: Dict[str, float]  # matrix name (rnn.<l>.ih | rnn.<l>.hh | head) -> fraction of its weights pruned (> 0)
    bytes: int
    target_bytes: int


def _clamped_density(density: float, limits: Tuple[float, float]) -> float:
    """A weight density within a sparsity range ``(lo, hi)``: at most ``hi`` pruned, and, once any weight is, at least ``lo``."""
    lo, hi = limits
    density = min(1.0, max(1.0 - hi, density))
    return min(density, 1.0 - lo) if density < 1.0 else 1.0


def _densities(arch: ArchSpec, d: float, alloc: Allocation, limits: Limits) -> Dict[str, float]:
    """Per matrix (both directions of a layer share one), its weight density for the global density ``d``:
    ``d`` scaled by the matrix's Erdős–Rényi factor (:func:`_erk`), its layer's multiplier and the ih / hh balance."""
    out: Dict[str, float] = {}
    erk = _erk(arch)
    for l in range(arch.num_layers):
        layer_mult = 2.0 ** _layer_log2(alloc, l)
        for kind, sign in (("ih", 0.5), ("hh", -0.5)):
            name = f"rnn.{l}.{kind}"
            out[name] = _clamped_density(d * erk[name] * layer_mult * 2.0 ** (sign * alloc.ih_vs_hh), getattr(limits, kind) or limits.weights)
    if limits.head is not None:
        out["head"] = _clamped_density(d, limits.head)
    return out


_ERK: Dict[str, Dict[str, float]] = {}


def _erk(arch: ArchSpec) -> Dict[str, float]:
    """Per recurrent matrix, the Erdős–Rényi density scale ``(rows + cols) / (rows * cols)`` of RigL (Evci et al.,
    2020), relative to its mean over the weights (cached per architecture). A matrix with few inputs keeps more of
    them: pruning layer 0's input weights of a one-feature series to the density of a 64 x 192 recurrent matrix cut
    most units off the input (MNIST-1D at 2 % of dense bytes, a quarter of the compression from single weights:
    test accuracy 0.09, every trial of that shape collapsed), while those weights are under 1 % of the bytes."""
    key = arch.signature()
    if key not in _ERK:
        scale: Dict[str, float] = {}
        numel: Dict[str, int] = {}
        for matrix, n, rows, dims, _ in _shapes(arch, "torch"):
            if matrix is None or not matrix.startswith("rnn.") or dims != 2:
                continue
            scale[matrix] = (rows + n // rows) / n
            numel[matrix] = numel.get(matrix, 0) + n
        mean = sum(scale[m] * numel[m] for m in scale) / sum(numel.values())
        _ERK[key] = {m: v / mean for m, v in scale.items()}
    return _ERK[key]


def _layer_log2(alloc: Allocation, layer: int) -> float:
    return alloc.layer_log2[layer] if layer < len(alloc.layer_log2) else 0.0


def _matrix_of(name: str) -> Optional[str]:
    """``rnn.<l>.dirs.<d>.weight_<ih|hh>_l0`` -> ``rnn.<l>.<ih|hh>``; ``head.weight`` -> ``head``; else None."""
    parts = name.split(".")
    if parts[0] == "rnn" and parts[-1].startswith("weight_"):
        return f"rnn.{parts[1]}.{parts[-1][len('weight_'):-len('_l0')]}"
    if name == "head.weight":
        return "head"
    return None


_SHAPES: Dict[Tuple[str, str], List[Tuple[Optional[str], int, int, int, bool]]] = {}


def _shapes(arch: ArchSpec, runtime: str) -> List[Tuple[Optional[str], int, int, int, bool]]:
    """(matrix name or None, numel, rows, dims, stored in int8 by ``runtime`` when quantized) of each parameter of ``arch``,
    from a model on the meta device (cached)."""
    key = (arch.signature(), runtime)
    if key not in _SHAPES:
        with torch.device("meta"):
            model = RNNClassifier(arch)
        int8 = int8_params(model, runtime)
        _SHAPES[key] = [(_matrix_of(name), p.numel(), p.shape[0] if p.dim() > 1 else 1, p.dim(), name in int8) for name, p in model.named_parameters()]
    return _SHAPES[key]


def planned_bytes(arch: ArchSpec, hidden_sizes: Sequence[Sequence[int]], densities: Dict[str, float], precision: str, runtime: str) -> int:
    """Bytes of ``arch`` with ``hidden_sizes`` and these weight densities (as pruning leaves them), at ``precision``,
    by the rule every reported size follows: what a trial of this plan will measure."""
    total = 0
    for matrix, numel, rows, _, int8 in _shapes(arch.with_hidden_sizes([list(h) for h in hidden_sizes]), runtime):
        density = densities.get(matrix or "", 1.0)
        nnz = numel - int(round((1.0 - density) * numel))
        if precision == "int8" and int8:
            total += int8_matrix_bytes(numel, nnz, rows, runtime)
        else:
            total += encoded_bytes(numel, nnz, rows)
    return total


def _widths(arch: ArchSpec, keep: float, alloc: Allocation, limits: Limits) -> List[List[int]]:
    """Hidden sizes for the keep ratio ``keep`` scaled by each layer's multiplier: at least one unit, at most
    ``units[1]`` of a layer's units removed, and, once any is, at least ``units[0]`` of them."""
    lo, hi = limits.units
    out = []
    for l, sizes in enumerate(arch.hidden_sizes):
        row = []
        for h in sizes:
            w = min(h, max(1, int(round(keep * 2.0 ** _layer_log2(alloc, l) * h))))
            w = max(w, h - int(math.floor(hi * h + 1e-9)))  # at most hi removed
            if w < h:
                w = min(w, h - int(math.ceil(lo * h - 1e-9)))  # removing any: at least lo
            row.append(max(1, w))
        out.append(row)
    return out


def _largest(fits, lo: float = 0.0, hi: float = 1.0) -> float:
    """The largest x in [lo, hi] with fits(x), fits monotone (True below some point); lo when none."""
    if fits(hi):
        return hi
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def solve(arch: ArchSpec, alloc: Allocation, limits: Limits) -> Plan:
    """Hidden sizes and weight sparsities of ``arch`` that spend ``alloc`` (see the module docstring).

    The plan's bytes are at most the target whenever the limits allow it; otherwise the smallest the
    limits allow (:func:`smallest_fraction` tells the space's lowest reachable size).
    """
    dense = arch.hidden_sizes
    target = int(math.floor(alloc.size * dense_size_bytes(_params(arch)) + 1e-6))  # a size given as bytes / total lands on those bytes

    def bytes_of(widths: List[List[int]], densities: Dict[str, float]) -> int:
        return planned_bytes(arch, widths, densities, alloc.precision, limits.runtime)

    top = 2.0 ** max([0.0, *(-m for m in alloc.layer_log2)])  # a keep ratio at which every layer keeps all its units

    def keep_for(densities_at: Callable[[float], Dict[str, float]]) -> float:
        """The largest keep ratio whose widths fit the target with these weight densities."""
        return _largest(lambda k: bytes_of(_widths(arch, k, alloc, limits), densities_at(k)) <= target, 1e-3, top)

    sparsest = _densities(arch, 0.0, alloc, limits) if limits.prune_weights else {}
    if limits.prune_units:
        k_units = keep_for(lambda k: {})  # units alone
        k_weights = keep_for(lambda k: sparsest)  # the widest model the weights can bring to the target
        structure = alloc.structure if limits.prune_weights else 1.0
        keep = math.exp(structure * math.log(k_units) + (1.0 - structure) * math.log(max(k_weights, k_units)))
        widths = _widths(arch, keep, alloc, limits)
    else:
        widths = [list(s) for s in dense]
    densities: Dict[str, float] = {}
    units_only = limits.prune_units and (alloc.structure >= 1.0 or not limits.prune_weights)  # 1: the narrowest dense model, however close it gets
    if limits.prune_weights and not units_only and bytes_of(widths, {}) > target:
        d = _largest(lambda x: bytes_of(widths, _densities(arch, x, alloc, limits)) <= target, 0.0, 1.0)
        densities = _densities(arch, d, alloc, limits)
    if limits.prune_units and not units_only and bytes_of(widths, densities) > target:
        widths = _widths(arch, keep_for(lambda k: densities), alloc, limits)  # the weights cannot go further: more units go
    fractions = {}
    names = arch.layer_names()
    for name, (l, d_) in names.items():
        h, w = dense[l][d_], widths[l][d_]
        if w < h:
            fractions[name] = 1.0 - w / h
    sparsity = _readable({m: 1.0 - v for m, v in densities.items() if v < 1.0}, lambda sp: bytes_of(widths, {m: 1.0 - v for m, v in sp.items()}) <= target)
    return Plan(widths, fractions, {m: s for m, s in sparsity.items() if s > 0}, bytes_of(widths, {m: 1.0 - v for m, v in sparsity.items()}), target)


def _readable(sparsity: Dict[str, float], fits: Callable[[Dict[str, float]], bool]) -> Dict[str, float]:
    """The sparsities with the fewest decimals that still fit the size: a search for 0.8 shows 0.8, not 0.7995
    (rounded, or rounded up: a little sparser); the exact values when no rounding fits."""
    for digits in (3, 4, 5, 6):
        scale = 10**digits
        for candidate in ({m: round(v, digits) for m, v in sparsity.items()}, {m: math.ceil(v * scale - 1e-6) / scale for m, v in sparsity.items()}):
            if all(0.0 <= c < 1.0 for c in candidate.values()) and fits(candidate):
                return candidate
    return sparsity


def _params(arch: ArchSpec) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in RNNClassifier(arch).parameters())


def smallest_fraction(arch: ArchSpec, limits: Limits, precisions: Sequence[str], structure: bool, weights: bool) -> float:
    """The smallest fraction of dense bytes the limits reach (every unit and weight the limits allow removed, the
    smallest precision): the lowest size the space can target."""
    alloc = Allocation(size=0.0, structure=1.0 if structure else 0.0)
    widths = _widths(arch, 0.0, alloc, limits) if structure else [list(s) for s in arch.hidden_sizes]
    densities = _densities(arch, 0.0, alloc, limits) if weights else {}
    best = min(planned_bytes(arch, widths, densities, p, limits.runtime) for p in precisions)
    return best / dense_size_bytes(_params(arch))


def layer_keys(arch: ArchSpec) -> List[str]:
    """The names of the layer multipliers a space samples (``units.rnn.<l>``), one per recurrent layer."""
    return [f"units.rnn.{l}" for l in range(arch.num_layers)]


def unit_fractions_by_name(arch: ArchSpec, fractions: Dict[str, float]) -> Dict[str, float]:
    """A plan's unit fractions keyed as a policy names them (``rnn.<l>`` for both directions of a layer)."""
    out: Dict[str, float] = {}
    for name, (l, d) in arch.layer_names().items():
        if name in fractions:
            out[layer_name(l, 0, False) if arch.bidirectional else name] = fractions[name]
    return out

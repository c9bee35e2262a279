"""The declarative search space (``search:`` in the study YAML) → sampler suggestions → PruningPolicy.

Parameter names are the readable policy names (``sparsity.rnn.0.hh``, ``method``,
``schedule.kind``, ``grad_clip.value`` ...), so Optuna's trial params, MLflow params
and the model card all speak the same language.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from autoprune.config import SearchConfig, StudyConfig
from autoprune.models.arch import GATES, ArchSpec, layer_name, units_kept
from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.methods import METHODS
from autoprune.pruning.policy import FinetuneConfig, PruningPolicy, policy_from_dict

__all__ = ["SearchSpace", "UNIT_SIZE_TARGETS", "sparsity_groups", "unit_fractions_for_sizes", "warm_start_recovery", "with_units_removed"]

#: sizes (fraction of the dense parameters) the warm start's uniform hidden-unit trials land on:
#: the levels users report (and ``benchmarks/search_quality`` measures at 10 / 5 / 2 %)
UNIT_SIZE_TARGETS = (0.25, 0.10, 0.05, 0.02, 0.01)

def sparsity_groups(arch: ArchSpec, grouping: str, granularity: str) -> Dict[str, Tuple[str, List[str]]]:
    """Searched sparsity groups: name → (kind, policy keys it sets).

    ``kind`` picks the range (``ih``, ``hh``, ``layer``, ``units``, ``all``). Directions of a
    bidirectional layer share a group; for ``hidden_unit`` the groups are layers.
    """
    dirs = range(2 if arch.bidirectional else 1)
    layers = range(arch.num_layers)

    def names(l: int, suffix: str = "") -> List[str]:
        return [layer_name(l, d, arch.bidirectional) + suffix for d in dirs]

    if granularity == "hidden_unit":
        if grouping == "global":
            return {"units": ("units", [n for l in layers for n in names(l)])}
        return {f"units.rnn.{l}": ("units", names(l)) for l in layers}
    if grouping == "global":
        return {"sparsity": ("all", [n for l in layers for d in dirs for n in [layer_name(l, d, arch.bidirectional) + f".{k}" for k in ("ih", "hh")]])}
    if grouping == "per_layer":
        return {f"sparsity.rnn.{l}": ("layer", [layer_name(l, d, arch.bidirectional) + f".{k}" for d in dirs for k in ("ih", "hh")]) for l in layers}
    if grouping == "per_matrix":
        return {f"sparsity.rnn.{l}.{k}": (k, names(l, f".{k}")) for l in layers for k in ("ih", "hh")}
    gates = GATES[arch.cell]
    return {f"sparsity.rnn.{l}.{k}.{g}": (k, names(l, f".{k}.{g}")) for l in layers for k in ("ih", "hh") for g in gates}


def warm_start_recovery(offered: List[str]) -> str:
    """The recovery of the warm start's uniform hidden-unit trials: scratch, else rewind, else finetune.

    Uniform widths retrained from scratch are the "small dense model" a user would try: the search
    starts from it. Measured on JapaneseVowels (benchmarks/results/recovery_choice_jv.md, 3 seeds):
    at 2 % / 5 % of dense size scratch 0.966 / 0.969, fine-tune 0.961 / 0.966, rewind 0.960 / 0.966.
    """
    return next(r for r in ("scratch", "rewind", "finetune") if r in offered)


def with_units_removed(arch: ArchSpec, fraction: float) -> ArchSpec:
    """``arch`` after removing ``fraction`` of every layer's units (as compaction rounds them)."""
    return arch.with_hidden_sizes([[max(1, units_kept(h, fraction)) for h in layer] for layer in arch.hidden_sizes])


def unit_fractions_for_sizes(arch: ArchSpec, targets: Tuple[float, ...]) -> List[float]:
    """Per size target (fraction of the dense parameters), the smallest uniform unit fraction whose model fits it.

    Fractions step by one unit of the widest layer (``1 - width / widest``), so layers of the
    widest size land on whole widths, like a small dense model of that width (the warm start's
    levels and ``benchmarks/search_quality``'s small-dense widths both come from here).
    """
    counts: Dict[int, int] = {}

    def n_params(width: int) -> int:
        if width not in counts:
            counts[width] = sum(p.numel() for p in RNNClassifier(with_units_removed(arch, 1.0 - width / top)).parameters())
        return counts[width]

    top = max(max(layer) for layer in arch.hidden_sizes)
    dense = n_params(top)
    out: List[float] = []
    for target in targets:
        lo, hi = 1, top  # the largest width that fits (sizes grow with width): binary search
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if n_params(mid) <= target * dense else (lo, mid - 1)
        out.append(round(1.0 - lo / top, 6))
    return out


class SearchSpace:
    """Turns an Optuna trial's suggestions into a :class:`PruningPolicy`."""

    def __init__(self, config: StudyConfig, dense_arch: ArchSpec) -> None:
        self.config = config
        self.space: SearchConfig = config.search
        self.arch = dense_arch
        self.pairs = [(m, g) for m in self.space.methods for g in self.space.granularities if g in METHODS[m].granularities]

    def _range(self, kind: str) -> Tuple[float, float]:
        sp = self.space.sparsity
        if kind == "units":
            return sp.units
        if kind in ("ih", "hh") and getattr(sp, kind) is not None:
            return getattr(sp, kind)
        return sp.range

    def suggest(self, trial: Any) -> PruningPolicy:
        """Sample a policy with ``trial.suggest_*`` (an ``optuna.Trial``)."""
        sp = self.space
        labels = [f"{m}/{g}" for m, g in self.pairs]
        method, granularity = self.pairs[labels.index(trial.suggest_categorical("method", labels))] if len(labels) > 1 else self.pairs[0]
        sparsity: Dict[str, float] = {}
        for name, (kind, keys) in sparsity_groups(self.arch, sp.sparsity.groups, granularity).items():
            lo, hi = self._range(kind)
            value = trial.suggest_float(name, lo, hi) if hi > lo else lo
            for key in keys:
                sparsity[key] = value
        if granularity == "unstructured" and sp.sparsity.head is not None:
            lo, hi = sp.sparsity.head
            sparsity["head"] = trial.suggest_float("sparsity.head", lo, hi) if hi > lo else lo
        epochs_lo, epochs_hi = sp.finetune.epochs
        epochs = trial.suggest_int("finetune.epochs", epochs_lo, epochs_hi) if epochs_hi > epochs_lo else epochs_lo
        lr_lo, lr_hi = sp.finetune.lr
        lr = trial.suggest_float("finetune.lr", lr_lo, lr_hi, log=True) if lr_hi > lr_lo else lr_lo
        kinds = sp.schedule.kinds
        kind = trial.suggest_categorical("schedule.kind", kinds) if len(kinds) > 1 else kinds[0]
        start = min(sp.schedule.start_epoch, epochs - 1)
        end = max(start, epochs - 1 - sp.schedule.end_before_last)
        schedule: Dict[str, Any] = {"kind": kind, "start_epoch": start, "end_epoch": end, "frequency": sp.schedule.frequency}
        if kind == "dynamic":
            t_lo, t_hi = sp.schedule.tolerance
            schedule["tolerance"] = trial.suggest_float("schedule.tolerance", t_lo, t_hi) if t_hi > t_lo else t_lo
        c_lo, c_hi = sp.grad_clip.range
        clip = trial.suggest_float("grad_clip.value", c_lo, c_hi, log=True) if c_hi > c_lo else c_lo
        algos = sp.grad_clip.algorithms
        algo = trial.suggest_categorical("grad_clip.algorithm", algos) if len(algos) > 1 else algos[0]
        policy: Dict[str, Any] = {
            "method": method,
            "granularity": granularity,
            "sparsity": sparsity,
            "schedule": schedule,
            "grad_clip": {"value": clip, "algorithm": algo},
            "finetune": {"epochs": epochs, "lr": lr, "min_epoch_steps": sp.finetune.min_epoch_steps},
        }
        if METHODS[method].uses_regularization:
            r_lo, r_hi = sp.regularization
            policy["regularization"] = trial.suggest_float(f"regularization.{method}", r_lo, r_hi, log=True) if r_hi > r_lo else r_lo
        if sp.distillation is not None:
            d_lo, d_hi = sp.distillation
            policy["distillation"] = {"weight": trial.suggest_float("distillation.weight", d_lo, d_hi) if d_hi > d_lo else d_lo}
        recoveries = list(dict.fromkeys(sp.recovery))
        if recoveries != ["finetune"]:
            policy["recovery"] = trial.suggest_categorical("recovery", recoveries) if len(recoveries) > 1 else recoveries[0]
        if sp.max_seq_len:
            choices = list(sp.max_seq_len)
            policy["max_seq_len"] = trial.suggest_categorical("max_seq_len", choices) if len(choices) > 1 else choices[0]
        precisions = list(sp.quantize)
        policy["quantize"] = trial.suggest_categorical("quantize", precisions) if len(precisions) > 1 else precisions[0]
        return policy_from_dict(policy, source=f"trial {getattr(trial, 'number', '?')}")

    def warm_start_params(self) -> List[Dict[str, Any]]:
        """Uniform policies a user would try by hand, as partial Optuna params to enqueue.

        Unstructured: one sparsity for every matrix at 0.8, 0.9, 0.95 (clipped into the range);
        hidden units: one fraction for every layer, the smallest whose compacted model fits
        25, 10, 5, 2 and 1 % of the dense parameters (``UNIT_SIZE_TARGETS``, computed from the
        architecture, clipped into ``units``): the uniform model a user would train at each size.
        When int8 is searched, int8 copies of the 25, 10 and 5 % unit levels follow (about 6,
        2.5 and 1.3 % of dense float32). Each runs with the fine-tune and clipping a user would
        use by hand (``_by_hand_params``). The sampler fills in everything else. Starting from these makes the front at least as good as the usual
        hand-tuned baselines and gives the evolutionary sampler good parents.
        """
        out: List[Dict[str, Any]] = []
        labels = {f"{m}/{g}": (m, g) for m, g in self.pairs}
        prefer = {"unstructured": ["magnitude", "taylor"], "hidden_unit": ["taylor", "magnitude", "group_lasso"]}
        levels = {"unstructured": [0.8, 0.9, 0.95], "hidden_unit": self.unit_fractions_for_sizes(UNIT_SIZE_TARGETS)}
        int8_copies: List[Dict[str, Any]] = []  # prune-then-quantize by hand: int8 copies of the 0.5-0.8 unit levels
        by_hand = self._by_hand_params()
        for gran in ("unstructured", "hidden_unit"):
            candidates = [f"{m}/{gran}" for m in prefer[gran] if f"{m}/{gran}" in labels] or [k for k, v in labels.items() if v[1] == gran]
            if not candidates:
                continue
            label = candidates[0]
            groups = sparsity_groups(self.arch, self.space.sparsity.groups, gran)
            seen = set()
            for level in levels[gran]:
                params: Dict[str, Any] = {}
                if len(self.pairs) > 1:
                    params["method"] = label
                for name, (kind, _) in groups.items():
                    lo, hi = self._range(kind)
                    params[name] = min(max(level, lo), hi)
                key = tuple(sorted(params.items()))
                if key not in seen:
                    seen.add(key)
                    if "agp" in self.space.schedule.kinds and len(self.space.schedule.kinds) > 1:
                        params["schedule.kind"] = "agp"
                    if gran == "hidden_unit" and len(set(self.space.recovery)) > 1:
                        params["recovery"] = warm_start_recovery(self.space.recovery)
                    params.update(by_hand)
                    out.append(params)
                    if gran == "hidden_unit" and levels[gran].index(level) < 3 and len(self.space.quantize) > 1:
                        int8_copies.append({**params, "quantize": "int8"})
        return out + int8_copies

    def _by_hand_params(self) -> Dict[str, Any]:
        """The fine-tune and clipping a user would run a uniform policy with: the policy's defaults
        (``FinetuneConfig``: 8 epochs at lr 1e-3) and the study's own clipping, clipped into the
        searched ranges. The warm start's trials are then the uniform baselines themselves, not
        uniform shapes with a sampled (possibly poor) fine-tune."""
        sp = self.space
        default = FinetuneConfig()
        out: Dict[str, Any] = {}
        e_lo, e_hi = sp.finetune.epochs
        if e_hi > e_lo:
            out["finetune.epochs"] = min(max(default.epochs, e_lo), e_hi)
        lr_lo, lr_hi = sp.finetune.lr
        if lr_hi > lr_lo:
            out["finetune.lr"] = min(max(default.lr, lr_lo), lr_hi)
        clip = self.config.train.grad_clip
        c_lo, c_hi = sp.grad_clip.range
        if clip.value is not None and c_hi > c_lo:
            out["grad_clip.value"] = min(max(clip.value, c_lo), c_hi)
        if len(sp.grad_clip.algorithms) > 1 and clip.algorithm in sp.grad_clip.algorithms:
            out["grad_clip.algorithm"] = clip.algorithm
        return out

    def _with_units_removed(self, fraction: float) -> ArchSpec:
        return with_units_removed(self.arch, fraction)

    def unit_fractions_for_sizes(self, targets: Tuple[float, ...]) -> List[float]:
        return unit_fractions_for_sizes(self.arch, targets)

    def smallest_arch(self) -> Optional[ArchSpec]:
        """The smallest architecture the space allows (most hidden units removed), or None without hidden-unit pruning."""
        if "hidden_unit" not in [g for _, g in self.pairs]:
            return None
        return self._with_units_removed(self.space.sparsity.units[1])

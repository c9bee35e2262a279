"""The declarative search space (``search:`` in the study YAML) → sampler suggestions → PruningPolicy.

Size first (:mod:`autoprune.search.sizing`): a trial samples how big the model will be
(``size``, a fraction of the dense float32 bytes, log-uniform), then how to spend it
(``structure``, ``units.rnn.<l>``, ``ih_vs_hh``, ``quantize``), and the policy's hidden-unit
fractions and weight sparsities are solved to land on that size. Then the method, schedule,
fine-tune, clipping and recovery, as before. Parameter names are the readable names above
and the policy's own (``method``, ``schedule.kind``, ``grad_clip.value`` ...), so Optuna's
trial params, MLflow params and the model card speak one language.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from autoprune.config import SearchConfig, StudyConfig
from autoprune.errors import ConfigError, ConstraintError
from autoprune.models.arch import ArchSpec, units_kept
from autoprune.models.rnn import RNNClassifier
from autoprune.pruning.methods import METHODS
from autoprune.pruning.policy import FinetuneConfig, PruningPolicy, policy_from_dict
from autoprune.runtime.measure import dense_size_bytes
from autoprune.search.sizing import Allocation, Limits, planned_bytes, smallest_fraction, solve

__all__ = ["SearchSpace", "SPACE_VERSION", "UNIT_SIZE_TARGETS", "unit_fractions_for_sizes", "warm_start_recovery", "with_units_removed"]

#: recorded on a study: trials of another space's parameters cannot be resumed by this one
SPACE_VERSION = "size_first/1"

#: sizes (fraction of the dense parameters) the warm start's uniform hidden-unit trials land on:
#: the levels users report (and ``benchmarks/search_quality`` measures at 10 / 5 / 2 / 1 %)
UNIT_SIZE_TARGETS = (0.25, 0.10, 0.05, 0.02, 0.01)
#: the warm start's int8 uniform copies: the levels where precision pays most
INT8_SIZE_TARGETS = (0.05, 0.02, 0.01)
#: the warm start's uniform single-weight sparsities
UNSTRUCTURED_LEVELS = (0.8, 0.9, 0.95)
#: the highest size a space targets unless told (half the dense bytes), and the lowest
_DEFAULT_SIZE_HIGH = 0.5
_DEFAULT_SIZE_FLOOR = 0.004


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
    widest size land on whole widths, like a small dense model of that width (the baselines'
    small-dense widths in ``benchmarks/search_quality`` come from here; the warm start's size-first
    trials land on the same widths).
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
        self.methods = [m for m in self.space.methods if any(g in METHODS[m].granularities for g in self.space.granularities)]
        self.size_range = self._size_range()
        # the fine-tune epochs a trial prunes over: under multi-fidelity with a cheap rung, that rung's (the sampled and
        # warm-start trials are ranked after it; the promotions retrain their pruned weights), else the searched range
        rung = self.space.fidelity.finetune_epochs if self.space.fidelity.enabled else None
        self.finetune_epochs: Tuple[int, int] = (rung, rung) if rung is not None else tuple(self.space.finetune.epochs)

    # ------------------------------------------------------------------ limits and sizes
    def _granularities(self, method: str) -> Tuple[bool, bool]:
        """(hidden units, single weights): what ``method`` may prune in this space."""
        allowed = [g for g in self.space.granularities if g in METHODS[method].granularities]
        return "hidden_unit" in allowed, "unstructured" in allowed

    def limits(self, method: str) -> Limits:
        sp = self.space.sparsity
        units, weights = self._granularities(method)
        return Limits(units=sp.units, weights=sp.range, ih=sp.ih, hh=sp.hh, head=sp.head, runtime=self.config.measure.runtime,
                      prune_units=units, prune_weights=weights)

    def _size_range(self) -> Tuple[float, float]:
        """The sizes trials target: ``search.size``, else from the smallest the limits reach to half the dense
        bytes; never above ``max_size_bytes`` (a trial aimed over the budget is wasted).

        Raises:
            ConfigError: the range lies below what the limits can reach, or above the size budget.
        """
        s = self.space
        lows = [smallest_fraction(self.arch, self.limits(m), s.quantize, *self._granularities(m)) for m in self.methods]
        reachable = min(lows)
        # no sizes asked: from the smallest the limits reach (not under the floor) to half the dense bytes, or to the
        # smallest reachable where the limits cannot go below half (search.sparsity.range starting at 0.5, say)
        lo, hi = s.size if s.size is not None else (max(reachable, _DEFAULT_SIZE_FLOOR), max(_DEFAULT_SIZE_HIGH, reachable))
        budget = s.constraints.max_size_bytes
        budget_fraction = budget / dense_size_bytes(sum(p.numel() for p in RNNClassifier(self.arch).parameters())) if budget is not None else None
        if budget_fraction is not None:
            hi = min(hi, budget_fraction)
        where = f"{self.config.source or 'config'}: search.size"
        if budget_fraction is not None and budget_fraction < reachable:
            raise ConstraintError(
                f"max_size_bytes={budget} cannot be met: the smallest model the search space allows (its limits search.sparsity.units / range, "
                f"quantize) takes {reachable:.4%} of the dense bytes, the budget is {budget_fraction:.4%}; raise the budget, or allow smaller models "
                f"(search.sparsity.units, granularity hidden_unit, quantize int8)"
            )
        if hi < reachable:
            raise ConfigError(
                f"{where}: no model the space allows is that small: its limits (search.sparsity.units / range, quantize) reach "
                f"{reachable:.4%} of the dense bytes at the least, and the sizes asked (or max_size_bytes) go up to {hi:.4%}"
            )
        return max(lo, reachable), max(hi, max(lo, reachable))

    # ------------------------------------------------------------------ one trial
    def suggest(self, trial: Any) -> PruningPolicy:
        """Sample a policy with ``trial.suggest_*`` (an ``optuna.Trial``)."""
        sp = self.space
        method = trial.suggest_categorical("method", self.methods) if len(self.methods) > 1 else self.methods[0]
        lo, hi = self.size_range
        size = trial.suggest_float("size", lo, hi, log=True) if hi > lo else lo
        units, weights = self._granularities(method)
        structure = trial.suggest_float("structure", 0.0, 1.0) if units and weights else float(units)
        layer_log2: Tuple[float, ...] = ()
        if sp.sparsity.groups != "global" and self.arch.num_layers > 1:
            layer_log2 = tuple(trial.suggest_float(f"units.rnn.{l}", -1.0, 1.0) for l in range(self.arch.num_layers))
        ih_vs_hh = trial.suggest_float("ih_vs_hh", -1.0, 1.0) if weights and sp.sparsity.groups == "per_matrix" else 0.0
        precisions = list(sp.quantize)
        precision = trial.suggest_categorical("quantize", precisions) if len(precisions) > 1 else precisions[0]
        plan = solve(self.arch, Allocation(size, structure, layer_log2, ih_vs_hh, precision), self.limits(method))
        policy: Dict[str, Any] = {"method": method, **self._sparsities(plan, weights), "quantize": precision}
        policy.update(self._training(trial, method))
        return policy_from_dict(policy, source=f"trial {getattr(trial, 'number', '?')}")

    def _sparsities(self, plan: Any, weights: bool) -> Dict[str, Any]:
        """The policy keys of a solved plan: hidden units (then single weights: hybrid), single weights alone, or
        nothing to prune (the size asked is the model's own at this precision)."""
        units: Dict[str, float] = {}
        for name, (l, _) in self.arch.layer_names().items():
            if name in plan.unit_fractions:
                units[f"rnn.{l}"] = plan.unit_fractions[name]  # both directions of a layer keep one width
        if units:
            out: Dict[str, Any] = {"granularity": "hidden_unit", "sparsity": units}
            if plan.weight_sparsity:
                out["weight_sparsity"] = dict(plan.weight_sparsity)
            return out
        return {"granularity": "unstructured" if weights else "hidden_unit", "sparsity": dict(plan.weight_sparsity) or 0.0}

    def _training(self, trial: Any, method: str) -> Dict[str, Any]:
        """How the policy fine-tunes and recovers: schedule, fine-tune, clipping, regularization, distillation, recovery, windows."""
        sp = self.space
        epochs_lo, epochs_hi = self.finetune_epochs
        epochs = trial.suggest_int("finetune.epochs", epochs_lo, epochs_hi) if epochs_hi > epochs_lo else epochs_lo
        lr_lo, lr_hi = sp.finetune.lr
        lr = trial.suggest_float("finetune.lr", lr_lo, lr_hi, log=True) if lr_hi > lr_lo else lr_lo
        kinds = sp.schedule.kinds
        kind = trial.suggest_categorical("schedule.kind", kinds) if len(kinds) > 1 else kinds[0]
        start, end = sp.schedule.window(epochs)
        schedule: Dict[str, Any] = {"kind": kind, "start_epoch": start, "end_epoch": end, "frequency": sp.schedule.frequency}
        if kind == "dynamic":
            t_lo, t_hi = sp.schedule.tolerance
            schedule["tolerance"] = trial.suggest_float("schedule.tolerance", t_lo, t_hi) if t_hi > t_lo else t_lo
        c_lo, c_hi = sp.grad_clip.range
        clip = trial.suggest_float("grad_clip.value", c_lo, c_hi, log=True) if c_hi > c_lo else c_lo
        algos = sp.grad_clip.algorithms
        algo = trial.suggest_categorical("grad_clip.algorithm", algos) if len(algos) > 1 else algos[0]
        out: Dict[str, Any] = {
            "schedule": schedule,
            "grad_clip": {"value": clip, "algorithm": algo},
            "finetune": {"epochs": epochs, "lr": lr, "min_epoch_steps": sp.finetune.min_epoch_steps},
        }
        if METHODS[method].uses_regularization:
            r_lo, r_hi = sp.regularization
            out["regularization"] = trial.suggest_float(f"regularization.{method}", r_lo, r_hi, log=True) if r_hi > r_lo else r_lo
        if sp.distillation is not None:
            d_lo, d_hi = sp.distillation
            out["distillation"] = {"weight": trial.suggest_float("distillation.weight", d_lo, d_hi) if d_hi > d_lo else d_lo}
        recoveries = list(dict.fromkeys(sp.recovery))
        if sp.fidelity.enabled:  # sampled trials fine-tune; the promoted ones retrain (search/fidelity.py)
            out["recovery"] = "finetune"
        elif recoveries != ["finetune"]:
            out["recovery"] = trial.suggest_categorical("recovery", recoveries) if len(recoveries) > 1 else recoveries[0]
        if sp.max_seq_len:
            choices = list(sp.max_seq_len)
            out["max_seq_len"] = trial.suggest_categorical("max_seq_len", choices) if len(choices) > 1 else choices[0]
        return out

    # ------------------------------------------------------------------ warm start
    def warm_start_params(self) -> List[Dict[str, Any]]:
        """Uniform policies a user would try by hand, as Optuna params to enqueue (the sampler learns from them:
        they are trials of the same space, with the same parameter names).

        Hidden units: one width for every layer, the largest whose model fits 25, 10, 5, 2 and 1 % of the
        dense bytes (``UNIT_SIZE_TARGETS``, clipped into the size range and ``units``): the uniform model a
        user would train at each size, retrained as the space's best offered recovery; when int8 is searched,
        int8 copies at 5, 2 and 1 % (wider models, quantized). Single weights: the bytes of one sparsity
        for every matrix at 0.8, 0.9, 0.95, spent as the space spends single weights (each matrix's
        Erdős–Rényi share, :mod:`autoprune.search.sizing`). Each runs with the fine-tune and clipping a user would use by hand
        (``_by_hand_params``). Starting from these makes the front at least as good as the usual
        hand-tuned baselines.
        """
        by_hand = self._by_hand_params()
        uniform = {f"units.rnn.{l}": 0.0 for l in range(self.arch.num_layers)} if self.space.sparsity.groups != "global" and self.arch.num_layers > 1 else {}
        out: List[Dict[str, Any]] = []
        seen: set = set()

        def add(method: str, size: float, structure: float, precision: str, recovery: Optional[str]) -> None:
            lo, hi = self.size_range
            params: Dict[str, Any] = {"size": min(max(size, lo), hi), **uniform}
            if len(self.methods) > 1:
                params["method"] = method
            units, weights = self._granularities(method)
            if units and weights:
                params["structure"] = structure
            if weights and self.space.sparsity.groups == "per_matrix":
                params["ih_vs_hh"] = 0.0
            if len(self.space.quantize) > 1:
                params["quantize"] = precision
            plan = solve(self.arch, Allocation(params["size"], structure, (), 0.0, precision), self.limits(method))
            key = (method, precision, str(plan.hidden_sizes), tuple(sorted(plan.weight_sparsity.items())))
            if key in seen:  # a level the limits clip onto another one's model
                return
            seen.add(key)
            if "agp" in self.space.schedule.kinds and len(self.space.schedule.kinds) > 1:
                params["schedule.kind"] = "agp"
            if recovery is not None and len(set(self.space.recovery)) > 1:
                params["recovery"] = recovery
            out.append({**params, **by_hand})

        unit_method = self._preferred("hidden_unit", ["taylor", "magnitude", "group_lasso"])
        weight_method = self._preferred("unstructured", ["magnitude", "taylor"])
        if weight_method is not None:
            dense = [list(s) for s in self.arch.hidden_sizes]
            total = dense_size_bytes(sum(p.numel() for p in RNNClassifier(self.arch).parameters()))
            w_lo, w_hi = self.space.sparsity.range
            for level in UNSTRUCTURED_LEVELS:
                level = min(max(level, w_lo), w_hi)
                densities = {f"rnn.{l}.{k}": 1.0 - level for l in range(self.arch.num_layers) for k in ("ih", "hh")}
                add(weight_method, planned_bytes(self.arch, dense, densities, "none", self.config.measure.runtime) / total, 0.0, "none", None)
        if unit_method is not None:
            recovery = warm_start_recovery(self.space.recovery)
            for level in UNIT_SIZE_TARGETS:
                add(unit_method, level, 1.0, "none", recovery)
            if "int8" in self.space.quantize:
                for level in INT8_SIZE_TARGETS:
                    add(unit_method, level, 1.0, "int8", recovery)
        return out

    def _preferred(self, granularity: str, order: List[str]) -> Optional[str]:
        can = [m for m in self.methods if self._granularities(m)[0 if granularity == "hidden_unit" else 1]]
        return next((m for m in order if m in can), can[0] if can else None)

    def _by_hand_params(self) -> Dict[str, Any]:
        """The fine-tune and clipping a user would run a uniform policy with: the policy's defaults
        (``FinetuneConfig``: 8 epochs at lr 1e-3) and the study's own clipping, clipped into the
        searched ranges. The warm start's trials are then the uniform baselines themselves, not
        uniform shapes with a sampled (possibly poor) fine-tune. Under a cheap rung
        (``fidelity.finetune_epochs``) they prune over the rung's epochs like every trial but the
        promotions; retrained from scratch they still yield the baseline's model (seeded init)."""
        sp = self.space
        default = FinetuneConfig()
        out: Dict[str, Any] = {}
        e_lo, e_hi = self.finetune_epochs
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

    def smallest_arch(self) -> Optional[ArchSpec]:
        """The smallest architecture the space allows (most hidden units removed), or None without hidden-unit pruning."""
        if not any(self._granularities(m)[0] for m in self.methods):
            return None
        return with_units_removed(self.arch, self.space.sparsity.units[1])

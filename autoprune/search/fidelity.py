"""Multi-fidelity: spend the expensive retraining (rewind, scratch) only on candidates worth it.

With ``search.fidelity.enabled``, every sampled trial prunes and fine-tunes only (the cheap
rung). A promotion is a new trial of the study: the same parameters, the space's retraining
(scratch, else rewind), started from the promoted trial's saved, pruned weights (no pruning
again), so it runs on whichever worker or Ray node claims it next and the study stays the one
record. Optuna's pruners are single-objective, so candidates are ranked by validation accuracy
within a size tier (sizes are not comparable across tiers):

* as soon as a finished trial is in the top ``1 / eta`` of its tier's fine-tuned trials (a tier
  of fewer than ``eta`` has no verdict yet), it is promoted (asynchronous successive halving,
  per tier);
* promotions are at most ``share`` of ``search.trials``; once the sampled trials have used
  the rest, the remaining promotions go to the best unpromoted trials, the tiers with the
  fewest promotions first, and among those the smallest tier first (retraining gains most
  where the most was pruned: +3 points at 5 % of dense, +8 at 2 % on MNIST-1D);
* with ``max_size_ratio``, only trials at or below that fraction of the dense bytes are
  promoted: the retraining goes to the sizes the user will deploy, none to the tiers above.

Every decision is made inside the claim of a trial (:func:`autoprune.search.claim.claim`,
under the ask lock), so that concurrent workers never promote a trial twice.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from optuna.trial import TrialState

from autoprune.search import attrs
from autoprune.search.pareto import feasible, trial_row

__all__ = ["TIER_EDGES", "Promoter", "promoter_of", "tier_of"]

#: upper edges of the size tiers (fraction of dense bytes): the levels users report
TIER_EDGES = (0.01, 0.02, 0.05, 0.10, 0.25, float("inf"))


def tier_of(size_ratio: float) -> int:
    return next(i for i, edge in enumerate(TIER_EDGES) if size_ratio <= edge)


def promoter_of(config: Any) -> Optional["Promoter"]:
    """The study's promoter when multi-fidelity is on (``search.fidelity.enabled``), else None."""
    f = config.search.fidelity
    return Promoter(config.search.trials, f.share, f.eta, f.max_size_ratio) if f.enabled else None


class Promoter:
    """Decides promotions for a study with ``total`` trials and the study's ``search.fidelity`` settings."""

    def __init__(self, total: int, share: float, eta: int, max_size_ratio: Optional[float] = None) -> None:
        self.total = total
        self.quota = max(1, int(round(share * total)))
        self.eta = eta
        self.max_size_ratio = max_size_ratio

    # ------------------------------------------------------------------ what the study holds
    @staticmethod
    def _promoted_from(trials: List[Any]) -> Dict[int, Any]:
        return {int(t.user_attrs[attrs.PROMOTED_FROM]): t for t in trials if attrs.PROMOTED_FROM in t.user_attrs}

    def _candidates(self, trials: List[Any], promoted: Dict[int, Any]) -> List[Dict[str, Any]]:
        """Finished, feasible, fine-tuned-only trials with saved weights, no larger than ``max_size_ratio``: what may be
        promoted (rows, with their tier)."""
        out = []
        for t in trials:
            if t.state != TrialState.COMPLETE or attrs.PROMOTED_FROM in t.user_attrs or not feasible(t):
                continue
            row = trial_row(t)
            if row["state"] != "complete" or (row["policy"] or {}).get("recovery", "finetune") != "finetune" or not row["checkpoint"]:
                continue
            if self.max_size_ratio is not None and row["size_ratio"] > self.max_size_ratio:
                continue
            row["tier"] = tier_of(row["size_ratio"])
            row["promoted"] = t.number in promoted
            out.append(row)
        return out

    def next_promotion(self, study: Any) -> Optional[int]:
        """The trial to promote now, or None (see the module docstring)."""
        trials = study.get_trials(deepcopy=False)
        promoted = self._promoted_from(trials)
        if len(promoted) >= self.quota:
            return None
        rows = self._candidates(trials, promoted)
        for row in sorted(rows, key=lambda r: -r["val_accuracy"]):  # successive halving, per tier
            if row["promoted"]:
                continue
            tier = sorted((r for r in rows if r["tier"] == row["tier"]), key=lambda r: (-r["val_accuracy"], r["size_ratio"]))
            keep = math.floor(len(tier) / self.eta)  # a tier of fewer than eta trials has no verdict yet
            if row["trial"] in [r["trial"] for r in tier[:keep]]:
                return row["trial"]
        sampled = sum(1 for t in trials if attrs.PROMOTED_FROM not in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))
        if sampled < self.total - self.quota:
            return None  # the sampled budget is not spent yet: no forced promotion
        left = [r for r in rows if not r["promoted"]]
        if not left:
            return None
        per_tier = {r["tier"]: 0 for r in rows}
        for n in promoted:
            for r in rows:
                if r["trial"] == n:
                    per_tier[r["tier"]] += 1
        return min(left, key=lambda r: (per_tier[r["tier"]], r["tier"], -r["val_accuracy"], r["size_ratio"]))["trial"]

    def sampled_budget_left(self, study: Any) -> int:
        """Sampled (or warm-start) trials still to claim before the rest of the budget is the promotions'."""
        trials = study.get_trials(deepcopy=False)
        used = sum(1 for t in trials if attrs.PROMOTED_FROM not in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        return self.total - self.quota - used

    @staticmethod
    def promote(study: Any, number: int) -> None:
        """Enqueue the promotion of trial ``number``: its parameters, marked as promoted from it."""
        source = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        study.enqueue_trial(dict(source.params), user_attrs={attrs.ORIGIN: attrs.PROMOTED, attrs.PROMOTED_FROM: number})

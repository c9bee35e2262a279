"""Fine-tune budgets that do not shrink with the data set.

A fine-tune *epoch* is the unit of every trial budget: ``finetune.epochs``, the pruning
schedule's ``start_epoch``/``end_epoch`` and ``early_stop.after_epochs``. Counted as one pass
over the training set, an epoch of a small data set is very few optimizer steps (28
training sequences at batch size 32: one step), and a 6-epoch fine-tune cannot recover a
pruned model. With ``finetune.min_epoch_steps: N`` an epoch is *at least* N optimizer
steps: when one pass is shorter, the epoch goes on over the reshuffled training set until
it has N steps. Larger data sets (one pass >= N steps) are unchanged, so every budget
means at least ``epochs x N`` steps whatever the data set's size.
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["epoch_steps", "describe_epoch"]


def epoch_steps(n_train: int, batch_size: int, min_epoch_steps: Optional[int] = None) -> int:
    """Optimizer steps in one fine-tune epoch.

    Args:
        n_train: training sequences.
        batch_size: sequences per step.
        min_epoch_steps: the least number of steps an epoch has (None or 0: one pass).

    Returns:
        ``max(ceil(n_train / batch_size), min_epoch_steps)``.
    """
    one_pass = math.ceil(n_train / batch_size) if n_train > 0 else 0
    return max(one_pass, int(min_epoch_steps or 0))


def describe_epoch(n_train: int, batch_size: int, min_epoch_steps: Optional[int] = None) -> str:
    """One line for logs: what a fine-tune epoch is on this data set."""
    one_pass = epoch_steps(n_train, batch_size)
    steps = epoch_steps(n_train, batch_size, min_epoch_steps)
    if steps > one_pass:
        return (
            f"a fine-tune epoch is {steps} optimizer steps (finetune.min_epoch_steps={min_epoch_steps}; "
            f"one pass over the {n_train} training sequences is {one_pass} step{'s' if one_pass != 1 else ''})"
        )
    return f"a fine-tune epoch is one pass over the {n_train} training sequences ({steps} optimizer steps)"

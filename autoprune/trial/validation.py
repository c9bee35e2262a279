"""Validation scores that mean something on small validation sets.

With ``n`` validation sequences, accuracy moves in steps of ``1/n`` (12 sequences: 8.3
points) and its standard error at accuracy ``p`` is ``sqrt(p (1 - p) / n)``. Many trials of
a search then tie on accuracy, and the sampler, the front and ``export``'s pick choose
among the tied ones by trial number, i.e. by chance.

``val_score`` is the number the sampler maximises and the front and ``export`` rank by:
validation accuracy plus a tie-break worth less than half an accuracy step,

    val_score = accuracy + 0.5 / n * exp(-loss)

where ``exp(-loss)`` (in (0, 1]) is the geometric mean of the probability the model gives
the true class. A trial with more correct validation sequences always scores higher; among
trials with the same count, the more confident one wins. Only validation data is used:
the test set stays out of every choice.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

__all__ = ["SMALL_VALIDATION", "TIE_BREAK_WEIGHT", "val_score", "score_of", "accuracy_noise", "noise_text", "scored_samples", "small_validation_message"]

#: below this many validation sequences the start of a search warns that accuracy is coarse.
#: At 50, one accuracy step is 2 points and the standard error at 90 % accuracy is 4.2
#: points, near the 5-point tolerance users ask of a pruned model. Measured on the bundled
#: small UEA sets (README "Small data sets"): among trials tied at the top validation
#: accuracy, test accuracy spread 15 points with 12 validation sequences (BasicMotions) and
#: 4 points with 21 (ItalyPowerDemand), 1-2 points with 81 (JapaneseVowels).
SMALL_VALIDATION = 50

#: the tie-break is worth at most this fraction of one accuracy step (< 1: never reorders counts)
TIE_BREAK_WEIGHT = 0.5


def val_score(accuracy: float, loss: Optional[float], n_val: int) -> float:
    """Validation accuracy with a loss tie-break that never outweighs one correct sequence.

    Args:
        accuracy: validation accuracy in [0, 1].
        loss: mean validation cross-entropy (None or not finite: no tie-break).
        n_val: validation sequences (the step of accuracy is ``1 / n_val``).

    Returns:
        ``accuracy + TIE_BREAK_WEIGHT / n_val * exp(-loss)``.
    """
    if loss is None or not math.isfinite(float(loss)) or n_val <= 0:
        return float(accuracy)
    return float(accuracy) + TIE_BREAK_WEIGHT / n_val * math.exp(-max(float(loss), 0.0))


def score_of(result: Mapping[str, Any]) -> Optional[float]:
    """The ranking score of a recorded trial result: ``val_score`` if recorded, else its accuracy.

    Results recorded before ``val_score`` existed rank by accuracy alone.
    """
    score = result.get("val_score")
    return float(score) if score is not None else result.get("val_accuracy")


def accuracy_noise(n_val: int, accuracy: float = 0.9) -> Dict[str, float]:
    """How coarse validation accuracy is: its step and binomial standard error (in accuracy units)."""
    p = min(max(float(accuracy), 0.05), 0.95)  # at 100 % the binomial error is 0: use a realistic floor
    return {"step": 1.0 / max(n_val, 1), "standard_error": math.sqrt(p * (1 - p) / max(n_val, 1))}


def scored_samples(dm: Any, split: str = "val") -> int:
    """The scored samples of a data module's split (sequences, or a per-frame task's frames): one accuracy step is one of them."""
    from autoprune.models.rnn import scored_count

    _, lengths, y = dm.tensors(split)
    return scored_count(y, lengths)


def noise_text(accuracy: float, n_val: Optional[int]) -> Optional[str]:
    """How far a validation accuracy can be trusted, for the front and the pick: its standard error over ``n_val``
    scored validation samples, and what that means for choosing between models (None when ``n_val`` is unknown:
    results recorded before it was)."""
    if not n_val:
        return None
    se = 100 * accuracy_noise(n_val, accuracy)["standard_error"]
    return (
        f"validation accuracy {accuracy:.4f} is measured on {n_val} samples: one standard error is about {se:.1f} points, "
        f"so models whose validation accuracies differ by less are not told apart by it (the test set decides nothing here)"
    )


def small_validation_message(n_val: int, accuracy: float = 0.9) -> Optional[str]:
    """A warning for the start of a search when the validation set is small, else None."""
    if n_val >= SMALL_VALIDATION:
        return None
    noise = accuracy_noise(n_val, accuracy)
    return (
        f"the validation set has only {n_val} sequences (< {SMALL_VALIDATION}): accuracy moves in steps of "
        f"{100 * noise['step']:.1f} points and its standard error is about {100 * noise['standard_error']:.1f} points; "
        f"trials are ranked by val_score (accuracy, ties broken by validation loss). "
        f"Raise task.val_fraction or bring more data for a finer choice."
    )

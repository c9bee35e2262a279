"""Per-frame tasks built offline from a classification set: ``uea:<Name>`` with option ``frames: true``.

Series of different classes are joined end to end into one sequence and every frame is
labelled with the class of the series it belongs to. From JapaneseVowels (utterances of
nine speakers) this is "who is speaking now": a speaker-turn tagger whose recurrence must
track who talks and notice when the speaker changes, the one-output-per-frame setting of
speech recognisers and taggers. Each series is used once per split, so training and
validation sequences never share a series, and test sequences are built from the test split
only. Deterministic in the seed.
"""

from __future__ import annotations

import functools

import numpy as np

from autoprune.errors import ConfigError
from autoprune.tasks.options import Option
from autoprune.tasks.sequences import RawSplits

__all__ = ["OPTIONS", "per_frame"]

OPTIONS = {
    "frames": Option(bool, False, "per-frame task: join series of different classes end to end, label every frame with its series' class"),
    "min_parts": Option(int, 2, "with frames: fewest series joined into one sequence", min=1),
    "max_parts": Option(int, 4, "with frames: most series joined into one sequence", min=1),
}


def _join(xs: list, ys, rng: np.random.Generator, lo: int, hi: int) -> tuple[list, list]:
    """Join series in a random order, ``lo``..``hi`` per sequence, neighbours of different classes; each series once."""
    labels = np.asarray(ys)
    pool = list(rng.permutation(len(xs)))
    out_x, out_y = [], []
    while pool:
        want = int(rng.integers(lo, hi + 1))
        parts = [pool.pop(0)]
        while len(parts) < want:
            nxt = next((j for j, idx in enumerate(pool) if labels[idx] != labels[parts[-1]]), None)
            if nxt is None:
                break
            parts.append(pool.pop(nxt))
        out_x.append(np.concatenate([xs[i] for i in parts], axis=0))
        out_y.append(np.concatenate([np.full(len(xs[i]), labels[i]) for i in parts]))
    for x, y in zip(out_x, out_y):
        x.flags.writeable = False
        y.flags.writeable = False
    return out_x, out_y


def _build(load, seed: int, lo: int, hi: int) -> RawSplits:
    raw = load()
    rng = np.random.default_rng([seed, 20240620])
    x_train, y_train = _join(raw.x_train, raw.y_train, rng, lo, hi)
    x_test, y_test = _join(raw.x_test, raw.y_test, rng, lo, hi)
    return RawSplits(x_train, y_train, x_test, y_test)


def per_frame(load, *, spec: str, seed: int, options: dict):
    """``load`` (a loader of a classification set's :class:`RawSplits`) as the per-frame task of the module
    docstring when ``options["frames"]``, else as it is.

    Raises:
        ConfigError: ``min_parts > max_parts``.
    """
    if not options["frames"]:
        return load
    lo, hi = options["min_parts"], options["max_parts"]
    if lo > hi:
        raise ConfigError(f"task {spec!r}: min_parts ({lo}) must be <= max_parts ({hi})")
    return functools.partial(_build, load, seed, lo, hi)

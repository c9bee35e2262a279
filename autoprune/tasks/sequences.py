"""Turn raw sequence collections into the padded, normalised splits of the data contract.

Numpy only (scikit-learn imported lazily for the stratified split), so loaders and the
registry stay importable without torch or lightning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoprune.errors import TaskError

__all__ = ["RawSplits", "Prepared", "to_sequences", "prepare"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawSplits:
    """A loaded data source before splitting, label encoding and normalisation.

    Sequences are time-major float arrays ``[T_i, C]``; labels are any sortable values.
    The arrays are shared through the in-process cache and marked read-only.
    """

    x_train: list[np.ndarray]
    y_train: np.ndarray
    x_test: list[np.ndarray]
    y_test: np.ndarray


@dataclass(frozen=True)
class Prepared:
    """Padded ``[N, T_max, C]`` float32 inputs, int64 lengths and labels per split."""

    x: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    class_names: list[str]
    mean: np.ndarray
    std: np.ndarray


def to_sequences(x, *, layout: str, what: str) -> list[np.ndarray]:
    """Convert a collection of series into a list of read-only ``[T_i, C]`` arrays.

    Args:
        x: a 3-D array ``[N, T, C]`` (``layout="NTC"``) or ``[N, C, T]`` (``layout="NCT"``,
            aeon's layout), a 2-D array ``[N, T]`` (one channel), or a list of per-sequence
            arrays ``[T_i, C]`` / ``[C, T_i]`` (by layout) or ``[T_i]``.
        layout: ``"NTC"`` or ``"NCT"``.
        what: name of the collection, for error messages (e.g. ``"task 'x', x_train"``).

    Returns:
        One float64 array ``[T_i, C]`` per sequence.

    Raises:
        TaskError: when the input is not array-like or has the wrong number of dimensions.
    """
    channel_first = layout == "NCT"
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim == 2:
            items = list(x[:, :, None])
            channel_first = False
        elif x.ndim == 3:
            items = list(x)
        else:
            raise TaskError(f"{what}: expected a 2-D or 3-D array, got shape {x.shape}")
    elif isinstance(x, Sequence | np.ndarray):
        items = list(x)
    else:
        raise TaskError(
            f"{what}: expected an array or a list of arrays, got {type(x).__name__}"
        )
    out = []
    for i, item in enumerate(items):
        try:
            a = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TaskError(f"{what}[{i}]: not numeric ({e})") from None
        if a.ndim == 1:
            a = a[:, None]
        elif a.ndim != 2:
            raise TaskError(f"{what}[{i}]: expected a 1-D or 2-D array, got shape {a.shape}")
        elif channel_first:
            a = a.T
        if a.shape[0] == 0:
            raise TaskError(f"{what}[{i}]: sequence has no time steps")
        a.flags.writeable = False
        out.append(a)
    if not out:
        raise TaskError(f"{what}: no sequences")
    return out


def _check_finite(name: str, split: str, seqs: list[np.ndarray]) -> None:
    bad = sum(int(np.count_nonzero(~np.isfinite(s))) for s in seqs)
    if bad:
        total = sum(s.size for s in seqs)
        raise TaskError(
            f"task {name!r}: {bad} of {total} values in the {split} split are NaN or inf; "
            "autoprune does not impute, clean the data first"
        )


def _label_values(y, n: int, name: str, split: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise TaskError(
            f"task {name!r}: the {split} split has {n} sequences but labels of shape {y.shape}"
        )
    return y if y.dtype.kind in "biuf" else y.astype(str)


def _sorted_classes(y: np.ndarray) -> list:
    classes = np.unique(y).tolist()
    if y.dtype.kind == "U":
        # "1".."10" as numbers, not as text ("1", "10", "2")
        try:
            return sorted(classes, key=lambda c: (float(c), c))
        except ValueError:
            pass
    return classes


def _encode(y_train, y_test, name: str, n_train: int, n_test: int):
    ytr = _label_values(y_train, n_train, name, "train")
    yte = _label_values(y_test, n_test, name, "test")
    if (ytr.dtype.kind == "U") != (yte.dtype.kind == "U"):
        ytr, yte = ytr.astype(str), yte.astype(str)
    classes = _sorted_classes(ytr)
    if len(classes) < 2:
        raise TaskError(f"task {name!r}: the train split has only one class ({classes})")
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted({c for c in yte.tolist() if c not in index}, key=str)
    if unseen:
        raise TaskError(
            f"task {name!r}: the test split has labels never seen in train: {unseen[:10]}"
        )
    enc = [np.array([index[c] for c in y.tolist()], dtype=np.int64) for y in (ytr, yte)]
    return enc[0], enc[1], [str(c) for c in classes]


def _split_train_val(y: np.ndarray, val_fraction: float, seed: int, name: str):
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_val = math.ceil(val_fraction * n)
    if n_val < 1 or n_val >= n:
        raise TaskError(
            f"task {name!r}: cannot carve a validation split of fraction {val_fraction} "
            f"from {n} training sequences"
        )
    idx = np.arange(n)
    counts = np.bincount(y)
    if counts.min() >= 2:
        try:
            tr, va = train_test_split(idx, test_size=n_val, stratify=y, random_state=seed)
            return np.sort(tr), np.sort(va)
        except ValueError as e:  # fewer val/train slots than classes
            reason = str(e)
    else:
        reason = f"class {int(counts.argmin())} has {int(counts.min())} member(s)"
    logger.warning("task %r: validation split is not stratified (%s)", name, reason)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed)
    return np.sort(tr), np.sort(va)


def _pad(seqs: list[np.ndarray], t_max: int, mean, std) -> np.ndarray:
    n, c = len(seqs), seqs[0].shape[1]
    out = np.zeros((n, t_max, c), dtype=np.float32)
    if all(len(s) == t_max for s in seqs):
        out[:] = (np.stack(seqs) - mean) / std
    else:
        for i, s in enumerate(seqs):
            out[i, : len(s)] = (s - mean) / std
    return out


def prepare(raw: RawSplits, *, name: str, seed: int, val_fraction: float, normalize: bool = True) -> Prepared:
    """Validate, split, label-encode, normalise and pad a raw data source.

    Validation comes from train (stratified by label, seeded by ``seed``); the test split
    is the source's own. Per-channel mean/std are fitted on the valid time steps of the
    train split only; padding stays exactly zero.

    Args:
        raw: the loaded data.
        name: task spec, for error messages.
        seed: seed of the validation split.
        val_fraction: share of the train sequences moved to validation.
        normalize: False leaves the values as given (mean 0, std 1: a user's model trained on raw inputs).

    Returns:
        The padded splits, class names and the normalisation statistics.

    Raises:
        TaskError: on NaN/inf values, inconsistent channel counts, label problems, or too
            few sequences for a validation split.
    """
    _check_finite(name, "train", raw.x_train)
    _check_finite(name, "test", raw.x_test)
    channels = {s.shape[1] for s in raw.x_train} | {s.shape[1] for s in raw.x_test}
    if len(channels) != 1:
        raise TaskError(
            f"task {name!r}: sequences have different channel counts {sorted(channels)}"
        )
    y_train, y_test, class_names = _encode(
        raw.y_train, raw.y_test, name, len(raw.x_train), len(raw.x_test)
    )
    tr, va = _split_train_val(y_train, val_fraction, seed, name)
    seqs = {
        "train": [raw.x_train[i] for i in tr],
        "val": [raw.x_train[i] for i in va],
        "test": raw.x_test,
    }
    labels = {"train": y_train[tr], "val": y_train[va], "test": y_test}
    steps = np.concatenate(seqs["train"], axis=0)
    mean = steps.mean(axis=0)
    std = steps.std(axis=0)
    std[std == 0] = 1.0
    if not normalize:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    t_max = max(len(s) for split in SPLITS for s in seqs[split])
    return Prepared(
        x={k: _pad(seqs[k], t_max, mean, std) for k in SPLITS},
        lengths={k: np.array([len(s) for s in seqs[k]], dtype=np.int64) for k in SPLITS},
        y=labels,
        class_names=class_names,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
    )

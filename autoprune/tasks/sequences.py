"""Turn raw sequence collections into the padded, normalised splits of the data contract.

A task gives float frames ``[T_i, C]`` or token ids ``[T_i]`` (``padding_id`` set), and one label
per sequence or one per frame (a label sequence ``[T_i]`` per sequence). Padded per-frame labels
are :data:`IGNORE` (-100, what cross-entropy ignores); scoring uses the true lengths anyway.

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

__all__ = ["RawSplits", "Prepared", "IGNORE", "to_sequences", "to_tokens", "per_frame_labels", "prepare"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: the label of a padded frame (per-frame tasks): PyTorch's cross-entropy ignore index
IGNORE = -100


@dataclass(frozen=True)
class RawSplits:
    """A loaded data source before splitting, label encoding and normalisation.

    Sequences are time-major float arrays ``[T_i, C]``, or int64 token ids ``[T_i]`` when
    ``padding_id`` is set (the id that pads them); labels are any sortable values, one per
    sequence (an array ``[N]``) or one per frame (a list of arrays ``[T_i]``, see
    :func:`per_frame_labels`). The arrays are shared through the in-process cache and marked read-only.
    """

    x_train: list[np.ndarray]
    y_train: np.ndarray | list[np.ndarray]
    x_test: list[np.ndarray]
    y_test: np.ndarray | list[np.ndarray]
    padding_id: int | None = None


@dataclass(frozen=True)
class Prepared:
    """Padded ``[N, T_max, C]`` float32 inputs (token ids: ``[N, T_max]`` int64), int64 lengths and labels
    (``[N]``, or per frame ``[N, T_max]`` padded with :data:`IGNORE`) per split. ``mean``/``std`` are
    None for token ids (nothing to normalise); ``vocab_size`` is None for float inputs."""

    x: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    class_names: list[str]
    mean: np.ndarray | None
    std: np.ndarray | None
    padding_id: int | None = None
    vocab_size: int | None = None

    @property
    def per_frame(self) -> bool:
        return self.y["train"].ndim == 2


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


def to_tokens(x, *, padding_id: int, what: str) -> list[np.ndarray]:
    """Convert token sequences (a list of 1-D integer arrays, or ``[N, T]`` padded with ``padding_id``) to read-only int64 arrays.

    Raises:
        TaskError: a sequence that is not 1-D, holds non-integers or negative ids, or has no tokens.
    """
    if isinstance(x, np.ndarray) and x.dtype != object and x.ndim == 2:
        items = [row[: int(np.nonzero(row != padding_id)[0].max()) + 1] if (row != padding_id).any() else row[:0] for row in x]
    elif isinstance(x, Sequence | np.ndarray):
        items = list(x)
    else:
        raise TaskError(f"{what}: expected token ids (a list of 1-D integer arrays, or [N, T]), got {type(x).__name__}")
    out = []
    for i, item in enumerate(items):
        a = np.asarray(item)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise TaskError(f"{what}[{i}]: token ids must be a 1-D integer array, got {a.dtype} of shape {a.shape}")
        if a.size == 0:
            raise TaskError(f"{what}[{i}]: sequence has no tokens")
        if int(a.min()) < 0:
            raise TaskError(f"{what}[{i}]: token ids must be >= 0, got {int(a.min())}")
        a = a.astype(np.int64)
        a.flags.writeable = False
        out.append(a)
    if not out:
        raise TaskError(f"{what}: no sequences")
    return out


def per_frame_labels(y) -> bool:
    """Whether ``y`` holds one label sequence per sequence (a list of 1-D arrays, or a 2-D array) rather than one label each."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        return y.ndim == 2
    if isinstance(y, Sequence | np.ndarray) and len(y) and not isinstance(y, str):
        return all(np.ndim(item) == 1 for item in y)
    return False


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


def _frame_labels(y, seqs: list[np.ndarray], name: str, split: str) -> np.ndarray:
    """Per-frame labels of a split, checked against the sequences' lengths and concatenated."""
    items = list(y)
    if len(items) != len(seqs):
        raise TaskError(f"task {name!r}: the {split} split has {len(seqs)} sequences but {len(items)} label sequences")
    for i, (labels, seq) in enumerate(zip(items, seqs)):
        if np.ndim(labels) != 1 or len(labels) != len(seq):
            raise TaskError(
                f"task {name!r}: {split} sequence {i} has {len(seq)} steps but {np.shape(labels)} per-frame labels; "
                "give one label per step"
            )
    return np.concatenate([np.asarray(labels) for labels in items])


def _labels(raw: RawSplits, name: str) -> tuple[list | np.ndarray, list | np.ndarray, list[str]]:
    """Encoded labels of train and test (per sequence ``[N]``, or per frame: one int64 array per sequence) and the class names."""
    frames = per_frame_labels(raw.y_train)
    if frames != per_frame_labels(raw.y_test):
        raise TaskError(f"task {name!r}: train labels are {'per frame' if frames else 'per sequence'} but test labels are not")
    if not frames:
        return _encode(raw.y_train, raw.y_test, name, len(raw.x_train), len(raw.x_test))
    flat_train = _frame_labels(raw.y_train, raw.x_train, name, "train")
    flat_test = _frame_labels(raw.y_test, raw.x_test, name, "test")
    enc_train, enc_test, classes = _encode(flat_train, flat_test, name, len(flat_train), len(flat_test))
    cut = lambda enc, seqs: np.split(enc, np.cumsum([len(x) for x in seqs])[:-1])  # noqa: E731
    return cut(enc_train, raw.x_train), cut(enc_test, raw.x_test), classes


def _pad_labels(labels, t_max: int) -> np.ndarray:
    if not isinstance(labels, list):
        return labels
    out = np.full((len(labels), t_max), IGNORE, dtype=np.int64)
    for i, y in enumerate(labels):
        out[i, : len(y)] = y
    return out


def _pad_tokens(seqs: list[np.ndarray], t_max: int, padding_id: int) -> np.ndarray:
    out = np.full((len(seqs), t_max), padding_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


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

    Validation comes from train (stratified by label, seeded by ``seed``; per-frame tasks
    unstratified); the test split is the source's own. Per-channel mean/std are fitted on the
    valid time steps of the train split only; padding stays exactly zero. Token ids are padded
    with their padding id and not normalised; per-frame labels are padded with :data:`IGNORE`.

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
    tokens = raw.padding_id is not None
    if not tokens:
        _check_finite(name, "train", raw.x_train)
        _check_finite(name, "test", raw.x_test)
        channels = {s.shape[1] for s in raw.x_train} | {s.shape[1] for s in raw.x_test}
        if len(channels) != 1:
            raise TaskError(
                f"task {name!r}: sequences have different channel counts {sorted(channels)}"
            )
    y_train, y_test, class_names = _labels(raw, name)
    frames = isinstance(y_train, list)
    # per-frame tasks split by sequence without stratification (a sequence holds several classes)
    tr, va = _split_train_val(np.zeros(len(y_train), dtype=np.int64) if frames else y_train, val_fraction, seed, name)
    seqs = {
        "train": [raw.x_train[i] for i in tr],
        "val": [raw.x_train[i] for i in va],
        "test": raw.x_test,
    }
    pick = (lambda y, idx: [y[i] for i in idx]) if frames else (lambda y, idx: y[idx])
    labels = {"train": pick(y_train, tr), "val": pick(y_train, va), "test": y_test}
    t_max = max(len(s) for split in SPLITS for s in seqs[split])
    lengths = {k: np.array([len(s) for s in seqs[k]], dtype=np.int64) for k in SPLITS}
    y = {k: _pad_labels(labels[k], t_max) for k in SPLITS}
    if tokens:
        vocab = max(int(raw.padding_id), *(int(s.max()) for split in SPLITS for s in seqs[split])) + 1
        x = {k: _pad_tokens(seqs[k], t_max, int(raw.padding_id)) for k in SPLITS}
        return Prepared(x, lengths, y, class_names, None, None, int(raw.padding_id), vocab)
    steps = np.concatenate(seqs["train"], axis=0)
    mean = steps.mean(axis=0)
    std = steps.std(axis=0)
    std[std == 0] = 1.0
    if not normalize:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    return Prepared(
        x={k: _pad(seqs[k], t_max, mean, std) for k in SPLITS},
        lengths=lengths,
        y=y,
        class_names=class_names,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
    )

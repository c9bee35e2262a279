"""Tiny generated tasks for fast tests: ``synthetic:<name>``, deterministic in the seed.

Every task has unequal sequence lengths, so padding and packing code paths run.
``brackets`` gives token ids (padding id 0) and needs the recurrence: whether a string of
brackets, with noise tokens between them, is balanced. Half the unbalanced strings hold as
many opening as closing brackets (they close one too early), so counting tokens, all a
bag of embeddings can do, is not enough.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable

import numpy as np

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks.options import Option
from autoprune.tasks.sequences import RawSplits

__all__ = ["OPTIONS", "SYNTHETIC_TASKS", "resolve"]

OPTIONS = {
    "n_train": Option(int, 200, "training sequences (validation is carved from them)", min=4),
    "n_test": Option(int, 100, "test sequences", min=2),
    "n_channels": Option(int, None, "input channels (default: sines 3, parity 1; brackets: noise tokens, default 6)", min=1),
    "n_classes": Option(
        int, None, "classes (default: sines 3, parity 2 = count of ones mod n_classes; brackets: 2)", min=2
    ),
    "min_len": Option(int, 5, "shortest sequence", min=1),
    "max_len": Option(int, 20, "longest sequence", min=1),
    "noise": Option((int, float), 0.1, "std of the added Gaussian noise", min=0),
}


def _lengths_labels(rng, n: int, o: dict) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(o["min_len"], o["max_len"] + 1, size=n)
    labels = rng.permutation(np.arange(n) % o["n_classes"])  # balanced classes
    return lengths, labels


def sines(rng: np.random.Generator, n: int, o: dict):
    """Noisy sine waves; the class is the frequency (same in every channel, random phases)."""
    freqs = np.linspace(0.04, 0.3, o["n_classes"])  # cycles per step
    spacing = freqs[1] - freqs[0]
    lengths, labels = _lengths_labels(rng, n, o)
    xs = []
    for t_len, k in zip(lengths, labels, strict=True):
        f = freqs[k] + rng.uniform(-0.2, 0.2) * spacing
        t = np.arange(t_len)[:, None]
        phase = rng.uniform(0, 2 * np.pi, size=o["n_channels"])
        amp = rng.uniform(0.5, 1.5, size=o["n_channels"])
        x = amp * np.sin(2 * np.pi * f * t + phase)
        xs.append(x + o["noise"] * rng.standard_normal(x.shape))
    return xs, labels


def parity(rng: np.random.Generator, n: int, o: dict):
    """Random bits in channel 0 (other channels are noise); the class is the count of
    ones modulo ``n_classes`` -- a memory task, harder than ``sines``."""
    lengths = rng.integers(o["min_len"], o["max_len"] + 1, size=n)
    xs, labels = [], []
    for t_len in lengths:
        x = o["noise"] * rng.standard_normal((t_len, o["n_channels"]))
        bits = rng.integers(0, 2, size=t_len)
        x[:, 0] += bits
        xs.append(x)
        labels.append(int(bits.sum()) % o["n_classes"])
    return xs, np.array(labels)


#: token ids of the brackets task (noise tokens follow them; 0 pads)
OPEN, CLOSE = 1, 2


def _balanced(rng: np.random.Generator, pairs: int) -> list[int]:
    """A random balanced string of ``pairs`` bracket pairs."""
    out, depth, left = [], 0, pairs
    while left or depth:
        if left and (depth == 0 or rng.random() < 0.5):
            out.append(OPEN)
            depth, left = depth + 1, left - 1
        else:
            out.append(CLOSE)
            depth -= 1
    return out


def brackets(rng: np.random.Generator, n: int, o: dict):
    """Token ids: brackets (1 open, 2 close) among noise tokens (3..); class 1 when the brackets balance.

    Unbalanced strings are a balanced one with one bracket flipped (counts differ by two) or with
    the closing bracket of a random top-level group moved to that group's start (counts equal,
    the depth goes below 0 there), half each.
    """
    xs, labels = [], []
    for i in range(n):
        t_len = int(rng.integers(max(o["min_len"], 4), max(o["max_len"], 4) + 1))
        pairs = int(rng.integers(1, max(1, t_len // 3) + 1))
        seq = _balanced(rng, pairs)
        label = i % 2
        if not label:
            if rng.random() < 0.5:
                k = int(rng.integers(len(seq)))
                seq[k] = OPEN + CLOSE - seq[k]
            else:  # a top-level group's last bracket moves to its start: equal counts, one closes too early
                ends = list(np.nonzero(np.cumsum([1 if tok == OPEN else -1 for tok in seq]) == 0)[0])
                g = int(rng.integers(len(ends)))
                start, end = (ends[g - 1] + 1 if g else 0), ends[g]
                seq = seq[:start] + [CLOSE] + seq[start:end] + seq[end + 1 :]
        noise = rng.integers(3, 3 + o["n_channels"], size=max(0, t_len - len(seq)))
        slots = np.sort(rng.choice(t_len, size=len(seq), replace=False)) if t_len >= len(seq) else np.arange(len(seq))
        x = np.empty(max(t_len, len(seq)), dtype=np.int64)
        mask = np.zeros(len(x), dtype=bool)
        mask[slots] = True
        x[mask] = seq
        x[~mask] = noise[: int((~mask).sum())]
        xs.append(x)
        labels.append(label)
    return xs, np.array(labels)


SYNTHETIC_TASKS: dict[str, Callable] = {"sines": sines, "parity": parity, "brackets": brackets}
#: tasks whose inputs are token ids, and their padding id
TOKEN_TASKS = {"brackets": 0}
# options left at None take these per-task values
_DEFAULTS = {
    "sines": {"n_channels": 3, "n_classes": 3},
    "parity": {"n_channels": 1, "n_classes": 2},
    "brackets": {"n_channels": 6, "n_classes": 2},
}


def _generate(name: str, seed: int, o: dict) -> RawSplits:
    rng = np.random.default_rng([seed, 20240501])
    gen = SYNTHETIC_TASKS[name]
    x_train, y_train = gen(rng, o["n_train"], o)
    x_test, y_test = gen(rng, o["n_test"], o)
    for x in x_train + x_test:
        x.flags.writeable = False
    return RawSplits(x_train, y_train, x_test, y_test, padding_id=TOKEN_TASKS.get(name))


def resolve(arg: str, *, spec: str, seed: int, options: dict):
    """Validate ``synthetic:<arg>`` and return its generator.

    Args:
        arg: the name of a task in :data:`SYNTHETIC_TASKS`.
        spec: the task spec, for messages.
        seed: seed of the generator (train and test are drawn from one stream).
        options: validated :data:`OPTIONS`.

    Returns:
        A zero-argument callable returning :class:`RawSplits`.

    Raises:
        TaskError: unknown synthetic task name.
        ConfigError: ``min_len > max_len``.
    """
    if arg not in SYNTHETIC_TASKS:
        close = difflib.get_close_matches(arg, SYNTHETIC_TASKS, n=1)
        hint = f"; did you mean synthetic:{close[0]}?" if close else ""
        raise TaskError(
            f"unknown synthetic task {arg!r} in {spec!r}; valid: "
            f"{', '.join('synthetic:' + k for k in SYNTHETIC_TASKS)}{hint}"
        )
    if options["min_len"] > options["max_len"]:
        raise ConfigError(
            f"task {spec!r}: min_len ({options['min_len']}) must be <= max_len "
            f"({options['max_len']})"
        )
    opts = {k: _DEFAULTS[arg].get(k) if v is None else v for k, v in options.items()}
    return functools.partial(_generate, arg, seed, opts)

"""Tiny generated tasks for fast tests: ``synthetic:<name>``, deterministic in the seed.

Both tasks have unequal sequence lengths, so padding and packing code paths run.
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
    "n_channels": Option(int, None, "input channels (default: sines 3, parity 1)", min=1),
    "n_classes": Option(
        int, None, "classes (default: sines 3, parity 2 = count of ones mod n_classes)", min=2
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


SYNTHETIC_TASKS: dict[str, Callable] = {"sines": sines, "parity": parity}
# options left at None take these per-task values
_DEFAULTS = {
    "sines": {"n_channels": 3, "n_classes": 3},
    "parity": {"n_channels": 1, "n_classes": 2},
}


def _generate(name: str, seed: int, o: dict) -> RawSplits:
    rng = np.random.default_rng([seed, 20240501])
    gen = SYNTHETIC_TASKS[name]
    x_train, y_train = gen(rng, o["n_train"], o)
    x_test, y_test = gen(rng, o["n_test"], o)
    for x in x_train + x_test:
        x.flags.writeable = False
    return RawSplits(x_train, y_train, x_test, y_test)


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

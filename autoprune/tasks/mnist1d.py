"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package's own generator."""

from __future__ import annotations

import functools
import importlib.util
import random

import numpy as np

from autoprune.errors import TaskError
from autoprune.tasks.options import Option
from autoprune.tasks.sequences import RawSplits, to_sequences

__all__ = ["OPTIONS", "resolve"]

# The published MNIST-1D data (the pickle mnist1d downloads) is generated with seed 42.
CANONICAL_SEED = 42

OPTIONS = {
    "num_samples": Option(int, 5000, "sequences generated (80 % train, 20 % test)", min=100),
    "generator_seed": Option(
        (int, type(None)), CANONICAL_SEED,
        "seed of the generator; None uses the task seed (default 42: the published data)",
    ),
}


def _generate(num_samples: int, generator_seed: int, spec: str) -> RawSplits:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    if hasattr(args, "seed"):
        args.seed = generator_seed
    # make_dataset reseeds the global `random` and `numpy.random` states: put them back
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return RawSplits(
        x_train=to_sequences(data["x"], layout="NTC", what=f"task {spec!r} train"),
        y_train=np.asarray(data["y"]),
        x_test=to_sequences(data["x_test"], layout="NTC", what=f"task {spec!r} test"),
        y_test=np.asarray(data["y_test"]),
    )


def resolve(arg: None, *, spec: str, seed: int, options: dict):
    """Return a loader of MNIST-1D (4000 train / 1000 test, length 40, one channel).

    Args:
        arg: always ``None`` (``mnist1d`` takes no argument).
        spec: the task spec, for messages.
        seed: used as the generator seed only when ``generator_seed`` is ``None``.
        options: validated :data:`OPTIONS`.

    Returns:
        A zero-argument callable returning :class:`RawSplits`.

    Raises:
        TaskError: when the ``mnist1d`` package is not installed.
    """
    if importlib.util.find_spec("mnist1d") is None:
        raise TaskError(f"task {spec!r} needs the mnist1d package (pip install mnist1d)")
    gen_seed = options["generator_seed"]
    gen_seed = seed if gen_seed is None else gen_seed
    return functools.partial(_generate, options["num_samples"], gen_seed, spec)

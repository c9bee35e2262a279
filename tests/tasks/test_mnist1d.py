"""MNIST-1D generated offline by the mnist1d package."""

from __future__ import annotations

import random

import numpy as np
import pytest

from autoprune.errors import ConfigError
from autoprune.tasks import build_task


def test_reduced_mnist1d_shapes():
    dm = build_task("mnist1d", options={"num_samples": 500})
    assert (dm.n_train + dm.n_val, dm.n_test) == (400, 100)
    assert (dm.n_channels, dm.n_classes, dm.max_length) == (1, 10, 40)
    assert dm.class_names == [str(i) for i in range(10)]
    x, lengths, y = dm.tensors("train")
    assert x.shape == (dm.n_train, 40, 1) and bool((lengths == 40).all())


def test_default_is_the_published_dataset_and_global_rng_is_left_alone():
    random.seed(1)
    np.random.seed(1)
    expected = (random.random(), np.random.rand())
    random.seed(1)
    np.random.seed(1)
    dm = build_task("mnist1d", seed=3)
    assert (dm.n_train + dm.n_val, dm.n_test) == (4000, 1000)
    assert (random.random(), np.random.rand()) == expected
    # the generator seed is 42 (the published data) whatever the split seed
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())
    y_test = dm.tensors("test")[2].numpy()
    np.testing.assert_array_equal(y_test, reference["y_test"])


def test_generator_seed_none_follows_the_task_seed():
    a = build_task("mnist1d", seed=1, options={"num_samples": 200, "generator_seed": None})
    b = build_task("mnist1d", seed=2, options={"num_samples": 200, "generator_seed": None})
    assert not np.array_equal(a.tensors("test")[0].numpy(), b.tensors("test")[0].numpy())


def test_too_few_samples():
    with pytest.raises(ConfigError, match="'num_samples' .* must be >= 100"):
        build_task("mnist1d", options={"num_samples": 10})

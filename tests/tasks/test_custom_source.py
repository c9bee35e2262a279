"""User data sources given as module:function."""

from __future__ import annotations

import sys

import pytest

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks import SequenceDataModule, build_task

ARRAYS = """
import numpy as np

def load(seed=0, n=20):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 2))
    y = np.arange(n) % 2
    return x, y, x[:8], y[:8]

def unequal():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(t, 3)) for t in [4, 9, 5, 7] * 5]
    ys = ["cat", "dog", "emu", "cat"] * 5
    return {"x_train": xs, "y_train": ys, "x_test": xs[:6], "y_test": ys[:6]}

def with_nan():
    x = np.zeros((10, 4, 1))
    x[3, 2, 0] = np.nan
    x[5, 0, 0] = np.inf
    return x, np.arange(10) % 2, np.zeros((4, 4, 1)), np.arange(4) % 2

def wrong():
    return "data.csv"

def fails():
    return open("/no/such/file.csv")
"""


def test_arrays_tuple_with_seed_and_options(write_module):
    mod = write_module("mydata", ARRAYS)
    dm = build_task(f"{mod}:load", seed=2, options={"n": 30})
    assert isinstance(dm, SequenceDataModule)
    assert (dm.n_train + dm.n_val, dm.n_test, dm.n_channels, dm.n_classes) == (30, 8, 2, 2)
    with pytest.raises(ConfigError, match=r"unknown option 'm' .*allowed options \(the "
                                          r"function's keyword arguments\): n"):
        build_task(f"{mod}:load", options={"m": 1})


def test_unequal_lengths_and_string_labels(write_module):
    mod = write_module("mydata2", ARRAYS)
    dm = build_task(f"{mod}:unequal", val_fraction=0.25)
    assert dm.class_names == ["cat", "dog", "emu"]
    assert dm.max_length == 9 and sorted(set(dm.tensors("test")[1].tolist())) == [4, 5, 7, 9]


def test_nan_and_inf_are_reported(write_module):
    mod = write_module("mydata3", ARRAYS)
    dm = build_task(f"{mod}:with_nan")
    with pytest.raises(TaskError, match=r"task 'mydata3:with_nan': 2 of 40 values in the "
                                        r"train split are NaN or inf"):
        dm.setup()


def test_unimportable_module_is_named():
    with pytest.raises(TaskError, match=r"cannot import module 'no_such_pkg\.data'.*"
                                        r"ModuleNotFoundError"):
        build_task("no_such_pkg.data:load")


def test_module_with_syntax_error(write_module):
    mod = write_module("broken", "def load(:\n")
    with pytest.raises(TaskError, match="cannot import module 'broken'.*SyntaxError"):
        build_task(f"{mod}:load")


def test_missing_function_is_named(write_module):
    mod = write_module("mydata4", ARRAYS)
    with pytest.raises(TaskError, match="module 'mydata4' has no function 'lod'"):
        build_task(f"{mod}:lod")


def test_wrong_return_type_is_named(write_module):
    mod = write_module("mydata5", ARRAYS)
    with pytest.raises(TaskError, match=r"mydata5:wrong returned a str; allowed: a "
                                        r"LightningDataModule, a tuple"):
        build_task(f"{mod}:wrong")


def test_returned_data_module_is_used_as_is(write_module):
    mod = write_module("mydata6", """
        from autoprune.tasks import build_task

        def ready(seed=0):
            return build_task("synthetic:parity", seed=seed)
    """)
    dm = build_task(f"{mod}:ready", seed=4)
    assert dm.name == "synthetic:parity" and dm.seed == 4
    assert build_task(f"{mod}:ready") is not build_task(f"{mod}:ready")  # never cached


def test_python_file_path(tmp_path):
    path = tmp_path / "loader.py"
    path.write_text(ARRAYS)
    assert build_task(f"{path}:load").n_test == 8


def test_error_inside_the_function_is_one_task_error(write_module):
    mod = write_module("mydata7", ARRAYS)
    with pytest.raises(TaskError, match=r"mydata7:fails \(task 'mydata7:fails'\) raised "
                                        r"FileNotFoundError"):
        build_task(f"{mod}:fails")


def test_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "cwd_data.py").write_text(ARRAYS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert build_task("cwd_data:load").n_test == 8
    assert sys.path[0] == str(tmp_path)

"""Spec parsing, the registry and argument/option validation (no data loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks import TASK_KINDS, build_task, bundled_uea_datasets, list_task_kinds


def test_registry_keys_are_the_spec_prefixes():
    assert set(TASK_KINDS) == {"uea", "mnist1d", "synthetic"}
    patterns = [p for p, _ in list_task_kinds()]
    assert patterns == [
        "uea:<Name>", "uea:<path>", "mnist1d", "synthetic:<name>", "<module>:<function>"
    ]
    assert all(desc and "\n" not in desc for _, desc in list_task_kinds())


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(TaskError, match=r"unknown task kind 'mnist'.*uea:<Name>.*mnist1d.*"
                                        r"synthetic:<name>.*did you mean 'mnist1d'"):
        build_task("mnist")


def test_unknown_prefix_with_colon_is_a_module_and_says_so():
    with pytest.raises(TaskError, match=r"cannot import module 'ueaa'.*not a registered task "
                                        r"kind either.*did you mean 'uea'"):
        build_task("ueaa:JapaneseVowels")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("uea", "needs an argument: uea:<Name> or uea:<path>"),
        ("uea:", "needs an argument"),
        ("mnist1d:small", "takes no argument"),
        ("synthetic:sine", r"unknown synthetic task 'sine'.*did you mean synthetic:sines"),
        ("  ", "non-empty string"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(TaskError, match=match):
        build_task(spec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"val_fraction": 1.0}, r"val_fraction must be a number in \(0, 1\)"),
        ({"options": {"n_trian": 5}}, r"unknown option 'n_trian' for task kind 'synthetic'; "
                                      r"allowed options: max_len, min_len, n_channels"),
        ({"options": {"n_train": "5"}}, "option 'n_train' .* must be int, got '5'"),
        ({"options": {"n_train": True}}, "must be int, got True"),
        ({"options": {"n_classes": 1}}, "must be >= 2"),
        ({"options": {"min_len": 9, "max_len": 3}}, r"min_len \(9\) must be <= max_len \(3\)"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_task("synthetic:sines", **kwargs)


def test_bundled_datasets_are_discovered_from_aeon_data_dir():
    names = bundled_uea_datasets()
    assert {"JapaneseVowels", "BasicMotions", "GunPoint", "ArrowHead", "OSULeaf"} <= set(names)
    assert "Covid3Month" not in names  # a regression set


def test_import_is_light():
    code = (
        "import sys, autoprune.tasks as t; t.list_task_kinds(); t.bundled_uea_datasets(); "
        "print(sorted(m for m in ('torch', 'lightning', 'aeon', 'mnist1d', 'sklearn') "
        "if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.strip() == "[]"

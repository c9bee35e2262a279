"""Shared fixtures: one torch thread per test, a tiny synthetic study and its runs dir."""

from __future__ import annotations

import copy

import pytest
import torch

from autoprune.config import StudyConfig, config_from_dict

#: a study that trains in about a second: 2-layer LSTM of 16 units on 120 short sines
TINY_STUDY = {
    "study": "tiny",
    "seed": 0,
    "task": {"name": "synthetic:sines", "batch_size": 32, "options": {"n_train": 120, "n_test": 60, "max_len": 12}},
    "model": {"cell": "lstm", "hidden_sizes": [16]},
    "train": {"epochs": 3, "lr": 0.01, "lr_schedule": "none"},
    "measure": {"repeats": 3, "warmup": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: intra-op threads only add barrier waits (100x slower on a busy 2-core box)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runs_dir(tmp_path):
    """An empty output root for studies."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def tiny_study() -> dict:
    """A fresh copy of ``TINY_STUDY`` to change or write out as YAML."""
    return copy.deepcopy(TINY_STUDY)


@pytest.fixture
def tiny_config(tiny_study) -> StudyConfig:
    """A validated tiny study on ``synthetic:sines`` (see ``TINY_STUDY``)."""
    return config_from_dict(tiny_study, source="tiny.yaml")

"""Shared fixtures: one torch thread per test, a tiny synthetic study and its runs dir; a SIGTERM'd run tears down
like Ctrl-C, and the Ray folders the session's studies made outside pytest's temp folder are removed after it."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import tempfile
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
def _sigterm_tears_down():
    """SIGTERM (CI's timeout, ``kill``) ends the run as Ctrl-C does: pytest tears the session down, so the PostgreSQL
    and MLflow servers and Ray clusters the session fixtures started are stopped, not left running. autoprune's own
    handlers (``SignalScope``) take SIGTERM over during a search and give this one back."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def ray_folders_linked_from(root: Path) -> list:
    """The ``<temp>/ap-ray-*`` folders that studies under ``root`` link to as ``runs/<study>/ray`` (autoprune puts a
    local Ray instance's files there when the runs path is too long for Ray's sockets, as pytest's are)."""
    temp = Path(tempfile.gettempdir()).resolve()
    found = []
    for folder, dirs, files in os.walk(root):  # does not follow links
        for name in dirs + files:
            link = Path(folder) / name
            if name == "ray" and link.is_symlink():
                target = Path(os.readlink(link))
                if target.parent.resolve() == temp and target.name.startswith("ap-ray-") and target.is_dir() and target.stat().st_uid == os.getuid():
                    found.append(target)
    return found


@pytest.fixture(scope="session", autouse=True)
def _ray_folders(tmp_path_factory):
    """Remove the Ray folders this session's studies made under the system temp folder (about 7 of 300 KB a run)."""
    yield
    for target in ray_folders_linked_from(tmp_path_factory.getbasetemp()):
        shutil.rmtree(target, ignore_errors=True)


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

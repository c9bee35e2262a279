"""Fixtures for the task tests: no aeon download cache in $HOME, a fresh raw-data cache,
one torch thread."""

from __future__ import annotations

import textwrap

import pytest
import torch

from autoprune.tasks.options import clear_cache


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    # aeon looks for (and creates) its download cache under $AEON_DATA
    monkeypatch.setenv("AEON_DATA", str(tmp_path_factory.mktemp("aeon_data")))
    clear_cache()
    # tiny models: intra-op threads only add barrier waits, which on a busy machine
    # turned a 0.4 s training loop into 70 s
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    clear_cache()


@pytest.fixture
def write_module(tmp_path, monkeypatch):
    """Write ``source`` as module ``name`` into tmp_path and make it importable."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write

"""The test session cleans up after itself: a SIGTERM'd run stops its servers, and the Ray folders its studies put in
the system temp folder go with it (``tests/conftest.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def _load_conftest():
    """tests/conftest.py as a module of its own (``import conftest`` finds whichever conftest pytest imported first)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("autoprune_tests_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(tmp_path: Path, with_handler: bool) -> subprocess.Popen:
    """A pytest run whose one test waits, with a session fixture that records its teardown; started and waiting."""
    imports = textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("autoprune_tests_conftest", {str(CONFTEST)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _sigterm_tears_down = mod._sigterm_tears_down
    """) if with_handler else ""
    (tmp_path / "conftest.py").write_text(imports + textwrap.dedent("""
        import pathlib
        import pytest

        @pytest.fixture(scope="session")
        def server():
            pathlib.Path("started").write_text("")
            yield
            pathlib.Path("stopped").write_text("")  # a PostgreSQL server's pg_ctl stop, say
    """))
    (tmp_path / "test_wait.py").write_text("import time\n\ndef test_wait(server):\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_wait.py"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0] if proc.poll() is not None else "no start in 60 s"
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("with_handler", [True, False])
def test_sigterm_runs_the_session_teardown(tmp_path, with_handler):
    """With the handler, SIGTERM tears the session down as Ctrl-C does; without it (the contrast) pytest dies on the spot
    and a session fixture's server stays up."""
    proc = _session(tmp_path, with_handler)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    if with_handler:
        assert proc.returncode == 2 and (tmp_path / "stopped").exists(), out  # 2: pytest's "interrupted"
    else:
        assert proc.returncode == -signal.SIGTERM and not (tmp_path / "stopped").exists(), out


def test_only_the_ray_folders_the_studies_link_to_are_found(tmp_path):
    made = Path(tempfile.mkdtemp(prefix="ap-ray-"))
    other = Path(tempfile.mkdtemp(prefix="not-ray-"))
    try:
        (tmp_path / "runs" / "a").mkdir(parents=True)
        (tmp_path / "runs" / "a" / "ray").symlink_to(made, target_is_directory=True)
        (tmp_path / "runs" / "b").mkdir()
        (tmp_path / "runs" / "b" / "ray").symlink_to(other, target_is_directory=True)  # not an autoprune Ray folder
        (tmp_path / "runs" / "c" / "ray").mkdir(parents=True)  # Ray's files in the study itself: a folder, not a link
        (tmp_path / "runs" / "d").mkdir()
        (tmp_path / "runs" / "d" / "ray").symlink_to(tmp_path / "runs" / "a", target_is_directory=True)  # inside pytest's folder
        found = _load_conftest().ray_folders_linked_from
        assert found(tmp_path) == [made]
        assert found(tmp_path / "runs" / "b") == []
    finally:
        for path in (made, other):
            os.rmdir(path)

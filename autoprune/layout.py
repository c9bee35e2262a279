"""Where a study's files live under the runs folder: one place for every path autoprune writes.

```
<runs>/mlflow.db, mlartifacts/                the embedded MLflow store (tracking/)
<runs>/<study>/search.json                    what the search recorded: storage, tracking URI, config
              optuna.journal, search.lock     the study's storage (default) and the one-driver lock
              ask.lock                        local workers claim trials under it
              dense/<key>/                    the dense reference, cached by content hash (reference/)
              trials/<n>/model.pt, result.json   a trial's compacted weights and result
              latency_cache.json, recipe_check.json
              exports/trial-<n>/              ``autoprune export``
              prune/<policy key>/             ``autoprune prune``
              ray/r/ (ray/: mode 0700, or a link to a short 0700 folder in /tmp), ray_results/
```
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoprune.errors import ConfigError

__all__ = ["STUDY_NAME", "STUDY_NAME_MAX", "check_study_name", "StudyPaths", "study_paths", "mlflow_db", "mlflow_artifacts", "write_atomic"]

#: the one rule for a study's name (the config's ``study``, ``--study``, the STUDY argument of every
#: command): a folder name under the runs folder, never a path out of it
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
STUDY_NAME_MAX = 100


def check_study_name(study: str) -> str:
    """``study`` when it follows :data:`STUDY_NAME` (at most 100 characters).

    Raises:
        ConfigError: one line naming the value and the rule.
    """
    if not isinstance(study, str) or len(study) > STUDY_NAME_MAX or not re.fullmatch(STUDY_NAME, study):
        raise ConfigError(
            f"study name {study!r}: a study name is a folder name under the runs folder: letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit, at most {STUDY_NAME_MAX} characters (use --runs-dir to point at another runs folder)"
        )
    return study


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study under a runs folder (nothing is created here)."""

    runs_dir: Path
    study: str

    @property
    def root(self) -> Path:
        return self.runs_dir / self.study

    @property
    def meta(self) -> Path:
        return self.root / "search.json"

    @property
    def journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def lock(self) -> Path:
        return self.root / "search.lock"

    @property
    def ask_lock(self) -> Path:
        return self.root / "ask.lock"

    @property
    def dense(self) -> Path:
        return self.root / "dense"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    def trial(self, number: int) -> Path:
        return self.trials / str(number)

    @property
    def latency_cache(self) -> Path:
        return self.root / "latency_cache.json"

    @property
    def recipe_check(self) -> Path:
        return self.root / "recipe_check.json"

    def export(self, number: int) -> Path:
        return self.root / "exports" / f"trial-{number}"

    def prune(self, key: str) -> Path:
        return self.root / "prune" / key

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"


def study_paths(runs_dir: str | os.PathLike, study: str) -> StudyPaths:
    """The paths of ``study`` under ``runs_dir``.

    Raises:
        ConfigError: ``study`` is not a study name (:func:`check_study_name`): no path leaves the runs folder.
    """
    return StudyPaths(Path(runs_dir), check_study_name(study))


def mlflow_db(runs_dir: str | os.PathLike) -> Path:
    """The embedded MLflow store's database."""
    return Path(runs_dir) / "mlflow.db"


def mlflow_artifacts(runs_dir: str | os.PathLike, study: str) -> Path:
    """Where the embedded store keeps a study's artifacts."""
    return Path(runs_dir) / "mlartifacts" / study


def write_atomic(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it (mode 0600, as ``mkstemp``
    makes it), renamed over it. A full or read-only disk raises ``OSError`` and leaves nothing behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path

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

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StudyPaths", "study_paths", "mlflow_db", "mlflow_artifacts"]


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
    """The paths of ``study`` under ``runs_dir``."""
    return StudyPaths(Path(runs_dir), study)


def mlflow_db(runs_dir: str | os.PathLike) -> Path:
    """The embedded MLflow store's database."""
    return Path(runs_dir) / "mlflow.db"


def mlflow_artifacts(runs_dir: str | os.PathLike, study: str) -> Path:
    """Where the embedded store keeps a study's artifacts."""
    return Path(runs_dir) / "mlartifacts" / study

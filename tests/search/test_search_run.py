"""``run_search`` end to end on the tiny study: refusals before training, MLflow records, resume,
interrupts, locks, infeasible structures, early stopping and failing trials."""

from __future__ import annotations

import copy
import json
import math
import shutil
import time

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

import autoprune.search.trial as trial_mod
from autoprune.cli import cli
from autoprune.config import config_from_dict
from autoprune.dense import build_datamodule, ensure_dense
from autoprune.errors import ConfigError, ConstraintError, PruningError, TrialError
from autoprune.models.arch import ArchSpec
from autoprune.search.backend import StudyLock, open_study, run_search, study_paths
from autoprune.search.latency import LatencyCache, LatencySettings
from autoprune.tracking import default_tracking_uri

optuna.logging.set_verbosity(optuna.logging.WARNING)

SEARCH = {
    "trials": 4,
    "population_size": 4,
    "finetune": {"epochs": [2, 3]},
    "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0},
    "early_stop": {"after_epochs": None},
}

FRONT_KEYS = {"trial", "val_accuracy", "test_accuracy", "size_bytes", "latency_ms", "policy"}
SUMMARY_KEYS = {"study", "n_trials", "n_complete", "n_infeasible", "n_stopped_early", "n_failed", "pareto", "mlflow_experiment_id", "mlflow_parent_run_id"}


def _config(tiny_study: dict, **search):
    data = copy.deepcopy(tiny_study)
    data["search"] = {**copy.deepcopy(SEARCH), **search}
    return config_from_dict(data, source="search.yaml")


def _counted(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED))


def _runs(runs_dir, study="tiny"):
    """(parent runs, nested runs) of the study's MLflow experiment."""
    client = MlflowClient(default_tracking_uri(runs_dir))
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("autoprune.search") == "true"]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, nested


@pytest.fixture(scope="module")
def dense_seed(tmp_path_factory):
    """The tiny study's dense model, trained once per module; ``seed(runs_dir)`` copies it in."""
    from tests_conftest_shim import TINY  # noqa: F401  (placeholder, replaced below)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense_seed")
    threads = torch.get_num_threads()
    from conftest import TINY_STUDY  # tests/conftest.py (rootdir-relative import by pytest)

    ensure_dense(config_from_dict(copy.deepcopy(TINY_STUDY)), root)
    torch.set_num_threads(threads)

    def seed(runs_dir):
        shutil.copytree(root / "tiny" / "dense", runs_dir / "tiny" / "dense")
        return runs_dir

    return seed

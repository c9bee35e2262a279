"""Issue 22 (round 3), bad inputs: each is one line naming the value, exit 2, before anything is created.

A8 a database driver that is not installed, A12 a STUDY argument that leaves the runs folder,
A16 a YAML alias bomb, A19 a checkpoint whose architecture does not fit its weights, F8 MLflow's file store.
"""

from __future__ import annotations

import time

import pytest
import torch

from autoprune.errors import ConfigError

from .conftest import run_cli, study_yaml

pytestmark = pytest.mark.faults


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "url, module",
    [("mysql://apuser:S3cr3t_A8@127.0.0.1:1/optuna", "MySQLdb"), ("postgresql+pg8000://apuser:S3cr3t_A8@127.0.0.1:1/optuna", "pg8000")],
)
@pytest.mark.parametrize("option", ["--storage", "--tracking-uri"])
def test_a8_driver_not_installed_is_one_line(work, url, module, option):
    pytest.importorskip("sqlalchemy")
    try:
        __import__(module)
        pytest.skip(f"{module} is installed here")
    except ImportError:
        pass
    cfg = study_yaml(work / "s.yaml")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg), option, url], work))
    assert "the database driver is not installed" in line and module in line
    assert "S3cr3t_A8" not in line and "apuser:***@" in line
    assert not (work / "runs" / "tiny").exists()


@pytest.mark.parametrize("url", ["postgresql+psycopg3://apuser:S3cr3t_A7@127.0.0.1:1/optuna", "postgres://apuser:S3cr3t_A7@127.0.0.1:1/optuna"])
def test_a7_unknown_driver_name_hides_the_password(work, url):
    cfg = study_yaml(work / "s.yaml")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg), "--storage", url], work))
    assert "S3cr3t_A7" not in line and "apuser:***@127.0.0.1:1/optuna" in line


def test_urls_are_shown_and_written_without_their_password():
    from autoprune.services.urls import has_password, same_place, shown, written

    url = "postgresql+psycopg://apuser:p%40ss/w:rd@db.example:5432/optuna?sslmode=require&password=again"
    assert shown(url) == "postgresql+psycopg://apuser:***@db.example:5432/optuna?sslmode=require&password=***"
    assert written(url) == "postgresql+psycopg://apuser@db.example:5432/optuna?sslmode=require"
    assert has_password(url) and not has_password(written(url))
    assert same_place(url, "postgresql+psycopg://apuser:other@db.example:5432/optuna?sslmode=require")
    assert not same_place(url, "postgresql+psycopg://apuser@db.example:5432/other?sslmode=require")
    for plain in ("runs/tiny/optuna.journal", "sqlite:////tmp/x.db", "http://127.0.0.1:5000"):
        assert shown(plain) == written(plain) == plain


def test_a12_study_argument_outside_the_runs_folder_is_refused(work):
    for command in (["pareto", "../elsewhere/tiny"], ["export", "../elsewhere/tiny"], ["dashboard", "a/b"], ["ui", "../x"]):
        line = _one_error_line(run_cli(["--runs-dir", "runs", *command], work))
        assert f"study name '{command[1]}'" in line and "a folder name under the runs folder" in line, line
    cfg = study_yaml(work / "s.yaml")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg), "--study", "../up"], work))
    assert "study" in line and "'../up'" in line
    assert not (work / "up").exists() and not (work / "runs" / "tiny").exists()


def test_a12_one_rule_for_study_names():
    from autoprune.config import StudyConfig
    from autoprune.layout import STUDY_NAME, check_study_name, study_paths

    assert STUDY_NAME in [getattr(m, "pattern", None) for m in StudyConfig.model_fields["study"].metadata]  # the config checks the same rule
    for bad in ("..", "../x", "a/b", ".hidden", "", "x" * 101, "a\\b"):
        with pytest.raises(ConfigError, match="a folder name under the runs folder"):
            study_paths("runs", bad)
    assert check_study_name("jv_lstm-2.1") == "jv_lstm-2.1"


def test_a16_alias_bomb_is_refused_fast(work):
    from autoprune.yamlio import MAX_VALUES, load_yaml_text

    levels = "abcdefgh"
    text = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip(levels, levels[1:])
    )
    path = work / "bomb.yaml"
    path.write_text(text)
    started = time.perf_counter()
    line = _one_error_line(run_cli(["--runs-dir", "runs", "train", str(path)], work))
    assert f"{path}: the document expands to more than {MAX_VALUES:,} values through its aliases" in line
    assert time.perf_counter() - started < 30  # the whole CLI start included; expanding it took 18 s and 1.4 GB
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml_text("a: &a [1, *a]\n", "recursive.yaml")
    assert load_yaml_text("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", "ok.yaml") == {"base": {"x": 1}, "other": {"x": 1, "y": 2}}


def _tampered(tmp_path, change):
    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier

    model = RNNClassifier(ArchSpec("lstm", 3, [[8]], 2))
    payload = {"format": 1, "arch": change(model.spec.to_dict()), "state_dict": model.state_dict(), "policy": {}, "study": "tiny"}
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    return path


def test_a19_arch_that_does_not_fit_its_weights_is_a_checkpoint_error(tmp_path):
    from autoprune.models.checkpoints import CheckpointError
    from autoprune.reference.cache import load_dense_model
    from autoprune.trial.result import load_trial_model

    wider = _tampered(tmp_path, lambda a: {**a, "hidden_sizes": [[s + 1 for s in layer] for layer in a["hidden_sizes"]]})
    for load in (load_trial_model, load_dense_model):
        with pytest.raises(CheckpointError, match=r"model\.pt: its weights do not fit its architecture \(size mismatch"):
            load(wider)
    not_an_arch = _tampered(tmp_path, lambda a: ["not", "an", "arch"])
    with pytest.raises(CheckpointError, match=r"model\.pt: not an autoprune checkpoint: its 'arch' is not an architecture"):
        load_trial_model(not_an_arch)


def test_a19_export_of_a_tampered_trial_is_one_line(work):
    cfg = study_yaml(work / "s.yaml", search={"trials": 1, "recipe_check": {"enabled": False}})
    res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg)], work, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = work / "runs" / "tiny" / "trials" / "0" / "model.pt"
    payload = torch.load(ckpt, weights_only=True)
    payload["arch"] = {**payload["arch"], "hidden_sizes": [[s + 1 for s in layer] for layer in payload["arch"]["hidden_sizes"]]}
    torch.save(payload, ckpt)
    line = _one_error_line(run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0"], work, timeout=300))
    assert "trials/0/model.pt: its weights do not fit its architecture (size mismatch" in line
    assert not (work / "runs" / "tiny" / "exports" / "trial-0").exists()


@pytest.mark.parametrize("uri", ["file:///tmp/autoprune-f8/mlruns", "./mlruns"])
def test_f8_mlflow_file_store_is_refused(work, uri):
    cfg = study_yaml(work / "s.yaml")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "search", str(cfg), "--tracking-uri", uri], work))
    assert f"--tracking-uri / MLFLOW_TRACKING_URI {uri}: MLflow's file store is not supported" in line and "sqlite:///PATH" in line
    assert not (work / "runs" / "tiny").exists() and not (work / "mlruns").exists()

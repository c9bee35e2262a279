"""The CLI: --help, tasks, train (cached), prune, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autoprune.cli import cli


@pytest.fixture
def invoke(runs_dir):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--runs-dir", str(runs_dir), *args], catch_exceptions=False)

    return run


@pytest.fixture
def config_path(tmp_path, tiny_study) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_study, sort_keys=False))
    return path


def _policy(tmp_path: Path, data: dict, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_help_lists_the_commands(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("tasks", "train", "prune"):
        assert command in result.output
    assert "--runs-dir" in result.output
    sub = invoke("prune", "--help")
    assert sub.exit_code == 0 and "--policy" in sub.output


def test_tasks_lists_kinds_and_bundled_datasets(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("AEON_DATA", str(tmp_path / "aeon"))
    result = invoke("tasks")
    assert result.exit_code == 0, result.output
    for kind in ("uea:<Name>", "mnist1d", "synthetic:<name>", "<module>:<function>"):
        assert kind in result.stdout
    assert "JapaneseVowels" in result.stdout


def test_train_json_then_cached(invoke, config_path, runs_dir):
    first = invoke("train", str(config_path), "--json")
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    for key in ("val_accuracy", "test_accuracy", "params", "checkpoint", "cached"):
        assert key in out
    assert out["cached"] is False
    assert out["study"] == "tiny"
    assert 0.0 <= out["val_accuracy"] <= 1.0 and 0.0 <= out["test_accuracy"] <= 1.0
    assert out["params"] == 4 * 16 * (3 + 16) + 2 * 4 * 16 + 16 * 3 + 3
    assert Path(out["checkpoint"]).is_file()
    assert Path(out["checkpoint"]).is_relative_to(runs_dir / "tiny" / "dense")
    second = invoke("train", str(config_path), "--json")
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["cached"] is True
    assert again["checkpoint"] == out["checkpoint"] and again["val_accuracy"] == out["val_accuracy"]
    renamed = json.loads(invoke("train", str(config_path), "--study", "other", "--json").stdout)
    assert renamed["study"] == "other" and renamed["cached"] is False


def test_train_plain_output(invoke, config_path):
    result = invoke("-q", "train", str(config_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("trained dense LSTM [16] on synthetic:sines: val accuracy ")
    assert "checkpoint: " in result.stdout
    assert invoke("-q", "train", str(config_path)).stdout.startswith("reused cached dense LSTM")


def test_bad_config_is_one_error_line_naming_the_file(invoke, tmp_path, tiny_study):
    tiny_study["model"]["hiden_sizes"] = [4]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_study))
    result = invoke("train", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}: unknown key 'model.hiden_sizes'")
    assert result.stdout == ""


def test_malformed_yaml_and_missing_file(invoke, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("study: x\nmodel: [1, 2\n")
    result = invoke("train", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {path}:") and "malformed YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = invoke("train", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'none.yaml'}: no such config file"


def test_bad_policy_is_one_error_line(invoke, config_path, tmp_path):
    policy = _policy(tmp_path, {"method": "l1", "granularity": "hidden_unit"})
    result = invoke("prune", str(config_path), "--policy", str(policy))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {policy}: method 'l1' does not support granularity 'hidden_unit'")


def test_prune_hidden_units_json(invoke, config_path, tmp_path, runs_dir):
    policy = _policy(
        tmp_path,
        {"method": "magnitude", "granularity": "hidden_unit", "sparsity": 0.5, "finetune": {"epochs": 3, "lr": 0.005}},
    )
    result = invoke("prune", str(config_path), "--policy", str(policy), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "sparsity", "hidden_sizes", "size_bytes", "dense_size_bytes", "latency_ms", "dense_latency_ms",
        "macs", "test_accuracy", "dense_test_accuracy",
    ):
        assert out.get(key) is not None, key
    assert out["dense_hidden_sizes"] == [[16]]
    assert out["hidden_sizes"] == [[8]]
    assert out["sparsity"]["hidden_units"] == {"rnn.0": 0.5}
    assert out["params"] == 4 * 8 * (3 + 8) + 2 * 4 * 8 + 8 * 3 + 3
    assert out["size_bytes"] < out["dense_size_bytes"] == 4 * out["dense_params"]
    assert out["macs"] < out["dense_macs"]
    assert out["latency_ms"] > 0 and out["dense_latency_ms"] > 0
    assert 0.0 <= out["test_accuracy"] <= 1.0
    assert out["policy"]["granularity"] == "hidden_unit"
    checkpoint = Path(out["checkpoint"])
    assert checkpoint.is_file() and checkpoint.is_relative_to(runs_dir / "tiny" / "prune")
    assert json.loads((checkpoint.parent / "result.json").read_text())["hidden_sizes"] == [[8]]


def test_prune_unstructured_json(invoke, config_path, tmp_path):
    policy = _policy(tmp_path, {"method": "magnitude", "sparsity": 0.8, "finetune": {"epochs": 3}})
    result = invoke("prune", str(config_path), "--policy", str(policy), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["hidden_sizes"] == [[16]]  # single weights: no unit removed
    assert abs(out["sparsity"]["rnn"] - 0.8) <= 0.01
    assert out["nonzero_params"] < out["params"] == out["dense_params"]
    assert out["size_bytes"] < out["dense_size_bytes"]
    assert out["macs"] == out["dense_macs"]
    assert out["compression_ratio"] > 1.0

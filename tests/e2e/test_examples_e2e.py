"""The examples of issue 20, as a user runs them: each script trains its model in plain PyTorch (fewer epochs
here), its study file runs through search (3 trials here) and a default export, and the exported TorchScript
and ONNX files, loaded without autoprune, reproduce the recorded test accuracy on the example's own data."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from autoprune.cli import cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _accuracy(files: dict, x: torch.Tensor, lengths: torch.Tensor, y: np.ndarray) -> dict:
    import onnxruntime as ort

    ts = torch.jit.load(files["torchscript"])
    sess = ort.InferenceSession(files["onnx"])
    with torch.no_grad():
        ts_pred = ts(x, lengths).argmax(1).numpy()
    onnx_pred = sess.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})[0].argmax(1)
    return {"torchscript": float((ts_pred == y).mean()), "onnx": float((onnx_pred == y).mean())}


@pytest.mark.parametrize("example, script, epochs", [("crnn_kws", "speakers", 20), ("text_lstm", "reviews", 10)])
def test_example_trains_searches_exports_and_its_files_reproduce_the_accuracy(tmp_path, monkeypatch, example, script, epochs):
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    for name in [m for m in sys.modules if m.startswith("examples")]:
        monkeypatch.delitem(sys.modules, name)
    mod = importlib.import_module(f"examples.{example}.{script}")
    monkeypatch.setattr(sys, "argv", [script, "--epochs", str(epochs)])
    mod.main()  # the example's own plain-PyTorch training, as `python examples/<example>/<script>.py` runs it
    torch.manual_seed(0)
    runner = CliRunner()
    res = runner.invoke(cli, ["--runs-dir", "runs", "-q", "search", f"examples/{example}/study.yaml", "--trials", "3", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_complete"] >= 2 and summary["dense"]["test_accuracy"] > 0.8
    res = runner.invoke(cli, ["--runs-dir", "runs", "export", example, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    data = mod.load_data()
    x_test, y_test = (data["x_test"], data["y_test"]) if isinstance(data, dict) else data[2:]
    x, lengths = mod.pad(x_test)  # the example's own data, padded by the example's own helper
    got = _accuracy(out["files"], x, lengths, np.asarray(y_test))
    assert got["torchscript"] == pytest.approx(out["test_accuracy"], abs=1e-9)
    assert got["onnx"] == pytest.approx(out["test_accuracy"], abs=1e-9)

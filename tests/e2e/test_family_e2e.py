"""The wider family end to end through the CLI (issue 20): a per-frame task (who is speaking, built from
JapaneseVowels) and a token task (brackets) with models autoprune trains, through search and a default
export; the exported TorchScript and ONNX files, loaded without autoprune, reproduce the recorded test
accuracy on test_set.npz. Before that, a model that cannot take its task's data is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from autoprune.cli import cli

FRAMES = {
    "study": "frames_e2e",
    "task": {"name": "uea:JapaneseVowels", "batch_size": 16, "val_fraction": 0.25, "options": {"frames": True}},
    "model": {"cell": "lstm", "hidden_sizes": [24], "front": [{"kind": "conv1d", "out": 12, "kernel": 3, "padding": 1}, "batchnorm", "relu"],
              "pooling": "none", "head": [{"kind": "linear", "out": 16}, "relu"]},
    "train": {"epochs": 12, "lr": 0.01},
}
TOKENS = {
    "study": "tokens_e2e",
    "task": {"name": "synthetic:brackets", "batch_size": 32, "options": {"n_train": 800, "n_test": 200}},
    "model": {"cell": "gru", "hidden_sizes": [24], "front": [{"kind": "embedding", "dim": 8}], "pooling": "last", "head": [{"kind": "linear", "out": 8}, "relu"]},
    "train": {"epochs": 25, "lr": 0.005},
}
SEARCH = {
    "trials": 3, "population_size": 2, "methods": ["magnitude"], "granularities": ["hidden_unit"], "sparsity": {"units": [0.2, 0.5]},
    "finetune": {"epochs": [2, 2]}, "schedule": {"kinds": ["one_shot"], "end_before_last": 0}, "early_stop": {"after_epochs": None},
    "recipe_check": {"enabled": False},
}


def _write(tmp_path, study: dict, **model) -> str:
    path = tmp_path / f"{study['study']}.yaml"
    path.write_text(json.dumps({**study, "model": {**study["model"], **model}, "measure": {"repeats": 3, "warmup": 1}, "search": SEARCH}))
    return str(path)


def test_a_model_that_cannot_take_its_tasks_data_is_refused_in_one_line(tmp_path):
    runs = str(tmp_path / "runs")
    for study, model, expected in [
        (TOKENS, {"front": None}, "model: task synthetic:brackets gives token ids: the model's front-end must start with an embedding"),
        (FRAMES, {"pooling": "mean"}, "model: task uea:JapaneseVowels gives one label per frame: the model needs pooling: none (one output per frame), not 'mean'"),
        (FRAMES, {"front": [{"kind": "conv1d", "out": 4, "kernel": 3, "stride": 2}]},
         "model: front[0]: a per-frame model (pooling: none) must keep one output per input frame, but this conv1d"),
    ]:
        res = CliRunner().invoke(cli, ["--runs-dir", runs, "train", _write(tmp_path, study, **model)])
        assert res.exit_code == 2, res.output
        line = res.stderr.strip()
        assert "\n" not in line and expected in line, line
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))


def _accuracy_of_files(files: dict, npz: str) -> dict:
    """Each exported file's accuracy on its own test set, loaded with torch / onnxruntime only, scored per frame when per-frame."""
    import onnxruntime as ort

    data = np.load(npz)
    x, lengths, y = data["x"], data["lengths"], data["y"]
    ts = torch.jit.load(files["torchscript"])
    sess = ort.InferenceSession(files["onnx"])
    out = {}
    for name, run in [("torchscript", lambda xb, lb: ts(torch.from_numpy(xb), torch.from_numpy(lb)).detach().numpy()),
                      ("onnx", lambda xb, lb: sess.run(None, {"x": xb, "lengths": lb})[0])]:
        correct = total = 0
        for i in range(len(lengths)):  # one sequence at a time, trimmed to its length, as deployed
            n = int(lengths[i])
            pred = run(x[i : i + 1, :n], lengths[i : i + 1]).argmax(-1)[0]
            truth = y[i, :n] if y.ndim == 2 else y[i]
            correct += int((pred == truth).sum())
            total += n if y.ndim == 2 else 1
        out[name] = correct / total
    return out


@pytest.mark.slow
@pytest.mark.parametrize("study", [FRAMES, TOKENS], ids=["per-frame", "tokens"])
def test_family_tasks_search_and_export_reproduced_without_autoprune(tmp_path, study):
    runs = str(tmp_path / "runs")
    config = _write(tmp_path, study)
    runner = CliRunner()
    res = runner.invoke(cli, ["--runs-dir", runs, "-q", "search", config, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_complete"] >= 2
    assert summary["dense"]["test_accuracy"] > (0.6 if study is FRAMES else 0.8)  # learned: chance is 1/9 of frames, or 1/2
    res = runner.invoke(cli, ["--runs-dir", runs, "export", study["study"], "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    card = json.loads(Path(out["model_card"]).read_text())
    assert ("token ids" in card["inputs"]) == (study is TOKENS) and ("one per frame" in card["inputs"]) == (study is FRAMES)
    got = _accuracy_of_files(out["files"], out["out_dir"] + "/test_set.npz")
    assert got["torchscript"] == pytest.approx(out["test_accuracy"], abs=1e-9)
    assert got["onnx"] == pytest.approx(out["test_accuracy"], abs=1e-9)

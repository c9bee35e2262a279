"""Issue 22 (round 3), export: nothing a user owns is replaced (G5), a copied runs folder logs into its own
MLflow store (A25), an unreachable tracking server is refused before any file is written (G18), and a
folder that cannot be written is one line with nothing partial left (F2/F4)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from .conftest import run_cli, study_yaml

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A working folder whose runs/ holds a 2-trial search of the tiny study."""
    work = tmp_path_factory.mktemp("export_round3")
    (work / "runs").mkdir()
    cfg = study_yaml(work / "s.yaml", search={"trials": 2, "recipe_check": {"enabled": False}})
    res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg)], work, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return work


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_g5_force_never_replaces_a_users_folder(searched):
    work = searched
    sandbox = work / "sandbox"
    (sandbox / "sub").mkdir(parents=True)
    (sandbox / "important.txt").write_text("precious")
    line = _one_error_line(run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0", "--out", str(sandbox), "--force"], work))
    assert f"--out {sandbox} --force: the folder holds what autoprune did not write (important.txt, sub/)" in line
    assert (sandbox / "important.txt").read_text() == "precious" and (sandbox / "sub").is_dir()

    before = _tree(work / "runs")
    for out in (work / "runs", work / "runs" / "tiny"):
        line = _one_error_line(run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0", "--out", str(out), "--force"], work))
        assert "--force replaces only a previous export" in line
    assert _tree(work / "runs") == before  # the study, its journal and the MLflow store all kept

    # a previous export is what --force replaces
    out = work / "exported"
    res = run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0", "--out", str(out), "--format", "state_dict"], work, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "1", "--out", str(out), "--format", "onnx", "--force"], work, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.onnx", "model_card.json", "test_set.npz"]
    assert json.loads((out / "model_card.json").read_text())["trial"] == 1
    assert not [p for p in work.iterdir() if p.name.startswith(".exported")]


def test_a25_copied_runs_folder_logs_into_its_own_store(searched, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(searched / "runs", copy / "runs")
    original_db = searched / "runs" / "mlflow.db"

    def logged(db):
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from logged_models").fetchone()[0]

    before = logged(original_db)
    original_files = _tree(searched / "runs")
    res = run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0", "--format", "state_dict", "--json"], copy, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["mlflow_model_uri"]
    assert logged(original_db) == before and _tree(searched / "runs") == original_files  # the original folder untouched
    assert logged(copy / "runs" / "mlflow.db") == before + 1
    with sqlite3.connect(copy / "runs" / "mlflow.db") as conn:
        locations = [r[0] for r in conn.execute("select artifact_location from logged_models")]
    assert locations and all(str(copy / "runs") in loc for loc in locations[-1:])


def test_g18_unreachable_tracking_uri_is_refused_before_writing(searched):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = searched / "g18"
    started = time.perf_counter()
    line = _one_error_line(run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", "0", "--out", str(out), "--tracking-uri", f"http://127.0.0.1:{port}"],
                                   searched, timeout=300))
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in line
    assert time.perf_counter() - started < 120  # it took 275 s of MLflow's retries
    assert not out.exists()


def test_e4_each_int8_file_reports_its_own_accuracy(tmp_path):
    work = tmp_path
    (work / "runs").mkdir()
    """E4: an int8 trial of an onnxruntime study exported as TorchScript and ONNX: each file's own test accuracy
    (torch int8 and ORT int8 score differently), in the headline, the card and the README; and how often each
    agrees with the float32 model, measured."""
    cfg = study_yaml(work / "s.yaml", measure={"runtime": "onnxruntime"},
                     search={"trials": 2, "methods": ["magnitude"], "granularities": ["hidden_unit"], "quantize": ["int8"],
                             "finetune": {"epochs": [2, 2]}, "recipe_check": {"enabled": False}, "warm_start": False})
    res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg)], work, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(run_cli(["--runs-dir", "runs", "pareto", "tiny", "--all", "--json"], work).stdout)
    row = next(r for r in rows if r["state"] == "complete")
    result = json.loads((work / "runs" / "tiny" / "trials" / str(row["trial"]) / "result.json").read_text())
    correct, n = result["int8"]["test_correct"], result["int8"]["n_test"]
    out = work / "e4"
    res = run_cli(["--runs-dir", "runs", "export", "tiny", "--trial", str(row["trial"]), "--format", "torchscript", "--format", "onnx", "--out", str(out)],
                  work, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["test_accuracy_per_file"] == {"torchscript": correct["torch"] / n, "onnx": correct["onnxruntime"] / n}
    headline = res.stdout.splitlines()[0]
    if correct["torch"] == correct["onnxruntime"]:
        assert f"test accuracy {correct['torch'] / n:.4f} (dense" in headline
    else:
        assert f"{correct['torch'] / n:.4f} (torchscript: torch), {correct['onnxruntime'] / n:.4f} (onnx: onnxruntime)" in headline
    float_acc = result["int8"]["float_test_accuracy"]
    for name in ("torchscript", "onnx"):
        agree = card["verification"][name]["agrees_with_float32"]
        # predictions that differ from float32 on k sequences move the accuracy by at most k / n
        assert 0.0 < agree <= 1.0 - abs(card["test_accuracy_per_file"][name] - float_acc) + 1e-9, (name, agree)
        assert round(agree * n) == pytest.approx(agree * n)
    assert card["test_accuracy"] == row["test_accuracy"]  # the trial's, as searched (ONNX Runtime)
    readme = (out / "README.md").read_text()
    assert f"{correct['torch'] / n:.4f}" in readme and f"{correct['onnxruntime'] / n:.4f}" in readme

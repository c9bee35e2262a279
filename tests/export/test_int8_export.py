"""Export of int8 trials through the format registry: files in each runtime, exact accuracy, refusals."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
import torch

from autoprune.config import config_from_dict
from autoprune.errors import ExportError
from autoprune.export import export
from autoprune.export.formats import FORMATS
from autoprune.search.pareto import trial_row
from autoprune.search.run import run_search
from autoprune.search.study import open_study

_spec = importlib.util.spec_from_file_location("_autoprune_tests_root_conftest_int8", Path(__file__).parents[1] / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
TINY_STUDY = _root_conftest.TINY_STUDY


@pytest.fixture(scope="module")
def int8_study(tmp_path_factory):
    """A 2-trial hidden-unit search of the tiny LSTM study, every trial int8 in ONNX Runtime."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("int8") / "runs"
    data = copy.deepcopy(TINY_STUDY)
    data["measure"]["runtime"] = "onnxruntime"
    data["search"] = {
        "trials": 2,
        "methods": ["magnitude"],
        "granularities": ["hidden_unit"],
        "quantize": ["int8"],
        "finetune": {"epochs": [2, 2]},
        "schedule": {"end_before_last": 0},
        "early_stop": {"after_epochs": None},
    }
    try:
        run_search(config_from_dict(data, source="tiny.yaml"), str(runs))
    finally:
        torch.set_num_threads(threads)
    st, _ = open_study("tiny", str(runs))
    rows = [trial_row(t) for t in st.trials]
    done = [r for r in rows if r["state"] == "complete"]
    assert done, rows
    return runs, done[0]


def _result(row):
    return json.loads((Path(row["checkpoint"]).parent / "result.json").read_text())


@pytest.mark.slow
def test_int8_export_files_reproduce_the_recorded_counts_without_autoprune(int8_study, tmp_path):
    runs, row = int8_study
    result = _result(row)
    assert result["precision"] == "int8" and row["policy"]["quantize"] == "int8"
    res = export("tiny", str(runs), trial=row["trial"], formats=["onnx", "torchscript", "state_dict"], out_dir=str(tmp_path / "out"))
    assert res.mlflow_model_uri  # the torch int8 module and the int8 ONNX graph logged to the trial's run
    out = Path(res.out_dir)
    card = json.loads((out / "model_card.json").read_text())
    assert card["precision"] == "int8" and card["size_bytes"] == row["size_bytes"] < result["int8"]["float_size_bytes"]
    assert card["compression_ratio"] == pytest.approx(card["dense"]["size_bytes"] / card["size_bytes"])
    assert set(card["verification"]) == {"onnx", "torchscript", "state_dict"}
    assert card["verification"]["onnx"]["tolerance"] == FORMATS["onnx"].tolerance["int8"]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops
    readme = (out / "README.md").read_text()
    assert "Precision: int8" in readme and "ONNX Runtime int8" in readme and "TorchScript int8" in readme
    expected = result["int8"]["test_correct"]
    code = textwrap.dedent(
        """
        import sys, json
        sys.modules["autoprune"] = None  # any import of autoprune now raises
        import numpy as np, onnxruntime as ort, torch
        out = sys.argv[1]
        data = np.load(out + "/test_set.npz")
        x, lengths, y = data["x"], data["lengths"], data["y"]
        ts = torch.jit.load(out + "/model.torchscript.pt")
        sess = ort.InferenceSession(out + "/model.onnx", providers=["CPUExecutionProvider"])
        got = {"onnxruntime": 0, "torch": 0}
        for i in range(len(y)):  # one sequence per call: dynamic int8 scales depend on the batch
            n = int(lengths[i])
            xi, li = x[i : i + 1, :n], lengths[i : i + 1]
            got["onnxruntime"] += int(sess.run(None, {"x": xi, "lengths": li})[0].argmax(1)[0] == y[i])
            with torch.inference_mode():
                got["torch"] += int(ts(torch.from_numpy(xi), torch.from_numpy(li)).argmax(1)[0] == y[i])
        print(json.dumps(got))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected
    assert res.test_accuracy == row["test_accuracy"] == expected["onnxruntime"] / result["int8"]["n_test"]


@pytest.mark.slow
def test_int8_artifact_failing_verification_is_refused_and_nothing_written(int8_study, tmp_path):
    runs, row = int8_study
    path = Path(row["checkpoint"]).parent / "result.json"
    original = path.read_text()
    data = json.loads(original)
    data["int8"]["test_correct"]["onnxruntime"] += 1  # the file will get one fewer right than "recorded"
    path.write_text(json.dumps(data))
    out = tmp_path / "refused"
    try:
        with pytest.raises(ExportError, match=r"onnx export \(int8, onnxruntime\) gets \d+/60 test sequences right \(accuracy [\d.]+\); the trial recorded \d+/60"):
            export("tiny", str(runs), trial=row["trial"], formats=["onnx"], out_dir=str(out), log_mlflow=False)
    finally:
        path.write_text(original)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".refused")]  # no staging folder left


def test_registry_entries_are_complete():
    from autoprune.export.formats import int8_unsupported

    assert int8_unsupported(FORMATS["onnx"], "gru") == "--format onnx runs in onnxruntime, which has no int8 GRU kernel"
    assert int8_unsupported(FORMATS["onnx"], "lstm") is None and int8_unsupported(FORMATS["torchscript"], "gru") is None
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.filename and fmt.runtime in ("torch", "onnxruntime")
        assert set(fmt.tolerance) == {"float32", "int8"}
        for precision in ("float32", "int8"):
            lines = fmt.snippet(fmt.filename, precision)
            assert any(fmt.filename in line for line in lines)


@pytest.mark.slow
def test_int8_without_a_kernel_in_a_format_runtime(int8_study, tmp_path, monkeypatch):
    """As for an int8 GRU (ONNX Runtime has no int8 GRU kernel): the default set skips ONNX, an explicit --format onnx is refused."""
    import autoprune.export.exporter as formats_mod  # the exporter asks int8_unsupported from here

    runs, row = int8_study
    monkeypatch.setattr(formats_mod, "int8_unsupported", lambda fmt, cell: "--format onnx runs in onnxruntime, which has no int8 GRU kernel" if fmt.name == "onnx" else None)
    with pytest.raises(ExportError, match=rf"trial {row['trial']} is int8 and --format onnx runs in onnxruntime, which has no int8 GRU kernel; choose another --format"):
        export("tiny", str(runs), trial=row["trial"], formats=["onnx", "torchscript"], out_dir=str(tmp_path / "a"), log_mlflow=False)
    assert not (tmp_path / "a").exists()
    res = export("tiny", str(runs), trial=row["trial"], out_dir=str(tmp_path / "b"), log_mlflow=False)
    assert set(res.files) == {"torchscript", "state_dict"}


@pytest.mark.slow
def test_mlflow_trial_run_says_int8(int8_study):
    from mlflow import MlflowClient

    from autoprune.tracking.tags import TRIAL_TAG
    from autoprune.tracking.tracker import default_tracking_uri

    runs, row = int8_study
    client = MlflowClient(default_tracking_uri(runs))
    exp = client.get_experiment_by_name("tiny")
    run = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{row['trial']}'")[0]
    assert run.data.tags["autoprune.precision"] == "int8" and run.data.params["quantize"] == "int8"
    assert run.data.metrics["size_bytes"] == row["size_bytes"] < run.data.metrics["float_size_bytes"]
    assert run.data.metrics["compression_ratio"] == pytest.approx(_result(row)["dense"]["size_bytes"] / row["size_bytes"])  # against dense float32
    assert {"float_val_accuracy", "float_test_accuracy"} <= set(run.data.metrics)

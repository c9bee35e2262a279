"""``export`` of a searched tiny study: files, model card, loading without autoprune, bad input."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

import autoprune.search.objective as trial_mod  # the objective calls run_trial from here
from autoprune.cli import cli
from autoprune.config import config_from_dict
from autoprune.errors import ExportError, PruningError, TrialError
from autoprune.export import export
from autoprune.search.pareto import front_rows, knee_index, select_trial, trial_row
from autoprune.search.run import run_search
from autoprune.search.study import open_study
from autoprune.models.rnn import scored_count
from autoprune.tasks import build_datamodule

_spec = importlib.util.spec_from_file_location("_autoprune_tests_root_conftest_export", Path(__file__).parents[1] / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
TINY_STUDY = _root_conftest.TINY_STUDY

FAILED, INFEASIBLE, STOPPED = 1, 2, 3  # trial numbers made so by the fixture


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 6-trial search of the tiny study whose trial 1 fails, 2 is infeasible and 3 stops early.

    Warm starts fix the order: trials 0-3 unstructured, 4 hidden-unit at half the units.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("export") / "runs"
    data = copy.deepcopy(TINY_STUDY)
    data["search"] = {
        "trials": 6,
        "population_size": 4,
        "finetune": {"epochs": [2, 3]},
        "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0},
        "early_stop": {"after_epochs": None},
        "recipe_check": {"enabled": False},  # its unpruned run_trial call would shift the staged trial numbers
    }
    real = trial_mod.run_trial
    calls = []

    def staged(config, policy, options=None):
        calls.append(1)
        if len(calls) - 1 == FAILED:
            raise PruningError("fine-tuning produced non-finite weights; lower finetune.lr or grad_clip.value")
        if len(calls) - 1 == INFEASIBLE:
            options.max_latency_ms = 1e-9  # the structure alone breaks it: no training
        if len(calls) - 1 == STOPPED:
            options.early_stop_after, options.early_stop_max_drop = 1, -1.0  # floor above any accuracy
        return real(config, policy, options)

    mp = pytest.MonkeyPatch()
    mp.setattr(trial_mod, "run_trial", staged)
    try:
        summary = run_search(config_from_dict(data, source="tiny.yaml"), str(runs))
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    assert (summary.n_failed, summary.n_infeasible, summary.n_stopped_early, summary.n_trials) == (1, 1, 1, 7)
    return runs


@pytest.fixture(scope="module")
def knee_export(study):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = export("tiny", str(study), pick="knee", formats=["torchscript", "onnx", "state_dict"])
    finally:
        torch.set_num_threads(threads)
    return res


def _rows(study_dir):
    st, _ = open_study("tiny", study_dir)
    return st, front_rows(st)


# ---------------------------------------------------------------- a good export


@pytest.mark.slow
def test_knee_export_files_and_card(study, knee_export):
    res = knee_export
    st, front = _rows(study)
    assert res.trial == front[knee_index(front)]["trial"]
    out = Path(res.out_dir)
    assert out == study / "tiny" / "exports" / f"trial-{res.trial}"
    assert res.verified is True
    assert set(res.files) == {"torchscript", "onnx", "state_dict"}
    for path in res.files.values():
        assert Path(path).is_file() and Path(path).parent == out
    assert {p.name for p in out.iterdir()} == {"model.torchscript.pt", "model.onnx", "model_state.pt", "test_set.npz", "model_card.json", "README.md"}
    card = json.loads((out / "model_card.json").read_text())
    row = trial_row(st.trials[res.trial])
    assert card["study"] == "tiny" and card["trial"] == res.trial
    assert card["policy"] == row["policy"]
    assert card["sparsity"] and "overall" in card["sparsity"]
    assert card["hidden_sizes_before"] == [[16]] and card["hidden_sizes_after"] == row["hidden_sizes"]
    assert card["val_accuracy"] == row["val_accuracy"] and card["test_accuracy"] == row["test_accuracy"] == res.test_accuracy
    assert {"val_accuracy", "test_accuracy", "size_bytes", "params", "latency_ms", "macs"} <= set(card["dense"])
    assert card["dense"]["size_bytes"] == card["dense"]["params"] * 4
    assert 0 < card["size_bytes"] <= card["dense"]["size_bytes"] and card["size_bytes"] == res.size_bytes
    assert card["macs"] > 0
    assert {"batch_size": 1, "seq_len": 12, "threads": 1, "runtime": "torch"}.items() <= card["latency"].items()
    assert card["latency"]["export_ms"] > 0 and card["latency"]["search_ms"] == row["latency_ms"]
    for fmt, info in card["files"].items():
        assert info["bytes"] == (out / info["path"]).stat().st_size > 0
    assert set(card["files"]) == set(res.files)
    assert len(card["config_hash"]) >= 8
    assert {"torch", "autoprune", "python"} <= set(card["versions"])
    readme = (out / "README.md").read_text()
    assert "torch.jit.load('model.torchscript.pt')" in readme and "ort.InferenceSession('model.onnx')" in readme
    assert res.mlflow_model_uri and card["mlflow_model_uri"] == res.mlflow_model_uri
    # how far the validation accuracy it was chosen by can be trusted: the samples it is measured on, its standard error
    _, lengths, y = build_datamodule(config_from_dict(TINY_STUDY)).tensors("val")
    n = scored_count(y, lengths)
    assert row["n_val"] == n == card["validation"]["samples"] > 0
    p = min(max(row["val_accuracy"], 0.05), 0.95)
    assert card["validation"]["standard_error"] == pytest.approx((p * (1 - p) / n) ** 0.5)
    assert f"measured on {n} samples: one standard error is about {100 * card['validation']['standard_error']:.1f} points" in card["validation"]["note"]


@pytest.mark.slow
def test_pareto_says_how_noisy_validation_is(study):
    out = CliRunner().invoke(cli, ["--runs-dir", str(study), "pareto", "tiny"], catch_exceptions=False).output
    _, front = _rows(study)
    best = max(front, key=lambda r: r["val_accuracy"])
    assert best["n_val"] and f"noise: the most accurate point's validation accuracy {best['val_accuracy']:.4f} is measured on {best['n_val']} samples" in out


@pytest.mark.slow
def test_export_loads_without_autoprune(knee_export, tmp_path):
    """TorchScript and ONNX run in a process where ``import autoprune`` fails, with the recorded test accuracy."""
    out = Path(knee_export.out_dir)
    code = textwrap.dedent(
        """
        import sys
        sys.modules["autoprune"] = None  # any import of autoprune now raises
        try:
            import autoprune
        except ImportError:
            pass
        else:
            raise SystemExit("autoprune is importable")
        import json
        import numpy as np, onnxruntime as ort, torch
        out = sys.argv[1]
        data = np.load(out + "/test_set.npz")
        x, lengths, y = data["x"], data["lengths"], data["y"]
        ts = torch.jit.load(out + "/model.torchscript.pt")
        sess = ort.InferenceSession(out + "/model.onnx", providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            ts_logits = ts(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
        onnx_logits = sess.run(None, {"x": x, "lengths": lengths})[0]
        shapes = {}
        rng = np.random.default_rng(0)
        for b, t in ((3, 5), (7, 17)):
            xb = rng.normal(size=(b, t, x.shape[2])).astype("float32")
            lb = np.full(b, t, dtype="int64"); lb[0] = max(1, t - 2)
            xb[0, lb[0]:] = 0.0
            got = sess.run(None, {"x": xb, "lengths": lb})[0]
            with torch.inference_mode():
                ref = ts(torch.from_numpy(xb), torch.from_numpy(lb)).numpy()
            shapes[f"{b}x{t}"] = [list(got.shape), float(np.abs(got - ref).max())]
        print(json.dumps({
            "n": int(len(y)),
            "ts_correct": int((ts_logits.argmax(1) == y).sum()),
            "onnx_correct": int((onnx_logits.argmax(1) == y).sum()),
            "shapes": shapes,
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = round(knee_export.test_accuracy * got["n"])
    assert got["ts_correct"] == got["onnx_correct"] == expected
    card = json.loads((out / "model_card.json").read_text())
    n_classes = card["n_classes"]
    assert got["shapes"]["3x5"][0] == [3, n_classes] and got["shapes"]["7x17"][0] == [7, n_classes]
    assert got["shapes"]["3x5"][1] < 1e-4 and got["shapes"]["7x17"][1] < 1e-4


@pytest.mark.slow
def test_hidden_unit_export_is_physically_smaller(study, tmp_path):
    st, _ = _rows(study)
    hidden = [t for t in st.trials if t.user_attrs.get("autoprune.state") == "complete" and t.user_attrs["autoprune.policy"]["granularity"] == "hidden_unit"]
    assert hidden, "the warm start at half the units is a hidden-unit trial"
    trial = hidden[0]
    units = trial.user_attrs["autoprune.result"]["hidden_sizes"][0][0]
    assert units < 16
    res = export("tiny", str(study), trial=trial.number, formats=["onnx", "state_dict"], out_dir=str(tmp_path / "hu"), log_mlflow=False)
    assert res.model_card["hidden_sizes_after"] == [[units]] and res.model_card["hidden_sizes_before"] == [[16]]
    graph = onnx.load(res.files["onnx"]).graph
    sizes = [a.i for n in graph.node if n.op_type in ("LSTM", "GRU") for a in n.attribute if a.name == "hidden_size"]
    assert sizes == [units]
    payload = torch.load(res.files["state_dict"], weights_only=False)
    hh = [v.shape for k, v in payload["state_dict"].items() if k.endswith("weight_hh_l0")]
    assert hh == [torch.Size([4 * units, units])]


# ---------------------------------------------------------------- bad input


def test_unknown_study(runs_dir):
    with pytest.raises(TrialError, match=r"unknown study 'nope' under .*: no search has been run for it; run `autoprune search CONFIG` first"):
        export("nope", str(runs_dir))


@pytest.mark.slow
def test_unknown_study_lists_known_ones(study):
    with pytest.raises(TrialError, match=r"unknown study 'nope' .*; studies with a search: tiny"):
        export("nope", str(study))


@pytest.mark.slow
def test_unknown_trial_number(study):
    with pytest.raises(TrialError, match=r"study 'tiny' has no trial 99 \(trials 0-6\); Pareto trials: \d+ \(val "):
        export("tiny", str(study), trial=99)


@pytest.mark.slow
@pytest.mark.parametrize(
    "number, why",
    [
        (FAILED, r"is failed \(PruningError: fine-tuning produced non-finite weights; lower finetune\.lr or grad_clip\.value\)"),
        (INFEASIBLE, r"is infeasible \(latency \d+\.\d+ ms of structure \[\[16\]\] exceeds max_latency_ms=1e-09\)"),
        (STOPPED, r"is stopped early \(validation accuracy \d\.\d+ after 1 epochs is below the floor \d\.\d+ \(dense minus max drop\)\)"),
    ],
    ids=["failed", "infeasible", "stopped_early"],
)
def test_unexportable_trial_says_why_and_lists_nearest_front(study, number, why):
    _, front = _rows(study)
    nearest = sorted(front, key=lambda r: abs(r["trial"] - number))[0]["trial"]
    with pytest.raises(TrialError, match=rf"trial {number} of study 'tiny' {why} and has no model to export; nearest Pareto trials: {nearest} \(val \d\.\d{{4}}, [\d,]+ B\)"):
        export("tiny", str(study), trial=number)
    assert not (study / "tiny" / "exports" / f"trial-{number}").exists()


@pytest.mark.slow
def test_limits_no_trial_meets_name_the_closest(study):
    _, front = _rows(study)
    best = max(front, key=lambda r: (r["val_accuracy"], -r["size_bytes"]))
    with pytest.raises(TrialError, match=rf"no Pareto trial of study 'tiny' meets the limits; the closest is trial {best['trial']}: {1.01 - best['val_accuracy']:.4f} below --min-accuracy"):
        export("tiny", str(study), min_accuracy=1.01)
    smallest = min(front, key=lambda r: r["size_bytes"])
    with pytest.raises(TrialError, match=rf"the closest is trial {smallest['trial']}: {smallest['size_bytes'] - 10:,} B over --max-size-bytes"):
        export("tiny", str(study), max_size_bytes=10)


@pytest.mark.slow
def test_limits_pick_among_trials_that_meet_them(study):
    st, front = _rows(study)
    cap = min(r["size_bytes"] for r in front)
    row = select_trial(st, pick="max-accuracy", max_size_bytes=cap)
    assert row["size_bytes"] == cap
    assert select_trial(st, pick="smallest")["size_bytes"] == cap
    assert select_trial(st, pick="max-accuracy")["val_accuracy"] == max(r["val_accuracy"] for r in front)


@pytest.mark.slow
def test_default_pick_is_the_smallest_within_one_point_of_dense(study):
    st, front = _rows(study)
    dense = front[0]["dense_val_accuracy"]
    row = select_trial(st)
    keep = [r for r in front if r["val_accuracy"] >= dense - 0.01 - 1e-9]
    if keep:
        assert row["size_bytes"] == min(r["size_bytes"] for r in keep)
    else:
        assert row["val_accuracy"] == max(r["val_accuracy"] for r in front)
    assert select_trial(st, tolerance=1.0)["size_bytes"] == min(r["size_bytes"] for r in front)


@pytest.mark.slow
def test_nonempty_out_dir_needs_force(study, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=rf"output folder {out} exists and is not empty; choose another --out or pass --force to replace it"):
        export("tiny", str(study), pick="smallest", formats=["state_dict"], out_dir=str(out), log_mlflow=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # issue 22 (G5): --force replaced the user's folder whatever it held; it now replaces only a previous export
    with pytest.raises(ExportError, match=rf"--out {out} --force: the folder holds what autoprune did not write \(keep.txt\)"):
        export("tiny", str(study), pick="smallest", formats=["state_dict"], out_dir=str(out), force=True, log_mlflow=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export("tiny", str(study), pick="smallest", formats=["state_dict", "onnx"], out_dir=str(out), log_mlflow=False)
    res = export("tiny", str(study), pick="smallest", formats=["state_dict"], out_dir=str(out), force=True, log_mlflow=False)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model_card.json", "model_state.pt", "test_set.npz"]
    assert res.verified
    assert sorted(p.name for p in out.parent.iterdir()) == ["taken"]  # no staging or old folder left beside it


def test_missing_onnx_extra(runs_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"--format onnx needs the onnx extra \(onnxruntime is not installed\): pip install 'autoprune\[onnx\]'"):
        export("tiny", str(runs_dir), formats=["onnx"])
    assert list(runs_dir.iterdir()) == []


def test_cli_trial_and_pick_together_is_refused(runs_dir):
    res = CliRunner().invoke(cli, ["--runs-dir", str(runs_dir), "export", "tiny", "--trial", "0", "--pick", "knee"])
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: give either --trial or --pick, not both"


def test_cli_export_unknown_study_is_one_line(runs_dir):
    res = CliRunner().invoke(cli, ["--runs-dir", str(runs_dir), "export", "nope"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: unknown study 'nope'") and res.stderr.count("\n") == 1

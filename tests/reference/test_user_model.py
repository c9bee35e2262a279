"""A user's own trained model as the dense reference: conversion, checks, one-line errors,
and the whole path (search, pareto, export) for a 2-layer nn.LSTM trained outside autoprune."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from autoprune.cli import cli
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.reference.cache import load_dense_model
from autoprune.reference.dense import ensure_dense
from autoprune.reference.user_model import MAX_LOGIT_DIFF, convert_user_module, max_logit_diff

# A user's package: a data function (raw inputs, unequal lengths, no normalisation) and a
# plain-PyTorch 2-layer LSTM classifier trained by a plain loop, as people write them.
USER_PKG = textwrap.dedent(
    '''
    import numpy as np
    import torch
    from torch import nn

    CHANNELS, CLASSES = 3, 3


    def load_data(seed=0):
        rng = np.random.default_rng(seed)

        def make(n):
            xs, ys = [], []
            for i in range(n):
                k = i % CLASSES
                t = int(rng.integers(6, 13))
                steps = np.arange(t)[:, None]
                x = 2.0 + np.sin(steps * (0.4 + 0.5 * k) + rng.normal(0, 0.3, (1, CHANNELS))) + rng.normal(0, 0.2, (t, CHANNELS))
                xs.append(x.astype(np.float32))
                ys.append(k)
            return xs, np.array(ys)

        x_train, y_train = make(150)
        x_test, y_test = make(60)
        return x_train, y_train, x_test, y_test


    class SpeechLSTM(nn.Module):
        def __init__(self, hidden=12, bidirectional=False, batch_first=True, channels=CHANNELS, classes=CLASSES):
            super().__init__()
            self.batch_first = batch_first
            self.lstm = nn.LSTM(channels, hidden, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
            self.drop = nn.Dropout(0.1)
            self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

        def forward(self, x, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(x if self.batch_first else x.transpose(0, 1), lengths.cpu(), batch_first=self.batch_first, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            last = torch.cat([h[-2], h[-1]], 1) if self.lstm.bidirectional else h[-1]
            return self.fc(self.drop(last))


    def pad(xs):
        lengths = torch.tensor([len(x) for x in xs])
        out = torch.zeros(len(xs), int(lengths.max()), CHANNELS)
        for i, x in enumerate(xs):
            out[i, : len(x)] = torch.from_numpy(x)
        return out, lengths


    def train(model, epochs=30, seed=0):
        torch.manual_seed(seed)
        x_train, y_train, x_test, y_test = load_data()
        x, lengths = pad(x_train)
        y = torch.from_numpy(y_train)
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(y)).split(32):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx], lengths[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        xt, lt = pad(x_test)
        with torch.no_grad():  # a count over n, as autoprune computes accuracy (a float32 mean differs in the 8th digit)
            return int((model(xt, lt).argmax(1) == torch.from_numpy(y_test)).sum()) / len(y_test)


    def build():
        return SpeechLSTM()


    TRAINED = {}


    def load_trained():
        if "model" not in TRAINED:
            model = SpeechLSTM()
            TRAINED["accuracy"] = train(model)
            TRAINED["model"] = model
        return TRAINED["model"]
    '''
)


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "speech.py").write_text(USER_PKG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        monkeypatch.delitem(sys.modules, name)
    import userpkg.speech

    return userpkg.speech


def _study(model: dict, study: str = "own", **search) -> dict:
    return {
        "study": study,
        "seed": 0,
        "task": {"name": "userpkg.speech:load_data", "batch_size": 32, "val_fraction": 0.3},
        "model": model,
        "train": {"epochs": 1},
        "measure": {"repeats": 3, "warmup": 1},
        "search": {
            "trials": 4,
            "population_size": 4,
            "methods": ["magnitude"],
            "granularities": ["hidden_unit"],
            "sparsity": {"units": [0.2, 0.5]},
            "finetune": {"epochs": [2, 3], "lr": [0.001, 0.003]},
            "schedule": {"kinds": ["one_shot"], "end_before_last": 0},
            "early_stop": {"after_epochs": None},
            **search,
        },
    }


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_conversion_matches_the_users_logits(user_pkg, bidirectional, batch_first):
    torch.manual_seed(0)
    user = user_pkg.SpeechLSTM(hidden=6, bidirectional=bidirectional, batch_first=batch_first).eval()
    model = convert_user_module(user)
    assert model.hidden_sizes == [[6] * (2 if bidirectional else 1)] * 2
    x = torch.randn(9, 7, 3)
    lengths = torch.tensor([7, 3, 5, 1, 7, 2, 6, 4, 7])
    x = x * (torch.arange(7)[None, :, None] < lengths[:, None, None])
    assert max_logit_diff(user, model, x, lengths) <= MAX_LOGIT_DIFF


def test_attention_pooling_is_recognised():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 5, batch_first=True)
            self.proj = nn.Linear(5, 4)
            self.score = nn.Linear(4, 1)
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            h, _ = self.gru(x)
            w = torch.softmax(self.score(torch.tanh(self.proj(h))).squeeze(2), 1)
            return self.out((w.unsqueeze(2) * h).sum(1))

    user = Attn().eval()
    model = convert_user_module(user)
    assert model.spec.pooling == "attention" and model.spec.cell == "gru"
    x = torch.randn(4, 6, 3)
    assert max_logit_diff(user, model, x, torch.full((4,), 6)) <= MAX_LOGIT_DIFF


def test_unsupported_module_is_one_line():
    user = nn.Sequential(nn.Conv1d(3, 4, 3), nn.LSTM(4, 5), nn.Linear(5, 2))
    with pytest.raises(ConfigError, match=r"^study.yaml: model.from: unsupported module '0' \(Conv1d\) in Sequential; supported: one nn.LSTM or nn.GRU"):
        convert_user_module(user, "study.yaml: model.from")
    with pytest.raises(ConfigError, match=r"needs exactly one nn.LSTM or nn.GRU, found none"):
        convert_user_module(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ConfigError, match=r"expected one nn.Linear head taking the RNN's 5 features .*found '1' \(4->2\)"):
        convert_user_module(nn.Sequential(nn.LSTM(3, 5), nn.Linear(4, 2)))


# ---------------------------------------------------------------- errors before anything runs


def test_mismatched_classes_and_channels_are_refused_before_training(user_pkg, tmp_path, monkeypatch):
    from autoprune.reference.user_model import ensure_user_dense

    cfg = config_from_dict(_study({"checkpoint": "w.pt", "build": "userpkg.speech:build"}), source="own.yaml")
    where = "^own.yaml: model.checkpoint w.pt: "
    for built, saved, expected in [
        (dict(classes=4), dict(classes=4), where + "the model's head has 4 outputs but task userpkg.speech:load_data has 3 classes$"),
        (dict(channels=5), dict(channels=5), where + "the model takes 5 input channels but task userpkg.speech:load_data has 3$"),
        (dict(), dict(hidden=6), where + "the state dict does not fit the module model.build makes: .*size mismatch"),
    ]:
        monkeypatch.setattr(user_pkg, "build", lambda: user_pkg.SpeechLSTM(**built))
        torch.save(user_pkg.SpeechLSTM(**saved).state_dict(), tmp_path / "w.pt")
        with pytest.raises(ConfigError, match=expected):
            ensure_user_dense(cfg, tmp_path / "runs")
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))


def test_a_forward_that_is_not_last_step_pooling_is_refused(user_pkg, tmp_path, monkeypatch):
    from autoprune.reference.user_model import ensure_user_dense

    class MeanPool(user_pkg.SpeechLSTM):
        def forward(self, x, lengths):
            return self.fc(self.lstm(x)[0].mean(1))

    monkeypatch.setattr(user_pkg, "load_trained", lambda: MeanPool())
    cfg = config_from_dict(_study({"from": "userpkg.speech:load_trained"}), source="own.yaml")
    with pytest.raises(ConfigError, match=r"^own.yaml: model.from userpkg.speech:load_trained: the converted model's logits differ from MeanPool's by up to .* on the test set \(allowed 1e-05\)"):
        ensure_user_dense(cfg, tmp_path / "runs")


def test_from_errors_are_one_line(user_pkg, tmp_path):
    runner = CliRunner()
    for spec, expected in [
        ("userpkg.nope:f", "error: own.yaml: model.from userpkg.nope:f: model.from: cannot import 'userpkg.nope' (ModuleNotFoundError: No module named 'userpkg.nope')"),
        ("userpkg.speech:nope", "error: own.yaml: model.from userpkg.speech:nope: model.from: module 'userpkg.speech' has no 'nope'"),
        ("userpkg.speech:load_data", "error: own.yaml: model.from userpkg.speech:load_data: model.from: userpkg.speech:load_data() returned a tuple, not a torch.nn.Module"),
    ]:
        (tmp_path / "own.yaml").write_text(json.dumps(_study({"from": spec})))
        res = runner.invoke(cli, ["--runs-dir", str(tmp_path / "runs"), "train", "own.yaml"])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == expected


def test_from_and_build_may_name_a_file(user_pkg, tmp_path):
    """model.from / model.build accept path/to/file.py:function, as a task's data function does."""
    nets = tmp_path / "nets"
    nets.mkdir()
    (nets / "speech_model.py").write_text(USER_PKG)
    runner = CliRunner()
    runs = str(tmp_path / "runs")

    def train(model: dict, study: str) -> dict:
        (tmp_path / "own.yaml").write_text(json.dumps(_study(model, study)))
        res = runner.invoke(cli, ["--runs-dir", runs, "train", "own.yaml", "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    built = train({"from": "nets/speech_model.py:build"}, "by_path")
    assert built["epochs"] == 0 and built["conversion_max_logit_diff"] <= MAX_LOGIT_DIFF and not built["cached"]
    assert train({"from": "nets/speech_model.py:build"}, "by_path")["cached"]
    # the cache key covers the file's content: an edited file is converted again
    (nets / "speech_model.py").write_text(USER_PKG + "\n# edited\n")
    edited = train({"from": "nets/speech_model.py:build"}, "by_path")
    assert not edited["cached"] and edited["key"] != built["key"]

    # build by an absolute path, with a checkpoint; through ensure_dense
    user = user_pkg.SpeechLSTM()
    torch.save(user.state_dict(), tmp_path / "w.pt")
    cfg = config_from_dict(_study({"checkpoint": "w.pt", "build": f"{nets / 'speech_model.py'}:build"}, "by_abs_path"), source="own.yaml")
    dense = ensure_dense(cfg, runs)
    assert dense.metrics["conversion_max_logit_diff"] <= MAX_LOGIT_DIFF
    x, lengths = user_pkg.pad(user_pkg.load_data()[2])
    model = load_dense_model(dense.checkpoint)[0]
    with torch.no_grad():
        assert max_logit_diff(user.eval(), model, x, lengths) <= MAX_LOGIT_DIFF  # the checkpoint's weights, not build's fresh ones


def test_file_spec_errors_are_one_line(user_pkg, tmp_path):
    (tmp_path / "speech_model.py").write_text(USER_PKG)
    missing = tmp_path / "nope.py"
    runner = CliRunner()
    for spec, expected in [
        ("nope.py:build", f"error: own.yaml: model.from nope.py:build: model.from: cannot import 'nope.py' (FileNotFoundError: no file {str(missing)!r})"),
        ("speech_model.py:nope", "error: own.yaml: model.from speech_model.py:nope: model.from: module 'speech_model.py' has no 'nope'"),
        ("speech_model.py:CLASSES", "error: own.yaml: model.from speech_model.py:CLASSES: model.from: speech_model.py:CLASSES is a int, not a function"),
        ("a.py:b:c", "error: own.yaml: model.from: must look like package.module:function or path/to/file.py:function (got 'a.py:b:c')"),
    ]:
        (tmp_path / "own.yaml").write_text(json.dumps(_study({"from": spec})))
        res = runner.invoke(cli, ["--runs-dir", str(tmp_path / "runs"), "train", "own.yaml"])
        assert res.exit_code == 2, res.output
        assert res.stderr.strip() == expected


# ---------------------------------------------------------------- the whole path


@pytest.mark.slow
def test_users_trained_lstm_through_search_pareto_and_export(user_pkg, tmp_path):
    """A 2-layer nn.LSTM trained by a plain loop: it is the dense reference (no training), the
    search prunes it, and the export reproduces the recorded test accuracy of its trial."""
    torch.manual_seed(0)  # the user's initial weights (torch seeds each process at random)
    user = user_pkg.SpeechLSTM()
    user_acc = user_pkg.train(user)
    assert user_acc > 0.7  # a trained model, not chance (1/3)
    torch.save({"state_dict": {f"model.{k}": v for k, v in user.state_dict().items()}, "epoch": 30}, tmp_path / "speech.ckpt")
    (tmp_path / "own.yaml").write_text(json.dumps(_study({"checkpoint": "speech.ckpt", "build": "userpkg.speech:build"})))
    runs = str(tmp_path / "runs")
    runner = CliRunner()

    res = runner.invoke(cli, ["--runs-dir", runs, "train", "own.yaml", "--json"])
    assert res.exit_code == 0, res.output
    dense = json.loads(res.stdout)
    assert dense["test_accuracy"] == pytest.approx(user_acc, abs=1e-9)  # the user's own model, not a retrained one
    assert dense["epochs"] == 0 and dense["conversion_max_logit_diff"] <= MAX_LOGIT_DIFF

    res = runner.invoke(cli, ["--runs-dir", runs, "-q", "search", "own.yaml", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["dense"]["test_accuracy"] == pytest.approx(user_acc, abs=1e-9)
    assert summary["n_complete"] >= 3

    res = runner.invoke(cli, ["--runs-dir", runs, "pareto", "own", "--json"])
    front = json.loads(res.stdout)
    assert front and all(r["hidden_sizes"][0][0] < 12 for r in front)  # hidden-unit pruned from the user's 12 units

    res = runner.invoke(cli, ["--runs-dir", runs, "export", "own", "--pick", "smallest", "--format", "torchscript", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    row = next(r for r in front if r["trial"] == out["trial"])
    assert out["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-9)
    # the exported file takes the raw inputs the user's model took, and reproduces the recorded accuracy
    x_train, y_train, x_test, y_test = user_pkg.load_data()
    xt, lt = user_pkg.pad(x_test)
    loaded = torch.jit.load(out["files"]["torchscript"])
    with torch.no_grad():
        correct = int((loaded(xt, lt).argmax(1) == torch.from_numpy(y_test)).sum())
    assert correct == round(row["test_accuracy"] * len(y_test))

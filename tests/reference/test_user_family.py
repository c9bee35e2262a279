"""A user's module of the wider family (issue 20) converted by what its forward does: CRNN front-ends with
functional activations, token models, recurrent modules with norms between, MLP heads, per-frame taggers;
the study's names checked; every refusal one line, before anything is written (and B2/B4/B5 of issue 22)."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from autoprune.cli import cli
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.reference.convert import Names, convert_with_mapping
from autoprune.reference.user_model import MAX_LOGIT_DIFF, ensure_user_dense, max_logit_diff


class CRNN(nn.Module):
    """Keyword-spotting style: Conv1d + BatchNorm with F.relu, a GRU, max over time, an MLP head with F.relu."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.conv = nn.Conv1d(channels, 6, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(6)
        self.gru = nn.GRU(6, 8, batch_first=True)
        self.fc1 = nn.Linear(8, 7)
        self.fc2 = nn.Linear(7, classes)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x.transpose(1, 2)))).transpose(1, 2)
        out, _ = self.gru(h)
        return self.fc2(F.relu(self.fc1(out.max(1).values)))


class TextLSTM(nn.Module):
    """Text style: Embedding (padding id 0), a packed LSTM, mean over the true lengths, Dropout, a Linear head."""

    def __init__(self, vocab=12, classes=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, 5, padding_idx=0)
        self.lstm = nn.LSTM(5, 6, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(6, classes)

    def forward(self, tokens, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tokens.size(1))
        mask = (torch.arange(tokens.size(1))[None, :] < lengths[:, None]).unsqueeze(2).float()
        return self.out(self.drop((h * mask).sum(1) / lengths[:, None].float()))


class Stacked(nn.Module):
    """Two recurrent modules (the first 2 layers, bidirectional) with LayerNorm and Dropout between, final states."""

    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True, dropout=0.1)
        self.norm = nn.LayerNorm(10)
        self.drop = nn.Dropout(0.2)
        self.lstm2 = nn.LSTM(10, 4, batch_first=True, bidirectional=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h, _ = self.lstm1(x)
        _, (hn, _) = self.lstm2(self.drop(self.norm(h)))
        return self.head(torch.cat([hn[-2], hn[-1]], 1))


class Tagger(nn.Module):
    """Per-frame: a bidirectional GRU and a Linear on every frame."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 6, batch_first=True, bidirectional=True)
        self.tag = nn.Linear(12, 4)

    def forward(self, x):
        return self.tag(torch.tanh(self.gru(x)[0]))


def _padded(n=6, t=9, channels=3, tokens=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    lengths[0] = t
    valid = torch.arange(t)[None, :] < lengths[:, None]
    if tokens:
        return torch.randint(1, tokens, (n, t), generator=g).masked_fill(~valid, 0), lengths
    return torch.randn(n, t, channels, generator=g) * valid.unsqueeze(2), lengths


@pytest.mark.parametrize(
    "make, tokens, expected",
    [
        (CRNN, 0, "front-end: conv (Conv1d 3->6, kernel 5, stride 2), bn (BatchNorm1d), relu (in forward); recurrent: gru (GRU 6->8); "
                  "pooling: max; head: fc1 (Linear 8->7), relu (in forward), fc2 (Linear 7->4)"),
        (TextLSTM, 12, "front-end: emb (Embedding 12x5); recurrent: lstm (LSTM 5->6); pooling: mean; head: drop (Dropout 0.3), out (Linear 6->2)"),
        (Stacked, 0, "front-end: none; recurrent: lstm1 (LSTM 3->5 x2, bidirectional), lstm2 (LSTM 10->4, bidirectional); "
                     "between: norm (LayerNorm), drop (Dropout 0.2); pooling: last; head: head (Linear 8->3)"),
        (Tagger, 0, "front-end: none; recurrent: gru (GRU 3->6, bidirectional); pooling: none; head: tanh (in forward), tag (Linear 12->4)"),
    ],
)
def test_family_modules_convert_with_the_mapping_and_the_users_logits(make, tokens, expected):
    torch.manual_seed(0)
    user = make().eval()
    for mod in user.modules():  # trained-looking statistics
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    sample = _padded(4, 9, tokens=tokens, seed=1)
    sample = (sample[0], torch.full((4,), 9))  # the conversion traces equal-length sequences
    model, mapping = convert_with_mapping(user, "m.yaml: model.from", sample)
    assert mapping == expected
    x, lengths = _padded(tokens=tokens)
    if make is CRNN:  # a forward without lengths: what it computes for each sequence alone
        x, lengths = x[:, :9], torch.full((6,), 9)
    assert max_logit_diff(user, model, x, lengths) <= MAX_LOGIT_DIFF


def test_names_are_checked_against_the_module_and_its_forward():
    user = CRNN().eval()
    where = "m.yaml: model.from"
    ok = Names(front=("conv", "bn"), rnn=("gru",), head=("fc1", "fc2"), pooling="max")
    assert convert_with_mapping(user, where, names=ok)[0].spec.pooling == "max"
    for names, expected in [
        (Names(front=("conv", "bn2")), r"^m.yaml: model.from: model.front: no submodule 'bn2' in CRNN; its submodules with weights: conv, bn, gru, fc1, fc2$"),
        (Names(rnn=("fc1",)), r"^m.yaml: model.from: model.rnn: 'fc1' \(Linear\) is not an nn.LSTM or nn.GRU$"),
        (Names(front=("bn", "conv")), r"^m.yaml: model.from: model.front names \['bn', 'conv'\], but forward calls \['conv', 'bn'\] there, in that order$"),
        (Names(pooling="mean"), r"^m.yaml: model.from: the input of 'fc1' is not the recurrent outputs pooled by pooling 'mean' over the true lengths"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            convert_with_mapping(user, where, names=names)


def test_refusals_are_one_line_naming_the_part():
    where = "m.yaml: model.from"

    class Conv2dFront(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.lstm = nn.LSTM(6, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x.unsqueeze(1)).transpose(1, 2).flatten(2)
            return self.fc(self.lstm(h)[0][:, -1])

    class Tail(CRNN):
        def forward(self, x):
            return F.log_softmax(super().forward(x), dim=1)

    cases = [
        (Conv2dFront(), r"front-end layer 'conv' \(Conv2d\) is not supported: a front-end layer is Embedding \(first\), Linear, Conv1d"),
        (nn.Sequential(nn.LSTM(3, 5, proj_size=2), nn.Linear(2, 3)), r"nn.LSTM '0' has proj_size=2: LSTM\(proj_size\) is not supported"),
        (Tail(), r"the model's output is not the output of its last nn.Linear \('fc2'\): forward changes it after that layer"),
        (CRNN().half(), r"your model's weights are float16: autoprune converts float32 and float64 models; call .float\(\) on it first$"),
    ]
    for user, expected in cases:
        with pytest.raises(ConfigError, match=r"^m.yaml: model.from: " + expected) as info:
            convert_with_mapping(user.eval(), where)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------- through a study: one line, nothing written

USER_PKG = textwrap.dedent(
    '''
    import numpy as np
    import torch
    from torch import nn


    def load(seed=0):
        rng = np.random.default_rng(123)

        def make(n):
            xs, ys = [], []
            for _ in range(n):
                t = int(rng.integers(8, 25))
                y = int(rng.integers(0, 3))
                x = rng.normal(size=(t, 4)).astype("float32") * 0.8
                x[:, y] += 1.0
                xs.append(x)
                ys.append(y)
            return xs, np.array(ys)

        return (*make(60), *make(30))


    class Net(nn.Module):
        """The head reads the top layer's output at each sequence's last valid step (repro-round3 mods/um_min.py)."""

        def __init__(self, cell="lstm", layers=2, bidirectional=False, proj_size=0, head_in=None):
            super().__init__()
            kw = dict(num_layers=layers, batch_first=True, bidirectional=bidirectional)
            self.rnn = nn.LSTM(4, 16, proj_size=proj_size, **kw) if cell == "lstm" else nn.GRU(4, 16, **kw)
            self.head = nn.Linear(head_in or (proj_size or 16) * (2 if bidirectional else 1), 3)

        def forward(self, x, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
            idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.size(2))
            return self.head(out.gather(1, idx).squeeze(1))


    def f64():
        torch.manual_seed(0)
        return Net().double().eval()


    def proj():
        torch.manual_seed(0)
        return Net(proj_size=8).eval()


    def bi_gather():
        torch.manual_seed(0)
        return Net(cell="gru", layers=3, bidirectional=True).eval()


    def wide_head():
        torch.manual_seed(0)
        return Net(head_in=12).eval()


    class Conv2dNet(nn.Module):
        """A spectrogram-style Conv2d front-end (not in the family)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.rnn = nn.LSTM(4, 16, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.rnn(self.conv(x.unsqueeze(1)).squeeze(1))[0][:, -1])


    def conv2d():
        return Conv2dNet().eval()
    '''
)


@pytest.fixture
def um(tmp_path, monkeypatch):
    (tmp_path / "um_pkg.py").write_text(USER_PKG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "um_pkg", raising=False)
    return tmp_path


def _study(fn: str, **model) -> dict:
    return {"study": f"um_{fn}", "task": {"name": "um_pkg:load", "val_fraction": 0.3}, "model": {"from": f"um_pkg:{fn}", **model}}


@pytest.mark.parametrize(
    "fn, model, expected",
    [
        ("f64", {"front": ["conv"]}, "model.front: no submodule 'conv' in Net; its submodules with weights: rnn, head"),
        ("conv2d", {}, "front-end layer 'conv' (Conv2d) is not supported: a front-end layer is Embedding (first), Linear, Conv1d, BatchNorm1d, "
                       "LayerNorm, an activation or Dropout"),
        ("proj", {}, "nn.LSTM 'rnn' has proj_size=8: LSTM(proj_size) is not supported (autoprune's LSTM layers have no projection); train it without proj_size"),
        ("wide_head", {}, "the head's first layer 'head' (Linear 12->3) does not take the 16 features recurrent layer 'rnn' gives; supported: "),
    ],
)
def test_bad_user_models_are_one_line_and_nothing_is_written(um, fn, model, expected):
    """Issue 20's bad inputs (a name that does not exist, an unsupported front-end kind, LSTM(proj_size): B2 of
    issue 22, a head not taking the recurrent width): exit 2, one line naming the part, no dense reference written."""
    (um / "s.yaml").write_text(json.dumps(_study(fn, **model)))
    res = CliRunner().invoke(cli, ["--runs-dir", str(um / "runs"), "train", "s.yaml"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: s.yaml: model.from um_pkg:{fn}: {expected}"), lines
    assert not list((um / "runs").rglob("checkpoint.pt"))


def test_b4_bidirectional_gathered_at_the_last_valid_step_converts_and_says_what_it_reads(um, caplog):
    """B4 of issue 22: the user's backward direction at the last valid step is their model: kept (pooling last_output)."""
    cfg = config_from_dict(_study("bi_gather"), source="s.yaml")
    with caplog.at_level(logging.INFO, logger="autoprune.reference.convert"):
        dense = ensure_user_dense(cfg, um / "runs")
    assert dense.arch.pooling == "last_output" and dense.arch.hidden_sizes == [[16, 16]] * 3
    assert dense.metrics["conversion_max_logit_diff"] <= MAX_LOGIT_DIFF
    assert "pooling: last_output" in dense.metrics["conversion"]
    assert any("backward direction at the last valid step" in r.getMessage() for r in caplog.records)


def test_b5_float64_weights_convert_to_float32_checked_against_the_float64_model(um):
    import um_pkg

    cfg = config_from_dict(_study("f64"), source="s.yaml")
    dense = ensure_user_dense(cfg, um / "runs")
    assert dense.metrics["conversion_max_logit_diff"] <= MAX_LOGIT_DIFF
    state = torch.load(dense.checkpoint, weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    user = um_pkg.f64()  # float64, given float64 inputs: its own logits against the stored float32 reference
    assert next(user.parameters()).dtype == torch.float64


def test_naming_the_parts_is_part_of_the_cache_key(um):
    """A study that names the pooling (or parts) converts again; one that names nothing keeps the key it had."""
    from autoprune.reference.user_model import user_cache_key

    plain = user_cache_key(config_from_dict(_study("bi_gather"), source="s.yaml"))
    named = user_cache_key(config_from_dict(_study("bi_gather", pooling="last_output"), source="s.yaml"))
    assert plain != named
    assert named != user_cache_key(config_from_dict(_study("bi_gather", pooling="last_output", rnn=["rnn"]), source="s.yaml"))
    with pytest.raises(ConfigError, match=r"the input of 'head' is not the recurrent outputs pooled by pooling 'last'"):
        ensure_user_dense(config_from_dict(_study("bi_gather", pooling="last"), source="s.yaml"), um / "runs")

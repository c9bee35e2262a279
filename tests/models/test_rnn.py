"""RNNClassifier: conversion from nn.LSTM/nn.GRU, padding invariance, TorchScript."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.models.rnn import ArchSpec, RNNClassifier, convert_torch_rnn, reverse_padded

CASES = list(itertools.product((nn.LSTM, nn.GRU), (1, 2, 3), (False, True), (True, False)))


def _ids(case):
    cls, layers, bi, bf = case
    return f"{cls.__name__}-{layers}l-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}"


def _run_torch(rnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The user's module on batch-first ``x``, output batch-first."""
    if rnn.batch_first:
        return rnn(x)[0]
    return rnn(x.transpose(0, 1))[0].transpose(0, 1)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_convert_torch_rnn_matches_torch(case):
    cls, layers, bi, bf = case
    torch.manual_seed(0)
    rnn = cls(3, 5, num_layers=layers, bidirectional=bi, batch_first=bf).eval()
    x = torch.randn(4, 7, 3)
    lengths = torch.full((4,), 7)
    stack = convert_torch_rnn(rnn).eval()
    with torch.no_grad():
        torch.testing.assert_close(stack(x, lengths), _run_torch(rnn, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_from_torch_matches_torch_last_pooling(case):
    cls, layers, bi, bf = case
    torch.manual_seed(1)
    rnn = cls(3, 5, num_layers=layers, bidirectional=bi, batch_first=bf).eval()
    dirs = 2 if bi else 1
    head = nn.Linear(5 * dirs, 4)
    model = RNNClassifier.from_torch(rnn, head).eval()
    assert model.hidden_sizes == [[5] * dirs] * layers
    assert model.spec.cell == ("lstm" if cls is nn.LSTM else "gru")
    x = torch.randn(3, 6, 3)
    lengths = torch.full((3,), 6)
    with torch.no_grad():
        out = _run_torch(rnn, x)
        if bi:  # forward output at the last step, backward output at the first
            pooled = torch.cat([out[:, -1, :5], out[:, 0, 5:]], dim=1)
        else:
            pooled = out[:, -1]
        torch.testing.assert_close(model(x, lengths), head(pooled), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bi", [False, True])
def test_from_torch_with_attention(bi):
    torch.manual_seed(2)
    rnn = nn.GRU(3, 6, num_layers=2, bidirectional=bi, batch_first=True).eval()
    d = 12 if bi else 6
    proj, score, head = nn.Linear(d, 5), nn.Linear(5, 1, bias=False), nn.Linear(d, 3)
    model = RNNClassifier.from_torch(rnn, head, pooling="attention", attention=(proj, score)).eval()
    x = torch.randn(2, 8, 3)
    with torch.no_grad():
        h = rnn(x)[0]
        w = torch.softmax(score(torch.tanh(proj(h))).squeeze(2), dim=1)
        expected = head((w.unsqueeze(2) * h).sum(1))
        torch.testing.assert_close(model(x, torch.full((2,), 8)), expected, atol=1e-6, rtol=0)


def test_convert_rejects_unsupported_modules():
    with pytest.raises(ConfigError, match="expected nn.LSTM or nn.GRU, got RNN"):
        convert_torch_rnn(nn.RNN(3, 4))
    with pytest.raises(ConfigError, match="proj_size"):
        convert_torch_rnn(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ConfigError, match=r"bias=False\) is not supported"):
        convert_torch_rnn(nn.GRU(3, 4, bias=False))


def test_from_torch_attention_layers_need_attention_pooling():
    with pytest.raises(ConfigError, match="pooling is not 'attention'"):
        RNNClassifier.from_torch(nn.LSTM(3, 4), nn.Linear(4, 2), attention=(nn.Linear(4, 5), nn.Linear(5, 1)))


def test_reverse_padded_reverses_within_length_and_is_an_involution():
    x = torch.arange(10.0).view(2, 5, 1)
    lengths = torch.tensor([5, 3])
    out = reverse_padded(x, lengths)
    assert out[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [7, 6, 5, 8, 9]  # padding stays in place
    assert torch.equal(reverse_padded(out, lengths), x)


PAD_CASES = list(itertools.product(("lstm", "gru"), ("last", "attention"), (False, True), (1, 2)))


@pytest.mark.parametrize("cell,pooling,bi,layers", PAD_CASES)
def test_padding_never_changes_predictions(cell, pooling, bi, layers):
    torch.manual_seed(3)
    dirs = 2 if bi else 1
    model = RNNClassifier(ArchSpec(cell, 3, [[6] * dirs] * layers, 4, pooling=pooling, attention_dim=5)).eval()
    lengths = torch.tensor([9, 4, 6, 1])
    seqs = [torch.randn(int(n), 3) for n in lengths]
    with torch.no_grad():
        alone = torch.cat([model(s.unsqueeze(0), torch.tensor([len(s)])) for s in seqs])
        # pad to 12 steps with garbage (not zeros): padding must never be read
        batch = torch.randn(4, 12, 3) * 100
        for i, s in enumerate(seqs):
            batch[i, : len(s)] = s
        padded = model(batch, lengths)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "attention"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torchscript_matches_eager(cell, pooling):
    torch.manual_seed(4)
    model = RNNClassifier(ArchSpec(cell, 3, [[5, 5], [4, 3]], 2, pooling=pooling, attention_dim=4)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(3, 7, 3)
    lengths = torch.tensor([7, 2, 5])
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, lengths), model(x, lengths), atol=1e-6, rtol=0)


def test_rnn_classifier_rejects_bad_specs():
    # max pooling is part of the family since issue 20: an unknown pooling is refused with the valid ones
    with pytest.raises(ConfigError, match="pooling must be one of last, last_output, mean, max, attention, none, got 'median'"):
        RNNClassifier(ArchSpec("lstm", 3, [[4]], 2, pooling="median"))
    with pytest.raises(ConfigError, match=r"cell must be one of \['gru', 'lstm'\], got 'rnn'"):
        RNNClassifier(ArchSpec("rnn", 3, [[4]], 2))
    with pytest.raises(ConfigError, match="at least one hidden unit"):
        RNNClassifier(ArchSpec("gru", 3, [[4], [0]], 2))


def test_each_layer_and_direction_keeps_its_own_width():
    model = RNNClassifier(ArchSpec("lstm", 3, [[7, 2], [5, 4]], 2))
    assert model.hidden_sizes == [[7, 2], [5, 4]]
    assert model.rnn[1].dirs[0].weight_ih_l0.shape == (4 * 5, 9)
    assert model.head.weight.shape == (2, 9)
    assert model(torch.randn(2, 4, 3), torch.tensor([4, 2])).shape == (2, 2)

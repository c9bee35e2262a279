"""Size, parameter, MAC and latency measurements."""

from __future__ import annotations

import math

import pytest
import torch

from autoprune.errors import ConfigError
from autoprune.models.rnn import ArchSpec, RNNClassifier
from autoprune.runtime.convert import onnx_available
from autoprune.runtime.latency import latency_ms
from autoprune.runtime.measure import count_params, macs_per_sequence, measure, size_bytes, tensor_size_bytes


def test_dense_tensor_is_stored_dense():
    assert tensor_size_bytes(torch.ones(10, 10)) == 400
    one_zero = torch.ones(10, 10)
    one_zero[3, 3] = 0  # 99 values + 13 bitmask bytes = 409 > 400
    assert tensor_size_bytes(one_zero) == 400


def test_ninety_percent_sparse_tensor_uses_the_bitmask_encoding():
    t = torch.zeros(10, 10)
    t[torch.arange(10), torch.arange(10)] = 1.5  # 10 non-zeros
    # dense 400; bitmask 10*4 + ceil(100/8) = 53; CSR 10*4 + 10*4 + 11*4 = 124
    assert tensor_size_bytes(t) == 53


def test_csr_wins_for_wide_very_sparse_matrices():
    t = torch.zeros(2, 1000)
    t[0, 5] = t[1, 7] = 1.0
    # dense 8000; bitmask 8 + 250 = 258; CSR 8 + 8 + 3*4 = 28
    assert tensor_size_bytes(t) == 28


def test_vectors_and_all_zero_tensors():
    v = torch.zeros(8)
    v[2] = 1.0
    assert tensor_size_bytes(v) == 5  # 4 bytes + 1 bitmask byte
    assert tensor_size_bytes(torch.zeros(10, 10)) == 13


def test_size_and_params_of_a_model():
    model = RNNClassifier(ArchSpec("gru", 3, [[4]], 2))
    n = 3 * 4 * 3 + 3 * 4 * 4 + 2 * 12 + 2 * 4 + 2  # ih, hh, biases, head
    assert count_params(model) == (n, n)
    assert size_bytes(model) == 4 * n
    with torch.no_grad():
        model.rnn[0].dirs[0].weight_hh_l0.zero_()  # 12x4, all zero: just its 6-byte bitmask
    assert count_params(model) == (n - 48, n)
    assert size_bytes(model) == 4 * (n - 48) + math.ceil(48 / 8)


def test_macs_lstm_by_hand():
    model = RNNClassifier(ArchSpec("lstm", 3, [[4]], 2))
    # 5 steps x 4 gates x 4 units x (3 inputs + 4 recurrent) + head 4 x 2
    assert macs_per_sequence(model, 5) == 5 * 4 * 4 * 7 + 8 == 568


def test_macs_bidirectional_gru_by_hand():
    model = RNNClassifier(ArchSpec("gru", 3, [[3, 2], [2, 2]], 2))
    layer0 = 5 * 3 * 3 * (3 + 3) + 5 * 3 * 2 * (3 + 2)  # fwd 3 units, bwd 2 units, 3 inputs
    layer1 = 2 * 5 * 3 * 2 * (5 + 2)  # 5 inputs (3 + 2) per direction
    head = 4 * 2
    assert macs_per_sequence(model, 5) == layer0 + layer1 + head == 270 + 150 + 420 + 8


def test_macs_attention_by_hand():
    model = RNNClassifier(ArchSpec("lstm", 3, [[4]], 2, pooling="attention", attention_dim=5))
    rnn, head = 5 * 4 * 4 * 7, 4 * 2
    attention = 5 * (4 * 5 + 5 + 4)  # per step: projection, score, weighted sum
    assert macs_per_sequence(model, 5) == rnn + attention + head


def test_unstructured_zeros_do_not_reduce_macs():
    model = RNNClassifier(ArchSpec("lstm", 3, [[4]], 2))
    before = macs_per_sequence(model, 7)
    with torch.no_grad():
        model.rnn[0].dirs[0].weight_ih_l0.zero_()
    assert macs_per_sequence(model, 7) == before


def test_latency_torch_is_a_positive_float():
    model = RNNClassifier(ArchSpec("lstm", 3, [[8]], 2))
    ms = latency_ms(model, batch_size=2, seq_len=10, repeats=3, warmup=1)
    assert isinstance(ms, float) and 0 < ms < 10_000


@pytest.mark.skipif(not onnx_available(), reason="onnx extra not installed")
def test_latency_onnxruntime_is_a_positive_float():
    model = RNNClassifier(ArchSpec("gru", 3, [[6, 6]], 2, pooling="attention"))
    ms = latency_ms(model, seq_len=10, runtime="onnxruntime", repeats=3, warmup=1)
    assert isinstance(ms, float) and 0 < ms < 10_000


def test_latency_unknown_runtime():
    model = RNNClassifier(ArchSpec("lstm", 3, [[4]], 2))
    with pytest.raises(ConfigError, match=r"latency runtime must be 'torch' or 'onnxruntime', got 'tvm'"):
        latency_ms(model, runtime="tvm", repeats=3)


def test_measure_collects_everything():
    model = RNNClassifier(ArchSpec("lstm", 3, [[4]], 2))
    m = measure(model, 5, latency={"seq_len": 5, "repeats": 3, "warmup": 0})
    assert m.hidden_sizes == [[4]]
    assert m.macs == 568
    assert m.params == m.nonzero_params == count_params(model)[1]
    assert m.size_bytes == 4 * m.params
    assert m.latency_ms is not None and m.latency_ms > 0
    assert set(m.to_dict()) >= {"size_bytes", "nonzero_params", "params", "macs", "hidden_sizes", "latency_ms"}

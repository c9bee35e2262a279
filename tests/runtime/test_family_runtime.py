"""The wider family as the runtimes run it: ONNX Runtime reproduces torch, int8 forms run (whole model), latency
is measured with the model's own input type (token ids for an embedding), MACs count the front-end and head."""

from __future__ import annotations

import pytest
import torch

from autoprune.models.arch import ArchSpec
from autoprune.models.rnn import Normalized, RNNClassifier
from autoprune.runtime.convert import example_inputs, onnx_available, ort_session, to_onnx_bytes
from autoprune.runtime.latency import latency_ms
from autoprune.runtime.measure import macs_per_sequence
from autoprune.runtime.quantize import int8_predictor, int8_size_bytes, predict_each

CONV = {"kind": "conv1d", "out": 6, "kernel": 3, "stride": 2, "padding": 1, "dilation": 1, "bias": True}
LIN = {"kind": "linear", "out": 7, "bias": True}
SPECS = {
    "crnn": ArchSpec("lstm", 3, [[8]], 4, pooling="max", front=[CONV, {"kind": "batchnorm", "eps": 1e-5, "momentum": 0.1}, {"kind": "relu"}],
                     head_layers=[LIN, {"kind": "relu"}]),
    "tokens": ArchSpec("lstm", 11, [[8], [6]], 3, pooling="mean", front=[{"kind": "embedding", "dim": 5, "padding_idx": 0}],
                       between=[[{"kind": "layernorm", "eps": 1e-5, "zeros": 0}]]),
    "per-frame": ArchSpec("lstm", 3, [[8, 8]], 5, pooling="none", front=[dict(CONV, stride=1)], head_layers=[LIN, {"kind": "gelu"}]),
}


def _inputs(spec: ArchSpec):
    x, lengths = example_inputs(RNNClassifier(spec), batch_size=3, seq_len=9, random=True)
    return x, torch.tensor([9, 4, 6])


@pytest.mark.skipif(not onnx_available(), reason="needs the onnx extra (onnx, onnxruntime)")
@pytest.mark.parametrize("name", list(SPECS))
def test_onnx_runtime_reproduces_torch_float_and_int8_runs(name):
    spec = SPECS[name]
    torch.manual_seed(0)
    model = RNNClassifier(spec).eval()
    wrapped = Normalized(model, None, None) if spec.tokens else Normalized(model, torch.zeros(3), torch.ones(3))
    x, lengths = _inputs(spec)
    sess = ort_session(to_onnx_bytes(wrapped.eval()))
    got = sess.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        want = wrapped(x, lengths)
    assert got.shape == tuple(want.shape)  # per-frame: [B, T, C] with a dynamic time axis
    assert abs(got - want.numpy()).max() <= 1e-4
    for runtime in ("torch", "onnxruntime"):
        logits = predict_each(int8_predictor(wrapped, runtime), x, lengths)
        n = int(lengths.sum()) if spec.per_frame else len(lengths)
        assert logits.shape == (n, spec.n_classes) and torch.isfinite(logits).all()
    # every weight matrix a runtime quantizes counts one byte a value: the whole model is smaller than float32
    assert int8_size_bytes(model, "onnxruntime") < 4 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(SPECS))
def test_latency_takes_the_models_input_type_and_macs_count_every_part(name):
    spec = SPECS[name]
    model = RNNClassifier(spec)
    assert latency_ms(model, seq_len=12, repeats=3, warmup=1) > 0
    macs = macs_per_sequence(model, 12)
    plain = macs_per_sequence(RNNClassifier(ArchSpec(spec.cell, spec.rnn_input_size, spec.hidden_sizes, spec.n_classes)), spec.out_length(12))
    weighted = any(s["kind"] in ("linear", "conv1d") for s in spec.front + spec.head_layers)
    assert macs > plain if weighted else macs == plain  # a front-end's and a head's Linear / Conv1d come on top; an embedding costs none

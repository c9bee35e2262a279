"""int8 after pruning: sizes, kernels per runtime, the policy and search keys, trials measured as deployed."""

from __future__ import annotations

import optuna
import pytest
import torch

import autoprune.trial.run as dense_mod  # the module whose run_trial is under test (its own ensure_dense / build_datamodule)
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.models.rnn import ArchSpec, Normalized, RNNClassifier
from autoprune.pruning.policy import policy_from_dict
from autoprune.runtime.convert import onnx_int8_bytes
from autoprune.runtime.kernels import check_int8_kernel
from autoprune.runtime.latency import LatencySettings, latency_ms
from autoprune.runtime.measure import size_bytes
from autoprune.runtime.quantize import int8_predictor, int8_size_bytes, predict_each
from autoprune.search.space import INT8_SIZE_TARGETS, SearchSpace
from autoprune.trial.run import planned_arch
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial


def _model(cell="lstm", hidden=(16,), seed=0):
    torch.manual_seed(seed)
    return RNNClassifier(ArchSpec(cell, 3, [[h] for h in hidden], 4, "last", 8, 0.0)).eval()


# ---------------------------------------------------------------- size


def test_int8_size_counts_values_scales_and_zero_points():
    m = _model(hidden=(16,))
    # LSTM 16 over 3 inputs: weight_ih 64x3, weight_hh 64x16, biases 2x64 float; head 4x16 + 4 float
    values = 64 * 3 + 64 * 16 + 4 * 16
    floats = (64 + 64 + 4) * 4
    assert int8_size_bytes(m, "onnxruntime") == values + floats + (64 + 64 + 4) * 5  # per output channel: scale + zero point
    assert int8_size_bytes(m, "torch") == values + floats + 3 * 5  # per tensor
    assert size_bytes(m) == (values + 64 + 64 + 4) * 4


def test_int8_size_uses_the_sparse_encoding_when_smaller():
    m = _model(hidden=(64,))
    dense_int8 = int8_size_bytes(m, "onnxruntime")
    with torch.no_grad():
        w = m.rnn[0].dirs[0].weight_hh_l0
        w[torch.rand_like(w) < 0.9] = 0.0  # 90 % zeros: a bitmask (1 bit per value) beats 1 byte per value
    sparse = int8_size_bytes(m, "onnxruntime")
    numel = 256 * 64
    nnz = int(torch.count_nonzero(torch.round(w / (w.abs().amax(1, keepdim=True) / 127))))
    assert sparse == dense_int8 - numel + nnz + (numel + 7) // 8


def test_int8_of_a_256_unit_lstm_is_at_most_027_of_float32():
    m = RNNClassifier(ArchSpec("lstm", 12, [[256], [256]], 9, "last", 32, 0.0))
    assert int8_size_bytes(m, "onnxruntime") <= 0.27 * size_bytes(m)


# ---------------------------------------------------------------- kernels and numerics


def test_onnx_int8_graph_has_quantized_lstm_and_matmul_kernels():
    import onnx

    graph = onnx.load_from_string(onnx_int8_bytes(_model()))
    ops = {n.op_type for n in graph.graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops and "LSTM" not in ops


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_int8_logits_stay_close_to_float_and_are_reproducible(runtime):
    m = _model(hidden=(32,))
    wrapped = Normalized(m, torch.zeros(3), torch.ones(3)).eval()
    x, lengths = torch.randn(5, 9, 3), torch.tensor([9, 7, 5, 3, 1])
    x = x * (torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    a = predict_each(int8_predictor(wrapped, runtime), x, lengths)
    b = predict_each(int8_predictor(wrapped, runtime), x, lengths)
    ref = predict_each(wrapped, x, lengths)
    assert torch.equal(a, b)  # a rebuilt int8 model gives the same logits: export can check counts exactly
    assert 0 < float((a - ref).abs().max()) < 0.05


def test_int8_runtime_without_a_gru_kernel_is_refused_naming_it():
    check_int8_kernel("torch", "gru")
    check_int8_kernel("onnxruntime", "lstm")
    with pytest.raises(ConfigError, match=r"int8 needs an int8 GRU kernel, and runtime 'onnxruntime' \(measure.runtime\) has int8 kernels for LSTM only; use measure.runtime: torch or quantize: none"):
        check_int8_kernel("onnxruntime", "gru")


def test_study_config_refuses_searched_int8_gru_in_onnxruntime(tiny_study):
    tiny_study["model"]["cell"] = "gru"
    tiny_study["measure"]["runtime"] = "onnxruntime"
    tiny_study["search"] = {"quantize": ["none", "int8"]}
    with pytest.raises(ConfigError, match=r"^tiny.yaml: search: quantize: int8 needs an int8 GRU kernel, and runtime 'onnxruntime'"):
        config_from_dict(tiny_study, source="tiny.yaml")
    tiny_study["search"] = {"quantize": ["none"]}
    config_from_dict(tiny_study, source="tiny.yaml")


def test_int8_policy_for_a_runtime_without_the_kernel_fails_before_training(tiny_study, runs_dir, monkeypatch):
    tiny_study["model"]["cell"] = "gru"
    tiny_study["measure"]["runtime"] = "onnxruntime"
    config = config_from_dict(tiny_study, source="tiny.yaml")

    def no_training(*a, **k):
        raise AssertionError("the dense model must not train")

    monkeypatch.setattr(dense_mod, "ensure_dense", no_training)
    policy = policy_from_dict({"sparsity": 0.5, "quantize": "int8"})
    with pytest.raises(ConfigError, match=r"policy quantize: int8 needs an int8 GRU kernel, and runtime 'onnxruntime'"):
        run_trial(config, policy, TrialOptions(runs_dir=str(runs_dir)))


# ---------------------------------------------------------------- policy, search, latency


def test_policy_without_the_key_reads_as_none_and_bad_values_are_refused():
    assert policy_from_dict({"sparsity": 0.5}).quantize == "none"
    assert policy_from_dict({"sparsity": 0.5, "quantize": "int8"}).flat_params()["quantize"] == "int8"
    with pytest.raises(ConfigError, match=r"quantize: Input should be 'none' or 'int8' \(got 'int4'\)"):
        policy_from_dict({"sparsity": 0.5, "quantize": "int4"}, source="p.yaml")


def test_search_space_samples_the_precision(tiny_study):
    import optuna

    tiny_study["search"] = {"quantize": ["none", "int8"], "granularities": ["hidden_unit"], "methods": ["magnitude"]}
    config = config_from_dict(tiny_study)
    space = SearchSpace(config, ArchSpec("lstm", 1, [[16]], 2, "last", 8, 0.0))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {space.suggest(study.ask()).quantize for _ in range(12)}
    assert seen == {"none", "int8"}
    tiny_study["search"] = {}
    assert config_from_dict(tiny_study).search.quantize == ["none"]


def test_latency_settings_key_names_the_precision():
    s = LatencySettings(batch_size=1, seq_len=8, threads=1, runtime="torch", repeats=3, warmup=1)
    assert s.key() == "b1-t8-th1-torch" == s.with_precision("none").key()
    assert s.with_precision("int8").key() == "b1-t8-th1-torch-int8"
    assert latency_ms(_model(), **s.with_precision("int8")) > 0


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_int8_trial_is_measured_as_deployed(tiny_config, runs_dir, runtime):
    config = config_from_dict({**tiny_config.to_dict(), "measure": {**tiny_config.to_dict()["measure"], "runtime": runtime}})
    policy = policy_from_dict(
        {"granularity": "hidden_unit", "sparsity": 0.5, "quantize": "int8", "finetune": {"epochs": 2}, "schedule": {"kind": "one_shot", "end_epoch": 0}}
    )
    r = run_trial(config, policy, TrialOptions(runs_dir=str(runs_dir)))
    assert r.state == "complete" and r.precision == "int8"
    assert r.int8["runtime"] == runtime and r.int8["n_test"] == 60
    assert set(r.int8["test_correct"]) == {"torch", "onnxruntime"}
    assert r.test_accuracy == r.int8["test_correct"][runtime] / 60
    assert r.size_bytes < r.int8["float_size_bytes"] < r.dense["size_bytes"]
    assert r.latency_ms > 0
    plain = run_trial(config, policy_from_dict({**policy.to_dict(), "quantize": "none"}), TrialOptions(runs_dir=str(runs_dir)))
    assert plain.precision == "float32" and plain.int8 == {}
    assert plain.size_bytes == r.int8["float_size_bytes"] and plain.test_accuracy == r.int8["float_test_accuracy"]


def test_warm_start_adds_int8_copies_of_the_moderate_unit_levels_only_when_int8_is_searched(tiny_study):
    arch = ArchSpec("lstm", 1, [[16]], 2, "last", 8, 0.0)
    tiny_study["search"] = {"quantize": ["none", "int8"]}
    space = SearchSpace(config_from_dict(tiny_study), arch)
    params = space.warm_start_params()
    int8 = [p for p in params if p.get("quantize") == "int8"]
    assert int8 and all(p["structure"] == 1.0 and p["method"] == "taylor" for p in int8)  # uniform hidden units, then int8
    assert [p["size"] for p in int8] == [max(t, space.size_range[0]) for t in INT8_SIZE_TARGETS][: len(int8)]  # 5 / 2 / 1 %, deduplicated
    widths = []
    for p in int8:
        study = optuna.create_study(directions=["maximize", "minimize"])
        study.enqueue_trial(p)
        policy = space.suggest(study.ask())
        assert policy.quantize == "int8" and not policy.hybrid
        widths.append(planned_arch(arch, policy).hidden_sizes[0][0])
    assert widths == sorted(set(widths), reverse=True)  # distinct models, smaller at each level
    tiny_study["search"] = {}
    assert not any("quantize" in p for p in SearchSpace(config_from_dict(tiny_study), arch).warm_start_params())

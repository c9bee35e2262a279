"""Where a study trains and where latency is measured (issue 21, GPUs per trial): ``train.accelerator`` /
``devices`` reach every fit, ``--gpus-per-trial`` asks Ray for GPUs only for trials that train on one,
and every trial record says on which device its latency was measured. On this CPU machine the GPU
test skips with the reason; the rest runs on the CPU."""

from __future__ import annotations

import pytest
import torch

from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.models.fitting import Recipe, make_trainer
from autoprune.pruning.policy import policy_from_dict
from autoprune.runtime.latency import LatencySettings
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial


def _policy():
    return policy_from_dict({"method": "magnitude", "granularity": "unstructured", "sparsity": 0.5, "finetune": {"epochs": 1}})


def test_where_it_trains_reaches_every_fit(tiny_study):
    tiny_study["train"] = {**tiny_study["train"], "accelerator": "auto"}
    config = config_from_dict(tiny_study)
    recipe = Recipe.of_training(config.train)
    assert (recipe.accelerator, recipe.devices) == ("auto", 1)
    assert make_trainer(1, accelerator="cpu").accelerator.__class__.__name__ == "CPUAccelerator"


def test_the_default_cpu_keeps_dense_cache_keys(tiny_study):
    config = config_from_dict(tiny_study)
    assert "accelerator" not in config.dense_key()["train"] and "devices" not in config.dense_key()["train"]
    tiny_study["train"] = {**tiny_study["train"], "accelerator": "gpu"}
    assert config_from_dict(tiny_study).dense_key()["train"]["accelerator"] == "gpu"  # a GPU-trained dense model is another checkpoint


@pytest.mark.parametrize(
    "change, message",
    [
        ({"search": {"ray": {"gpus_per_trial": 0.5}}}, r"gpus_per_trial=0.5 reserves GPUs for trials that train on the CPU: set train.accelerator: gpu"),
        ({"measure": {"device": "cuda", "runtime": "onnxruntime"}}, r"measure.device cuda measures latency with runtime torch"),
        ({"train": {"devices": 2}}, r"train.devices"),
    ],
)
def test_inconsistent_device_settings_are_refused(tiny_study, change, message):
    for section, values in change.items():
        tiny_study[section] = {**tiny_study.get(section, {}), **values}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_study, source="s.yaml")


def test_every_trial_records_where_its_latency_was_measured(tiny_config, runs_dir):
    result = run_trial(tiny_config, _policy(), TrialOptions(runs_dir=str(runs_dir)))
    assert result.state == "complete" and result.latency_ms is not None
    assert result.latency_device == "cpu, 1 thread, torch"
    settings = LatencySettings.from_config(tiny_config.measure, 12)
    assert settings.key() == "b1-t12-th1-torch"  # unchanged on the CPU: latency caches stay valid
    assert LatencySettings(settings, device="cuda").key().endswith("-cuda")


NO_GPU = "no CUDA GPU visible to torch on this machine: the GPU path (train.accelerator gpu, measure.device cuda) is not exercised here"


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_a_trial_trains_and_is_measured_on_a_gpu(tiny_study, runs_dir):
    tiny_study["train"] = {**tiny_study["train"], "accelerator": "gpu"}
    tiny_study["measure"] = {**tiny_study["measure"], "device": "cuda"}
    config = config_from_dict(tiny_study)
    result = run_trial(config, _policy(), TrialOptions(runs_dir=str(runs_dir)))
    assert result.state == "complete" and result.latency_device.startswith("cuda (")
    assert result.val_accuracy is not None

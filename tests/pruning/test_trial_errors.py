"""run_trial refusals: divergence and impossible hidden-unit targets leave nothing in trial_dir."""

from __future__ import annotations

import pytest
import torch

from autoprune.errors import PruningError
from autoprune.pruning.policy import policy_from_dict
from autoprune.reference.dense import ensure_dense
from autoprune.trial.result import TrialOptions
from autoprune.trial.run import run_trial


def test_nan_during_finetuning_raises_and_writes_nothing(tiny_config, runs_dir, tmp_path):
    dense = ensure_dense(tiny_config, runs_dir)
    payload = torch.load(dense.checkpoint, weights_only=False)
    payload["state_dict"]["head.weight"][0, 0] = float("nan")  # a corrupted weight
    torch.save(payload, dense.checkpoint)
    trial_dir = tmp_path / "trial"
    policy = policy_from_dict({"sparsity": 0.5, "finetune": {"epochs": 3, "lr": 0.001}})
    with pytest.raises(PruningError, match=r"fine-tuning diverged: loss is nan at epoch 0, batch 0; lower finetune\.lr \(now 0\.001\)"):
        run_trial(tiny_config, policy, TrialOptions(runs_dir=str(runs_dir), trial_dir=str(trial_dir), measure_latency=False))
    assert not trial_dir.exists() or not any(trial_dir.iterdir())


def test_removing_every_unit_is_refused_before_training(tiny_config, runs_dir, tmp_path):
    ensure_dense(tiny_config, runs_dir)
    trial_dir = tmp_path / "trial"
    policy = policy_from_dict({"granularity": "hidden_unit", "sparsity": 0.99, "finetune": {"epochs": 3}})
    with pytest.raises(PruningError, match=r"would remove every hidden unit of layer rnn\.0 \(16 units\); at least one unit stays"):
        run_trial(tiny_config, policy, TrialOptions(runs_dir=str(runs_dir), trial_dir=str(trial_dir), measure_latency=False))
    assert not trial_dir.exists()

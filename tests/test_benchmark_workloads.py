"""ray_scaling's workloads load from the shipped studies and give every trial the same work."""

from __future__ import annotations

import pytest

from benchmarks import ray_scaling as rs


@pytest.mark.parametrize("quick", [False, True])
@pytest.mark.parametrize("workload", rs.WORKLOADS, ids=lambda w: w.name)
def test_every_trial_of_a_workload_does_the_same_work(workload, quick):
    config = workload.config(quick)  # the shipped study with the overrides: valid, or this raises
    s = config.search
    assert not s.fidelity.enabled  # no promotions: a promoted trial retrains, the others only fine-tune
    assert not s.warm_start
    assert s.early_stop.after_epochs is None or s.early_stop.max_drop >= 1.0  # no trial stops early
    assert s.distillation is None
    assert s.granularities == ["unstructured"] and s.methods == ["magnitude"] and s.quantize == ["none"]
    assert s.finetune.epochs[0] == s.finetune.epochs[1]  # fixed epochs
    assert len(s.recovery) == 1

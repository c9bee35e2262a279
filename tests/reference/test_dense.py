"""ensure_dense: trains once, caches by content hash, reproducible in the seed."""

from __future__ import annotations

import json

import pytest
import torch

from autoprune.config import config_from_dict
from autoprune.models.rnn import evaluate
from autoprune.reference.cache import dense_cache_key, load_dense_model
from autoprune.reference.dense import ensure_dense


def test_second_call_reuses_the_cache(tiny_config, runs_dir):
    first = ensure_dense(tiny_config, runs_dir)
    assert not first.cached
    assert first.checkpoint == runs_dir / "tiny" / "dense" / first.key / "checkpoint.pt"
    assert first.checkpoint.is_file()
    mtime = first.checkpoint.stat().st_mtime_ns
    second = ensure_dense(tiny_config, runs_dir)
    assert second.cached
    assert second.key == first.key
    assert second.checkpoint == first.checkpoint
    assert second.metrics == first.metrics
    assert second.arch == first.arch
    assert second.history == first.history
    assert first.checkpoint.stat().st_mtime_ns == mtime
    meta = json.loads((first.checkpoint.parent / "metrics.json").read_text())
    assert meta["metrics"] == first.metrics
    assert [h["epoch"] for h in first.history] == [0, 1, 2]


def test_metrics_describe_the_model_and_data(tiny_config, runs_dir):
    res = ensure_dense(tiny_config, runs_dir)
    m = res.metrics
    assert m["epochs"] == 3
    assert m["n_train"] + m["n_val"] == 120 and m["n_test"] == 60
    assert (m["n_channels"], m["n_classes"]) == (3, 3)
    assert m["max_length"] <= 12
    assert 0.0 <= m["val_accuracy"] <= 1.0 and 0.0 <= m["test_accuracy"] <= 1.0
    model, payload = load_dense_model(res.checkpoint)
    assert m["params"] == sum(p.numel() for p in model.parameters())
    assert model.hidden_sizes == [[16]] == res.arch.hidden_sizes
    # the stored weights give the stored metrics
    from autoprune.tasks import build_datamodule

    dm = build_datamodule(tiny_config)
    assert evaluate(model, *dm.tensors("val"))["accuracy"] == m["val_accuracy"]
    assert evaluate(model, *dm.tensors("test"))["accuracy"] == m["test_accuracy"]
    out = res.to_json()
    assert out["cached"] is False and out["checkpoint"] == str(res.checkpoint) and out["hidden_sizes"] == [[16]]


def test_force_retrains(tiny_config, runs_dir):
    first = ensure_dense(tiny_config, runs_dir)
    again = ensure_dense(tiny_config, runs_dir, force=True)
    assert not again.cached and again.key == first.key
    assert again.metrics["val_accuracy"] == first.metrics["val_accuracy"]


@pytest.mark.parametrize(
    "path,value",
    [("train.lr", 0.02), ("train.epochs", 2), ("seed", 1), ("model.hidden_sizes", [8]), ("task.options", {"n_train": 100})],
)
def test_training_settings_change_the_key(tiny_study, path, value):
    base = config_from_dict(tiny_study)
    changed = config_from_dict(tiny_study, overrides={path: value})
    assert dense_cache_key(changed) != dense_cache_key(base)


def test_measurement_and_study_name_do_not_change_the_key(tiny_study):
    base = config_from_dict(tiny_study)
    assert dense_cache_key(config_from_dict(tiny_study, overrides={"measure.repeats": 50})) == dense_cache_key(base)
    assert dense_cache_key(config_from_dict(tiny_study)) == dense_cache_key(base)


def test_changed_setting_trains_a_new_checkpoint(tiny_study, runs_dir):
    a = ensure_dense(config_from_dict(tiny_study), runs_dir)
    b = ensure_dense(config_from_dict(tiny_study, overrides={"train.lr": 0.005}), runs_dir)
    assert not b.cached and b.key != a.key
    assert a.checkpoint.is_file() and b.checkpoint.is_file()
    assert ensure_dense(config_from_dict(tiny_study), runs_dir).cached


def test_seeded_runs_are_reproducible(tiny_config, tmp_path):
    a = ensure_dense(tiny_config, tmp_path / "a")
    b = ensure_dense(tiny_config, tmp_path / "b")
    assert not a.cached and not b.cached
    assert a.metrics["val_accuracy"] == b.metrics["val_accuracy"]
    assert a.metrics["val_loss"] == b.metrics["val_loss"]
    sa = torch.load(a.checkpoint, weights_only=False)["state_dict"]
    sb = torch.load(b.checkpoint, weights_only=False)["state_dict"]
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    assert a.history == b.history

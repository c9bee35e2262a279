"""A trial's nested run is written in three requests (the run with its tags, one batch of metrics and
parameters, the end), not one per tag: at many workers the tracking server's requests are the ceiling
(benchmarks/storage_ceiling.py). What the run holds is unchanged."""

from __future__ import annotations

from autoprune.tracking.tracker import Tracker, default_tracking_uri


def _result(n_history: int = 10) -> dict:
    return {
        "state": "complete", "val_accuracy": 0.9, "test_accuracy": 0.8, "size_bytes": 1000, "params": 250, "nonzero_params": 200, "macs": 5000,
        "latency_ms": 0.2, "latency_device": "cpu, 1 thread, torch", "duration_s": 2.0, "hidden_sizes": [[8]], "precision": "float32",
        "reason": "size 1000 B exceeds max_size_bytes=10", "dense": {"size_bytes": 4000},
        "sparsity": {"overall": 0.5, "rnn": 0.5, "per_group": {"rnn.0.forward.ih": 0.5}, "hidden_units": {"rnn.0.forward": 0.5}},
        "history": [{"epoch": e, "val_accuracy": 0.5, "val_loss": 1.0, "train_loss": 1.1} for e in range(n_history)],
    }


def test_a_trial_run_is_three_requests_and_holds_everything(tmp_path):
    policy = {"method": "magnitude", "granularity": "unstructured", "sparsity": 0.5}
    tracker = Tracker(default_tracking_uri(tmp_path), "tiny", str(tmp_path))
    tracker.start_parent({"study": "tiny"}, {"val_accuracy": 0.9, "test_accuracy": 0.9, "size_bytes": 4000, "params": 1000})
    calls = []
    for name in ("create_run", "set_tag", "log_batch", "log_metric", "log_param", "set_terminated"):
        original = getattr(tracker.client, name)
        setattr(tracker.client, name, lambda *a, _n=name, _f=original, **k: (calls.append(_n), _f(*a, **k))[1])
    rid = tracker.log_trial(3, "complete", policy, _result(), None, 1000, 2000)
    assert calls == ["create_run", "log_batch", "set_terminated"]

    run = tracker.client.get_run(rid)
    tags = run.data.tags
    assert tags["autoprune.trial"] == "3" and tags["mlflow.parentRunId"] == tracker.parent_run_id and tags["autoprune.pareto"] == "false"
    assert tags["autoprune.latency_device"] == "cpu, 1 thread, torch" and tags["autoprune.hidden_sizes"] == "[[8]]"
    assert tags["autoprune.reason"].startswith("size 1000 B") and tags["autoprune.precision"] == "float32"
    assert run.data.metrics["val_accuracy"] == 0.9 and run.data.metrics["compression_ratio"] == 4.0
    assert len(tracker.client.get_metric_history(rid, "curve.val_loss")) == 10
    assert run.data.params["method"] == "magnitude" and run.info.status == "FINISHED"


def test_past_the_batch_limit_it_splits(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "tiny", str(tmp_path))
    tracker.start_parent({"study": "tiny"}, {"val_accuracy": 0.9, "test_accuracy": 0.9, "size_bytes": 4000, "params": 1000})
    rid = tracker.log_trial(0, "complete", None, _result(n_history=400), None, 1000, 2000)  # 1200 curve points
    assert len(tracker.client.get_metric_history(rid, "curve.train_loss")) == 400

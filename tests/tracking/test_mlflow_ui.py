"""The front link, the experiment's model-training tag and shared view, the SVG plot, --open."""

from __future__ import annotations

import json
import threading

import pytest

from autoprune.tracking.ui import FRONT_COLUMNS, front_plot_html, front_url, open_when_ready, prepare_experiment, study_links

ROWS = [
    {"trial": 0, "val_accuracy": 0.95, "test_accuracy": 0.94, "size_bytes": 1000, "size_ratio": 0.5, "latency_ms": 0.3, "hidden_sizes": [[8]]},
    {"trial": 1, "val_accuracy": 0.90, "test_accuracy": 0.91, "size_bytes": 200, "size_ratio": 0.1, "latency_ms": 0.2, "hidden_sizes": [[4]]},
    {"trial": 2, "val_accuracy": 0.80, "test_accuracy": 0.82, "size_bytes": 600, "size_ratio": 0.3, "latency_ms": None, "hidden_sizes": [[6]]},
]


def test_front_url_lands_on_the_model_training_runs_table():
    assert front_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=autoprune-front"
    )
    plain = front_url("http://h:1", "7", shared_view=False)
    assert "workflowType=machine_learning&searchFilter=tags.%60autoprune.pareto%60%20%3D%20%27true%27" in plain


def test_plot_is_small_offline_svg_with_the_front_marked():
    page = front_plot_html(ROWS, ROWS[:2], {"val_accuracy": 0.96}, "study s")
    assert len(page) < 20_000 and "<script src" not in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count('class="front"') == 2 and page.count('class="trial"') == 1
    assert "trial 1: val 0.9000, test 0.9100, 200 B (10.00 % of dense), 0.200 ms" in page
    assert "dense 0.9600" in page


def test_experiment_is_tagged_model_training_with_the_front_view(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    prepare_experiment(client, exp)
    tags = client.get_experiment(exp).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.autoprune-front"])
    assert view["searchFilter"] == "tags.`autoprune.pareto` = 'true'" and view["selectedColumns"] == FRONT_COLUMNS
    (chart,) = view["compareRunCharts"]
    assert (chart["type"], chart["xaxis"]["key"], chart["yaxis"]["key"]) == ("SCATTER", "size_bytes", "val_accuracy")
    parent = client.create_run(exp, tags={"autoprune.search": "true"}).info.run_id
    links = study_links("s", uri, "http://127.0.0.1:5001")
    assert links["front"].endswith(f"#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey=autoprune-front")
    assert links["plot"] == f"http://127.0.0.1:5001/#/experiments/{exp}/runs/{parent}/artifacts/pareto_front.html?workflowType=machine_learning"
    from autoprune.errors import TrialError

    with pytest.raises(TrialError, match=r"has no experiment 'nope'; run `autoprune search` for it first"):
        study_links("nope", uri, "http://127.0.0.1:5001")


def test_open_waits_for_the_server_then_opens_the_link(monkeypatch):
    import requests

    answers = iter([requests.ConnectionError("refused"), type("R", (), {"status_code": 200})()])

    def fake_get(url, timeout):
        assert url == "http://127.0.0.1:5002/health"
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    opened = []
    done = threading.Event()
    monkeypatch.setattr(requests, "get", fake_get)
    monkeypatch.setattr("webbrowser.open", lambda url: (opened.append(url), done.set()))
    open_when_ready("http://127.0.0.1:5002/#/x", "http://127.0.0.1:5002", timeout_s=10).join(10)
    assert opened == ["http://127.0.0.1:5002/#/x"]

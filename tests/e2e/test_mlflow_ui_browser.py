"""In a real browser (headless Chromium from the system, driven by Playwright): the link
``autoprune ui STUDY`` prints lands on the study's front in MLflow's model-training view,
with the metrics that matter, and the front plot renders in MLflow's artifact viewer.

Skipped, with the reason, where no system Chromium or no Playwright exists; ``.ci/run``
installs Chromium (``apt-get install chromium``) so CI runs it. No browser is downloaded.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autoprune.config import config_from_dict
from autoprune.search.run import run_search

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium on PATH (Debian: apt-get install -y chromium); .ci/run installs it"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed (the dev extra pins it)"),
]

_spec = importlib.util.spec_from_file_location("_autoprune_tests_root_conftest_ui", Path(__file__).parents[1] / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("ui") / "runs"
    data = copy.deepcopy(_root_conftest.TINY_STUDY)
    data["search"] = {
        "trials": 5,
        "population_size": 4,
        "finetune": {"epochs": [2, 3]},
        "schedule": {"kinds": ["agp", "one_shot"], "end_before_last": 0},
        "early_stop": {"after_epochs": None},
    }
    summary = run_search(config_from_dict(data, source="tiny.yaml"), str(runs))
    assert summary.pareto
    return runs, summary


@pytest.fixture(scope="module")
def ui_links(finished_study):
    runs, _ = finished_study
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "--runs-dir", str(runs), "ui", "tiny", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        front = lines[0].split("MLflow UI: ", 1)[1].split()[0]
        plot = lines[1].split("front plot: ", 1)[1].strip()
        import requests

        deadline = time.time() + 90
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, "the MLflow UI exited: " + proc.stdout.read()
            assert time.time() < deadline, "the MLflow UI did not answer within 90 s"
            time.sleep(0.5)
        yield front, plot
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


def test_link_shows_the_front_in_the_model_training_runs_table(finished_study, ui_links, browser):
    _, summary = finished_study
    front, _ = ui_links
    assert "workflowType=machine_learning" in front
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(front)
    front_trials = {r["trial"] for r in summary.pareto}
    for n in front_trials:
        page.get_by_text(f"trial-{n}", exact=True).first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    for column in ("val_accuracy", "test_accuracy", "size_bytes", "latency_ms"):
        assert column in body
    n = len(front_trials)
    assert f"{n} matching runs" in body or (n == 1 and "1 matching run" in body), body[-2000:]  # MLflow says "run" for one
    others = {t for t in range(summary.n_trials)} - front_trials
    for n in others:
        assert page.get_by_text(f"trial-{n}", exact=True).count() == 0
    assert "No data available" not in body  # not the GenAI traces overview
    page.close()


def test_chart_view_shows_the_front_as_a_scatter(finished_study, ui_links, browser):
    _, summary = finished_study
    front, _ = ui_links
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(front + "&compareRunsMode=CHART")  # what the Chart toggle above the table opens
    page.get_by_text("Pareto front", exact=True).first.wait_for(timeout=60_000)
    points = page.locator(".scatterlayer .point")
    deadline = time.time() + 30
    while points.count() < len(summary.pareto) and time.time() < deadline:
        time.sleep(0.5)
    assert points.count() == len(summary.pareto)
    page.close()


def test_front_plot_renders_in_the_artifact_viewer(finished_study, ui_links, browser):
    _, summary = finished_study
    _, plot = ui_links
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(plot)
    viewer = page.frame_locator("iframe.mlflow-html-iframe")  # MLflow's sandboxed artifact viewer
    points = viewer.locator("circle.front")
    points.first.wait_for(timeout=60_000)
    assert points.count() == len(summary.pareto)
    assert viewer.locator("svg").first.bounding_box()["height"] > 100  # drawn, not blank
    labels = [points.nth(i).get_attribute("data-label") for i in range(points.count())]
    assert {int(t.split(":")[0].split()[1]) for t in labels} == {r["trial"] for r in summary.pareto}
    html = Path(summary.artifacts["pareto_front.html"]).read_text()
    assert len(html) < 50_000 and "<script src" not in html  # small, nothing from the network
    page.close()

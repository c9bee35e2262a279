"""The multi-fidelity search on the Ray runner (issue 21 item 4): a promoted candidate retrains from its saved,
pruned weights on whichever Tune trial claims it, and the Optuna study stays the one record (exact trial count,
each promotion once, its source's architecture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autoprune.search import attrs

from .conftest import study_dict

pytest.importorskip("ray", reason="Ray missing: pip install -c constraints.txt -e '.[cluster]'")
pytestmark = pytest.mark.slow


def test_a_ray_search_promotes_from_saved_weights_and_counts_exactly(tmp_path):
    data = study_dict(
        trials=8, warm_start=False, recipe_check={"enabled": False}, recovery=["finetune", "rewind"], recovery_epochs=2,
        fidelity={"enabled": True, "share": 0.25, "eta": 2}, sampler="tpe", finetune={"epochs": [2, 3]},
        schedule={"kinds": ["agp"], "end_before_last": 0}, early_stop={"after_epochs": None},
    )
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run([sys.executable, "-m", "autoprune", "--runs-dir", "runs", "search", str(cfg), "--backend", "ray", "--concurrency", "2", "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1500, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(res.stdout)
    journal = Path(tmp_path / "runs" / "tiny" / "optuna.journal")
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 8 == summary["n_complete"] + summary["n_stopped_early"]
    promoted = [t for t in trials if attrs.PROMOTED_FROM in t.user_attrs]
    assert len(promoted) == 2  # round(0.25 * 8), each promoted once
    assert len({t.user_attrs[attrs.PROMOTED_FROM] for t in promoted}) == 2
    by_number = {t.number: t for t in trials}
    for t in promoted:
        assert t.state == TrialState.COMPLETE and t.user_attrs[attrs.BACKEND] == "ray" and t.user_attrs.get(attrs.NODE)
        source = by_number[t.user_attrs[attrs.PROMOTED_FROM]]
        assert t.params == source.params and t.number > source.number
        assert t.user_attrs[attrs.POLICY]["recovery"] == "rewind" and source.user_attrs[attrs.POLICY]["recovery"] == "finetune"
        assert t.user_attrs[attrs.RESULT]["hidden_sizes"] == source.user_attrs[attrs.RESULT]["hidden_sizes"]
    sampled = [t for t in counted if attrs.PROMOTED_FROM not in t.user_attrs]
    assert all(t.user_attrs[attrs.POLICY]["recovery"] == "finetune" for t in sampled)  # sampled trials only fine-tune

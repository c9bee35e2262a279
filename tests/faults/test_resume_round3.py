"""Issue 22 (round 3), resuming a study: no policy is run twice (G23), interrupted warm-start policies run
again (D7), a study whose dense model changed is refused before any trial (G2); the objectives are named
for Optuna Dashboard (G17)."""

from __future__ import annotations

import json
import signal

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.pruning.policy import policy_from_dict

from .conftest import load_study, run_cli, running_trials, start_cli, study_yaml, wait_for

pytestmark = pytest.mark.faults

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def _policies(study):
    return [json.dumps(t.user_attrs["autoprune.policy"], sort_keys=True) for t in study.get_trials(deepcopy=False) if t.state in COUNTED]


class _OnePolicy:
    """A search space that always proposes the same policy (as a sampler restarted from its seed did)."""

    def suggest(self, trial):
        return policy_from_dict({"method": "magnitude", "granularity": "unstructured", "sparsity": 0.5, "finetune": {"epochs": 2}}, source="test")


def test_a_finished_policy_is_never_trained_again():
    from autoprune.search.tell import DuplicatePolicy, run_and_tell, start_trial

    study = optuna.create_study(directions=["maximize", "minimize"])
    first = study.ask()
    start_trial(first, _OnePolicy(), "local")
    study.tell(first, [0.9, 100.0])
    again = study.ask()
    with pytest.raises(DuplicatePolicy, match=r"the same policy as trial 0, which ran to the end; not trained again"):
        start_trial(again, _OnePolicy(), "local")
    study.tell(again, state=TrialState.FAIL)
    # through the tell path: a failure (not counted: another policy is asked in its place), never trained
    trial = study.ask()
    assert run_and_tell(study, trial, lambda: start_trial(trial, _OnePolicy(), "local")) == TrialState.FAIL
    assert study.trials[-1].user_attrs["autoprune.error"].startswith("DuplicatePolicy: the same policy as trial 0")
    # a policy whose trials all failed may run again
    other = optuna.create_study(directions=["maximize", "minimize"])
    failed = other.ask()
    start_trial(failed, _OnePolicy(), "local")
    other.tell(failed, state=TrialState.FAIL)
    start_trial(other.ask(), _OnePolicy(), "local")


def test_sampler_streams_differ_per_run_and_driver():
    from autoprune.search.study import run_salt

    assert run_salt(0, shared=False) == 0  # a new study on one machine: reproducible from search.seed
    assert run_salt(4, shared=False) not in (0, run_salt(6, shared=False))
    assert run_salt(0, shared=True) != 0


@pytest.mark.slow
def test_g23_resume_proposes_new_policies_and_names_the_objectives(work):
    cfg = study_yaml(work / "s.yaml", search={"trials": 4, "recipe_check": {"enabled": False}, "early_stop": {"after_epochs": None}})
    for total in (4, 6):
        res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg), "--trials", str(total)], work, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
    study = load_study(work / "runs")
    policies = _policies(study)
    assert len(policies) == 6 and len(set(policies)) == 6, policies  # trial 4 repeated trial 3 exactly
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]  # new proposals, not duplicates refused
    assert study.metric_names == ["val_accuracy", "size_bytes"]


@pytest.mark.slow
def test_d7_interrupted_warm_start_policy_runs_again(work):
    runs = work / "runs"
    cfg = study_yaml(work / "s.yaml", search={"trials": 2, "recipe_check": {"enabled": False}, "finetune": {"epochs": [60, 60]}})
    proc = start_cli(["--runs-dir", "runs", "search", str(cfg)], work)
    try:
        running = wait_for(lambda: running_trials(runs), 300, "a running warm-start trial")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (work / "stderr.log").read_text()[-2000:]
    warm = running[0].system_attrs.get("fixed_params")
    assert warm, "trial 0 is the enqueued warm-start policy"
    res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg)], work, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    study = load_study(runs)
    trials = study.get_trials(deepcopy=False)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and interrupted[0].user_attrs.get("autoprune.interrupted") is True
    assert [t for t in trials if t.state in COUNTED and t.system_attrs.get("fixed_params") == warm]  # ran to the end this time


@pytest.mark.slow
def test_g2_changed_dense_model_is_refused_before_any_trial(work):
    runs = work / "runs"
    cfg = study_yaml(work / "s.yaml", search={"trials": 2, "recipe_check": {"enabled": False}})
    res = run_cli(["-q", "--runs-dir", "runs", "search", str(cfg)], work, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    before = sorted(p.name for p in (runs / "tiny" / "dense").iterdir())
    n_trials = len(load_study(runs).get_trials(deepcopy=False))
    wider = study_yaml(work / "wider.yaml", model={"cell": "lstm", "hidden_sizes": [24]}, search={"trials": 4, "recipe_check": {"enabled": False}})
    res = run_cli(["--runs-dir", "runs", "search", str(wider)], work, timeout=600)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert "study 'tiny' was searched on another dense model (model.hidden_sizes [16] -> [24])" in lines[0]
    assert "search under another --study name, or put those settings back" in lines[0]
    assert sorted(p.name for p in (runs / "tiny" / "dense").iterdir()) == before  # no second dense model trained
    assert len(load_study(runs).get_trials(deepcopy=False)) == n_trials
    res = run_cli(["--runs-dir", "runs", "search", str(wider), "--study", "tiny_wider", "-q"], work, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(["--runs-dir", "runs", "pareto", "tiny", "--all"], work)
    assert res.returncode == 0 and "Traceback" not in res.stderr

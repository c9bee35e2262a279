"""The Optuna backend of ``autoprune search``: storage, workers, resume, MLflow sync.

* Storage: an Optuna journal file ``runs/<study>/optuna.journal`` (made for several
  local worker processes) or any Optuna storage URL.
* ``workers`` processes each run ``study.optimize`` with one torch thread; the main
  process holds the study lock, syncs finished trials to MLflow and shows progress.
* Running the same command again resumes: finished trials are kept, trials left
  RUNNING by a killed process are marked FAIL, and ``trials`` counts the total of
  complete and stopped-early trials.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from autoprune.config import StudyConfig, config_from_dict
from autoprune.errors import ConfigError, ConstraintError, TrialError

__all__ = ["run_search", "SearchSummary", "open_study", "study_paths", "StudyLock"]

log = logging.getLogger(__name__)

_OBJECTIVE_DIRECTIONS = {"val_accuracy": "maximize", "size_bytes": "minimize", "latency_ms": "minimize"}


def study_paths(runs_dir: str | os.PathLike, study: str) -> Dict[str, Path]:
    root = Path(runs_dir) / study
    return {"root": root, "journal": root / "optuna.journal", "meta": root / "search.json", "lock": root / "search.lock", "trials": root / "trials"}


def _storage(storage: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        return storage
    return JournalStorage(JournalFileBackend(storage))


def open_study(study: str, runs_dir: str | os.PathLike = "runs"):
    """Load a searched study by name; returns (optuna study, search meta dict).

    Raises:
        TrialError: no search has been run for this study (lists the studies that have one).
    """
    paths = study_paths(runs_dir, study)
    if not paths["meta"].is_file():
        known = sorted(p.parent.name for p in Path(runs_dir).glob("*/search.json")) if Path(runs_dir).is_dir() else []
        raise TrialError(
            f"unknown study '{study}' under {runs_dir}/: no search has been run for it"
            + (f"; studies with a search: {', '.join(known)}" if known else "; run `autoprune search CONFIG` first")
        )
    meta = json.loads(paths["meta"].read_text())
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=_storage(meta["storage"])), meta


class StudyLock:
    """An exclusive lock on a study's directory: a second search on the same study is refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: Any = None

    def __enter__(self) -> "StudyLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise TrialError(
                f"another search is already running on study '{self.path.parent.name}' ({holder}); "
                f"wait for it to finish, or give this one another --study name (use --workers N to search in parallel)"
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fh:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()


@dataclass
class SearchSummary:
    study: str
    n_trials: int
    n_complete: int
    n_infeasible: int
    n_stopped_early: int
    n_failed: int
    pareto: List[Dict[str, Any]]
    dense: Dict[str, Any]
    hypervolume: float
    mlflow_experiment_id: Optional[str]
    mlflow_parent_run_id: Optional[str]
    tracking_uri: Optional[str]
    storage: str
    duration_s: float
    artifacts: Dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def to_json(self) -> Dict[str, Any]:
        from dataclasses import asdict

        out = asdict(self)
        out["pareto"] = [{k: v for k, v in row.items() if k not in ("error",)} for row in self.pareto]
        return out


def _make_sampler(config: StudyConfig, worker: int):
    import optuna

    s = config.search
    seed = s.seed + worker
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed)
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(10, s.trials))
    return optuna.samplers.RandomSampler(seed=seed)


def _counts_toward_total():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def make_objective(config: StudyConfig, runs_dir: str, dense_arch_dict: Dict[str, Any]) -> Callable:
    """The Optuna objective: suggest a policy, ``run_trial`` it, record the result. Picklable inputs only."""
    import optuna

    from autoprune.models.arch import ArchSpec
    from autoprune.search.space import SearchSpace
    from autoprune.search.trial import TrialOptions, run_trial

    space = SearchSpace(config, ArchSpec.from_dict(dense_arch_dict))
    s = config.search
    c = s.constraints
    paths = study_paths(runs_dir, config.study)

    def objective(trial: "optuna.Trial"):
        policy = space.suggest(trial)
        trial.set_user_attr("autoprune.policy", policy.to_dict())
        options = TrialOptions(
            runs_dir=runs_dir,
            trial_dir=str(paths["trials"] / str(trial.number)),
            max_latency_ms=c.max_latency_ms,
            max_size_bytes=c.max_size_bytes,
            early_stop_after=s.early_stop.after_epochs,
            early_stop_max_drop=s.early_stop.max_drop,
        )
        try:
            result = run_trial(config, policy, options)
        except Exception as err:
            trial.set_user_attr("autoprune.error", f"{type(err).__name__}: {err}"[:2000])
            raise
        data = result.to_dict()
        data.pop("pruning_history", None)
        trial.set_user_attr("autoprune.state", result.state)
        trial.set_user_attr("autoprune.result", data)
        if result.state == "stopped_early":
            raise optuna.TrialPruned(result.reason)
        size = result.size_bytes
        if result.state == "infeasible":
            # not trained: no accuracy exists; 0 keeps the trial dominated, the constraint tells the sampler why
            from autoprune.models.rnn import RNNClassifier

            size = sum(p.numel() for p in RNNClassifier(ArchSpec(**{**dense_arch_dict, "hidden_sizes": result.hidden_sizes})).parameters()) * 4
        if c.max_latency_ms is not None:
            trial.set_constraint("latency_ms", (result.latency_ms or 0.0) - c.max_latency_ms)
        if c.max_size_bytes is not None:
            trial.set_constraint("size_bytes", float(size) - c.max_size_bytes)
        values = [result.val_accuracy if result.val_accuracy is not None else 0.0, float(size)]
        if "latency_ms" in s.objectives:
            values.append(float(result.latency_ms or 0.0))
        return values

    return objective


def _worker_main(config_dict: Dict[str, Any], runs_dir: str, storage: str, study: str, total: int, worker: int, dense_arch: Dict[str, Any], deadline: Optional[float]) -> None:
    """Entry point of a worker process (spawned: nothing inherited but these plain arguments)."""
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides; it terminates us
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("autoprune").setLevel(logging.WARNING)
    config = config_from_dict(config_dict, source="<search worker>")
    st = optuna.load_study(study_name=study, storage=_storage(storage), sampler=_make_sampler(config, worker))
    timeout = max(1.0, deadline - time.time()) if deadline else None
    st.optimize(
        make_objective(config, runs_dir, dense_arch),
        timeout=timeout,
        callbacks=[optuna.study.MaxTrialsCallback(total, states=_counts_toward_total())],
        catch=(Exception,),
        gc_after_trial=False,
    )


def _mark_stale(study: Any) -> int:
    """Trials left RUNNING by a killed search: mark them FAIL (we hold the study lock).

    WAITING trials (enqueued warm-start policies not yet run) stay: the next optimize runs them.
    """
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_user_attr(t._trial_id, "autoprune.error", "interrupted: the search process stopped during this trial")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            n += 1
        except Exception:  # another process finished it meanwhile
            pass
    return n


def check_latency_budget(config: StudyConfig, space: Any, settings: Any, cache: Any) -> Optional[float]:
    """Refuse, before any training, a latency budget no allowed architecture can meet."""
    budget = config.search.constraints.max_latency_ms
    if budget is None:
        return None
    arch = space.smallest_arch() or space.arch
    fastest = cache.get(arch, settings)
    if fastest > budget:
        how = "with every allowed hidden unit removed" if space.smallest_arch() else "(unstructured pruning does not change latency; allow granularity hidden_unit)"
        raise ConstraintError(
            f"max_latency_ms={budget} cannot be met: the smallest architecture the search space allows, "
            f"{arch.hidden_sizes} hidden units {how}, takes {fastest:.3f} ms "
            f"(batch {settings['batch_size']}, {settings['seq_len']} steps, {settings['threads']} thread(s), {settings['runtime']}); "
            f"raise the budget or widen search.sparsity.units"
        )
    return fastest


def run_search(
    config: StudyConfig,
    runs_dir: str = "runs",
    tracking_uri: Optional[str] = None,
    storage: Optional[str] = None,
    progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchSummary:
    """Search pruning policies for the study's dense model.

    Args:
        config: the validated study config; ``config.search`` holds the space, budget and sampler.
        runs_dir: output root.
        tracking_uri: MLflow tracking URI; default: the embedded store under ``runs_dir``.
        storage: Optuna storage URL; default: a journal file under ``runs/<study>/``.
        progress: called with a status dict after every finished trial.

    Raises:
        ConfigError / ConstraintError / TrialError: before any training, for bad settings,
        an unreachable tracking server, an impossible latency budget or a study already
        being searched.
    """
    import optuna

    from autoprune.dense import ensure_dense
    from autoprune.search.latency import LatencyCache, LatencySettings
    from autoprune.search.pareto import front_rows, hypervolume, trial_row, trial_state
    from autoprune.search.space import SearchSpace
    from autoprune.tracking import Tracker, check_tracking_uri, default_tracking_uri

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.time()
    s = config.search
    paths = study_paths(runs_dir, config.study)
    uri = tracking_uri or default_tracking_uri(runs_dir)
    check_tracking_uri(uri)
    storage = storage or str(paths["journal"])

    with StudyLock(paths["lock"]):
        # ---- everything that can be refused is refused before training the dense model
        from autoprune.dense import build_datamodule
        from autoprune.models.arch import ArchSpec

        dm = build_datamodule(config)
        arch = ArchSpec.from_config(config.model, dm.n_channels, dm.n_classes)
        space = SearchSpace(config, arch)
        settings = LatencySettings.from_config(config.measure, dm.max_length)
        cache = LatencyCache(paths["root"] / "latency_cache.json")
        check_latency_budget(config, space, settings, cache)
        budget = s.constraints.max_latency_ms
        if budget is not None and "unstructured" in s.granularities and "hidden_unit" in s.granularities:
            if cache.get(arch, settings) > budget:
                # unstructured zeros leave the shapes, and so the latency, of the dense model: never feasible here
                log.info("the dense model takes longer than max_latency_ms=%s: searching hidden_unit pruning only", budget)
                s = s.model_copy(update={"granularities": ["hidden_unit"]})
                config = config.model_copy(update={"search": s})
                space = SearchSpace(config, arch)

        dense = ensure_dense(config, runs_dir)
        directions = [_OBJECTIVE_DIRECTIONS[o] for o in s.objectives]
        study = optuna.create_study(
            study_name=config.study, storage=_storage(storage), directions=directions, sampler=_make_sampler(config, 0), load_if_exists=True
        )
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(
                f"study '{config.study}' was searched with objectives {[d.name.lower() for d in study.directions]}, "
                f"this config asks for {s.objectives}; use another --study name"
            )
        stale = _mark_stale(study)
        if stale:
            log.info("marked %d trial(s) left running by an interrupted search as failed", stale)
        if s.warm_start and not study.get_trials(deepcopy=False):
            for params in space.warm_start_params()[: max(0, s.trials - 1)]:
                study.enqueue_trial(params, skip_if_exists=True)
        paths["meta"].write_text(json.dumps({"storage": storage, "tracking_uri": uri, "config": config.to_dict(), "dense_checkpoint": str(dense.checkpoint)}, indent=2))

        tracker = Tracker(uri, config.study, runs_dir)
        dense_info = {**dense.metrics, "size_bytes": dense.metrics["params"] * 4, "latency_ms": cache.get(dense.arch, settings)}
        tracker.start_parent(config.to_dict(), dense_info)
        meta = json.loads(paths["meta"].read_text())
        meta.update({"mlflow_experiment_id": tracker.experiment_id, "mlflow_parent_run_id": tracker.parent_run_id})
        paths["meta"].write_text(json.dumps(meta, indent=2))

        total = s.trials
        deadline = started + s.timeout if s.timeout else None
        counted = _counts_toward_total()

        last: Dict[str, Any] = {"n_finished": -1, "status": {}}

        def sync() -> Dict[str, Any]:
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state.is_finished()]
            if len(finished) == last["n_finished"]:
                return last["status"]  # nothing new: leave the CPU to the workers
            for t in sorted(finished, key=lambda t: t.number):
                if tracker.trial_run_id(t.number) is None:
                    st = trial_state(t)
                    tracker.log_trial(
                        t.number,
                        st,
                        t.user_attrs.get("autoprune.policy"),
                        t.user_attrs.get("autoprune.result"),
                        t.user_attrs.get("autoprune.error"),
                        int(t.datetime_start.timestamp() * 1000) if t.datetime_start else None,
                        int(t.datetime_complete.timestamp() * 1000) if t.datetime_complete else None,
                    )
            front = front_rows(study)
            tracker.set_pareto([r["trial"] for r in front])
            # feasible only (a size budget broken after training keeps state "complete"), as on the front
            complete = sorted((t for t in finished if trial_state(t) == "complete" and all(v <= 0 for v in t.constraints.values())), key=lambda t: t.number)
            rows_so_far: List[Dict[str, Any]] = []
            for t in complete:
                rows_so_far.append(trial_row(t))
                if t.number not in tracker._hv_logged:
                    tracker.log_hypervolume(t.number, hypervolume(rows_so_far))  # dominated points add nothing
            best = max((r["val_accuracy"] for r in front), default=None)
            last["n_finished"] = len(finished)
            last["status"] = {
                "done": sum(1 for t in finished if t.state in counted),
                "total": total,
                "front": len(front),
                "best_val_accuracy": best,
                "failed": sum(1 for t in finished if trial_state(t) == "failed"),
            }
            return last["status"]

        interrupted = False
        status = sync()
        if progress:
            progress(status)
        try:
            remaining = total - status["done"]
            if remaining > 0 and (deadline is None or time.time() < deadline):
                if s.workers <= 1:
                    def after(st: Any, frozen: Any) -> None:
                        nonlocal status
                        status = sync()
                        if progress:
                            progress(status)

                    import torch

                    torch.set_num_threads(1)
                    study.optimize(
                        make_objective(config, runs_dir, dense.arch.to_dict()),
                        timeout=(deadline - time.time()) if deadline else None,
                        callbacks=[optuna.study.MaxTrialsCallback(total, states=counted), after],
                        catch=(Exception,),
                        gc_after_trial=False,
                    )
                else:
                    status = _run_workers(config, runs_dir, storage, total, dense.arch.to_dict(), deadline, sync, progress)
        except KeyboardInterrupt:
            interrupted = True
            _mark_stale(study)
        finally:
            status = sync()
            artifacts = write_front_artifacts(study, tracker, dense_info, paths["root"], s.objectives)
            tracker.finish_parent("KILLED" if interrupted else "FINISHED")

    trials = study.get_trials(deepcopy=False)
    states = [trial_state(t) for t in trials]
    front = front_rows(study)
    summary = SearchSummary(
        study=config.study,
        n_trials=len(trials),
        n_complete=states.count("complete"),
        n_infeasible=states.count("infeasible"),
        n_stopped_early=states.count("stopped_early"),
        n_failed=states.count("failed"),
        pareto=front,
        dense={k: dense_info[k] for k in ("val_accuracy", "test_accuracy", "size_bytes", "params", "latency_ms")},
        hypervolume=hypervolume(front),
        mlflow_experiment_id=tracker.experiment_id,
        mlflow_parent_run_id=tracker.parent_run_id,
        tracking_uri=uri,
        storage=storage,
        duration_s=round(time.time() - started, 2),
        artifacts=artifacts,
        interrupted=interrupted,
    )
    if interrupted:
        raise KeyboardInterrupt(summary)
    return summary


def _run_workers(config: StudyConfig, runs_dir: str, storage: str, total: int, dense_arch: Dict[str, Any], deadline: Optional[float], sync: Callable, progress: Optional[Callable]) -> Dict[str, Any]:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(config.to_dict(), runs_dir, storage, config.study, total, w, dense_arch, deadline),
            name=f"autoprune-worker-{w}",
            daemon=False,
        )
        for w in range(config.search.workers)
    ]
    for p in procs:
        p.start()
    status: Dict[str, Any] = {}
    last_done = -1
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(2.0)
            status = sync()
            if progress and status["done"] != last_done:
                progress(status)
                last_done = status["done"]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        raise
    for p in procs:
        p.join()
    return sync()


def write_front_artifacts(study: Any, tracker: Any, dense: Dict[str, Any], out_dir: Path, objectives: List[str]) -> Dict[str, str]:
    """pareto_front.csv, an interactive plotly HTML (Optuna's Pareto plot) and a static PNG, logged to the parent run."""
    import csv

    from autoprune.search.pareto import front_rows, trial_row, trial_state

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = front_rows(study)
    csv_path = out_dir / "pareto_front.csv"
    cols = ["trial", "val_accuracy", "test_accuracy", "size_bytes", "size_ratio", "latency_ms", "macs", "hidden_sizes", "method", "granularity", "schedule"]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "hidden_sizes": json.dumps(r["hidden_sizes"])})
    out = {"pareto_front.csv": str(csv_path)}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and trial_state(t) == "complete"]
    if complete:
        import optuna

        names = {"val_accuracy": "validation accuracy", "size_bytes": "size (bytes)", "latency_ms": "latency (ms)"}
        try:
            fig = optuna.visualization.plot_pareto_front(study, target_names=[names[o] for o in objectives])
            html = out_dir / "pareto_front.html"
            fig.write_html(str(html), include_plotlyjs=True)
            out["pareto_front.html"] = str(html)
        except Exception as err:  # plotting must never lose a search
            log.warning("could not write the interactive Pareto plot: %s", err)
        png = out_dir / "pareto_front.png"
        _static_plot([trial_row(t) for t in complete], rows, dense, png)
        out["pareto_front.png"] = str(png)
    if tracker is not None and tracker.parent_run_id:
        for path in out.values():
            tracker.log_file(tracker.parent_run_id, path)
    return out


def _static_plot(all_rows: List[Dict[str, Any]], front: List[Dict[str, Any]], dense: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([r["size_ratio"] * 100 for r in all_rows], [r["val_accuracy"] for r in all_rows], s=18, c="#bbbbbb", label="trials")
    fr = sorted(front, key=lambda r: r["size_ratio"])
    ax.plot([r["size_ratio"] * 100 for r in fr], [r["val_accuracy"] for r in fr], "o-", c="#d62728", label="Pareto front")
    ax.axhline(dense["val_accuracy"], ls="--", c="#1f77b4", lw=1, label=f"dense ({dense['val_accuracy']:.3f})")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("size, % of dense (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

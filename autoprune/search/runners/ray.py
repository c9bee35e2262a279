"""The Ray Tune runner: each trial is a Ray Tune trial that calls the same pure ``run_trial``.

* The sampler stays Optuna's: ``StudySearcher`` (a ``ray.tune.search.Searcher``) asks the
  search's own Optuna study on the driver, so trials land in the same study and storage as a
  local search (warm-start trials included: ``ask`` takes enqueued ones first).
* Results are told on the driver through the one tell path (``search.tell``): budgets become
  Optuna constraints, a trial stopped early is PRUNED, an error (or a worker or node that
  died) is FAIL with its error. Ray's stock ``OptunaSearch`` would tell a stopped trial
  COMPLETE and set no constraints; this one never does.
* The driver records to MLflow (``update()`` after every finished trial): one writer per run.
* ``trials`` counts like the local runner: the searcher stops asking when complete plus
  stopped-early trials (plus those in flight) reach the total, and asks again when one fails.
* Without ``search.ray.address`` a local Ray instance starts with its files under
  ``runs/<study>/ray``; with one, the driver joins that cluster. Trials read the dense
  checkpoint and write their weights under the runs folder: on several machines it must be
  one shared path (README "Scaling out"); a trial that cannot see it fails with that message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import ray
from ray import tune
from ray._private import ray_constants
from ray._private import utils as ray_utils
from ray.tune.search import Searcher

from autoprune.errors import ConfigError
from autoprune.layout import StudyPaths, study_paths
from autoprune.models.arch import ArchSpec
from autoprune.pruning.policy import policy_from_dict
from autoprune.search import attrs
from autoprune.search.claim import NotYet, counted, next_trial
from autoprune.search.interrupts import SignalScope, as_interrupt
from autoprune.search.objective import trial_options
from autoprune.search.runners import Runner, SearchJob, capped_workers
from autoprune.search.runners.reaper import Reaper
from autoprune.search.space import SearchSpace
from autoprune.search.tell import RecordedFailure, failure_attrs, record_result, resume_from, run_and_tell, start_trial
from autoprune.trial.run import run_trial
from autoprune.services.urls import written

__all__ = ["RayRunner", "StudySearcher"]

log = logging.getLogger(__name__)

#: set for every Ray process we start or join: no token auth for a local instance, no Tune
#: SIGINT handler (the driver's own handlers mark trials failed), no per-trial log files
_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_DISABLE_AUTO_INIT": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no experiment tables on the console (the driver shows progress)
}
LOCALHOST = "127.0.0.1"
_DIED = "the Ray worker running this trial stopped before reporting (its process or node died)"


def _trial_main(params: Dict[str, Any], job: SearchJob, dense_checkpoint: str) -> None:
    """A Ray Tune function trainable: one trial, on whichever node Ray chose."""
    metrics: Dict[str, Any] = {
        "val_accuracy": 0.0,
        "size_bytes": 0.0,
        "autoprune_node": ray.get_runtime_context().get_node_id(),
        "autoprune_host": f"{socket.gethostname()}:{os.getpid()}",
    }
    try:
        if not Path(dense_checkpoint).is_file():
            raise FileNotFoundError(
                f"the dense checkpoint {dense_checkpoint} is not visible on node {socket.gethostname()}: "
                f"on a cluster, --runs-dir must be one shared path (the same on every node)"
            )
        options = trial_options(job.config, job.runs_dir, params["number"])
        options.resume_from = params.get("resume_from")
        options.threads = max(1, int(job.config.search.ray.cpus_per_trial))
        # where the trial runs, written as it starts: a person (or a test) can see which node holds a running trial
        Path(options.trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(options.trial_dir) / "node.json").write_text(json.dumps({"node": metrics["autoprune_node"], "host": metrics["autoprune_host"]}))
        result = run_trial(job.config, policy_from_dict(params["policy"]), options)
        data = result.to_dict()
        data.pop("pruning_history", None)
        metrics.update(val_accuracy=float(result.val_accuracy or 0.0), size_bytes=float(result.size_bytes or 0), autoprune_result=json.dumps(data, default=str))
    except Exception as err:  # told FAIL on the driver, with the error the local runner would record
        metrics["autoprune_error"] = json.dumps(failure_attrs(err))
    tune.report(metrics)


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.config['number']}"


def _raise(err: BaseException) -> Any:
    raise err


class StudySearcher(Searcher):
    """A Ray Tune searcher on the search's own Optuna study: asks and tells it on the driver.

    Args:
        study: the open Optuna study (its sampler is the search's).
        job: the search job.
        space: the ``SearchSpace`` that turns an Optuna trial into a policy.
        update: the driver's recorder (MLflow sync, progress), called after each result.
    """

    def __init__(self, study: Any, job: SearchJob, space: Any, update: Callable[[], Dict[str, Any]]) -> None:
        super().__init__(metric=None, mode=None)  # multi-objective: the study knows its directions
        self._study = study
        self._job = job
        self._space = space
        self._update = update
        self._running: Dict[str, Any] = {}  # Tune trial id -> the Optuna trial it runs
        self._counted = (0, -math.inf)  # (count, when read)
        self.error: Optional[Exception] = None  # raised by the recorder (e.g. too many failures): re-raised after Tune stops

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: Dict, **spec: Any) -> bool:
        return True  # the space and the study are ours already

    def _done(self, fresh: bool = False) -> int:
        count, when = self._counted
        if fresh or time.time() - when > 1.0:  # others (local searches, other drivers) may add trials too
            count = counted(self._study)
            self._counted = (count, time.time())
        return count

    def suggest(self, trial_id: str) -> Optional[Dict[str, Any]]:
        # an ask or a tell is several writes (whatever the storage; each journal append holds signals on its own):
        # a Ctrl-C waits until they are all written, so a finished trial's result is never left half-told
        with SignalScope.held():
            return self._suggest(trial_id)

    def _suggest(self, trial_id: str) -> Optional[Dict[str, Any]]:
        job = self._job
        if self.error is not None or (job.deadline is not None and time.time() >= job.deadline):
            return Searcher.FINISHED
        done = self._done()
        if done >= job.total:
            return Searcher.FINISHED
        if done + len(self._running) >= job.total:
            return None  # enough in flight; ask again if one of them fails
        try:
            ot_trial = next_trial(self._study, self._job.promoter)
        except NotYet:  # only promotions are left; a running trial may earn one
            return None
        try:
            policy = start_trial(ot_trial, self._space, backend="ray")
        except Exception as err:  # as the local runner: the trial is recorded failed
            run_and_tell(self._study, ot_trial, lambda err=err: _raise(err))
            self._recorded()
            return None
        self._running[trial_id] = ot_trial
        return {"number": ot_trial.number, "policy": policy.to_dict(), "resume_from": resume_from(self._study, ot_trial)}

    def __getstate__(self) -> Dict[str, Any]:
        # Tune pickles its searcher with the experiment (for a restore we never use: the Optuna study is
        # the record); the driver-side members (open study, recorder, progress) stay out of it
        drop = {"_study", "_update", "_space", "_running"}
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def save(self, checkpoint_path: str) -> None:
        pass  # the Optuna study is the record; resume reruns the search, not Tune's experiment

    def restore(self, checkpoint_path: str) -> None:
        pass

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        pass  # one report per trial: everything happens on completion

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        ot_trial = self._running.pop(trial_id, None)
        if ot_trial is None:
            return
        result = result or {}
        with SignalScope.held():
            if result.get("autoprune_node"):
                ot_trial.set_user_attr(attrs.NODE, result["autoprune_node"])
                ot_trial.set_user_attr(attrs.HOST, result.get("autoprune_host"))
            run_and_tell(self._study, ot_trial, lambda: self._values(ot_trial, result))
            self._recorded()

    def _values(self, ot_trial: Any, result: Dict[str, Any]) -> List[float]:
        """The objective values of a finished Tune trial, from what its worker reported."""
        if result.get("autoprune_result"):
            return record_result(ot_trial, self._job.config, self._job.dense_arch, json.loads(result["autoprune_result"]))
        if result.get("autoprune_error"):
            raise RecordedFailure(json.loads(result["autoprune_error"]))
        raise RecordedFailure({attrs.ERROR: _DIED})

    def _recorded(self) -> None:
        """After a trial is told: count afresh and let the driver record (MLflow, progress, failure guard)."""
        self._done(fresh=True)
        try:
            self._update()
        except Exception as err:  # Tune would log and swallow it: stop asking, re-raise on the driver after fit
            self.error = err


def _ahead(r: Any) -> int:
    """1 when one trial may wait in Tune's queue without ever running beyond ``concurrency``.

    Tune keeps a finished trial's process for the next trial only when a trial is already
    waiting for its resources; otherwise every trial starts a new process and imports torch
    and Lightning again (seconds each). So ask one trial ahead, but only when the cluster's
    CPUs cannot run ``concurrency + 1`` trials at once (always so for the local instance).
    """
    return int(ray.cluster_resources().get("CPU", 0) < (r.concurrency + 1) * r.cpus_per_trial)


def _capped(job: SearchJob, study: Any) -> Any:
    """The config, with a local instance's concurrency capped at what this machine and the trials left allow (F7)."""
    s = job.config.search
    if s.ray.address:
        return job.config  # a cluster: its own resources decide
    n = capped_workers(s.ray.concurrency, job.total - counted(study), "search.ray.concurrency / --concurrency", s.ray.cpus_per_trial)
    if n == s.ray.concurrency:
        return job.config
    return job.config.model_copy(update={"search": s.model_copy(update={"ray": s.ray.model_copy(update={"concurrency": n})})})


def _fit(tuner: Any) -> None:
    """``tuner.fit()``, with the driver's Ctrl-C / SIGTERM kept as what it is: our handler raises
    ``SearchInterrupted`` wherever the driver's main thread is, and inside Ray's or Optuna's code it can
    come out as another exception raised while handling it (see :mod:`autoprune.search.interrupts`)."""
    try:
        tuner.fit()
    except Exception as err:
        found = as_interrupt(err)
        if found is not None:
            raise found from None
        raise


def _check_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse, with one line, a Ray address nothing answers at (before any training)."""
    if address == "auto":
        # what ray.init("auto") looks for: RAY_ADDRESS, or the file `ray start` leaves in /tmp/ray
        if not os.environ.get("RAY_ADDRESS") and not (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").is_file():
            raise ConfigError(
                "search.ray.address / --ray-address auto: no Ray cluster runs on this machine (no RAY_ADDRESS, no /tmp/ray/ray_current_cluster); "
                "start one with `ray start --head`, give the head's HOST:PORT, or leave it unset to start a local Ray instance"
            )
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"search.ray.address / --ray-address {address}: no Ray head answers there ({type(err).__name__}: {err}); "
            f"start one with `ray start --head --port {port}`, fix the address, or leave it unset to start a local Ray instance"
        ) from None


@contextlib.contextmanager
def _patched(module: Any, **values: Any) -> Iterator[None]:
    """Attributes of one of Ray's modules changed for one ``ray.init`` of this process, and restored after it
    (``ray._private.ray_constants`` is read from the environment when Ray is imported: too late to set it there)."""
    old = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def _ray_init(local: bool, **kwargs: Any) -> None:
    """``ray.init(**kwargs)`` with the driver's signals its own (D4), and for a ``local`` instance every server on 127.0.0.1 (A23).

    A SIGTERM while ray.init runs met Ray's C++ failure handler (abort, exit 134) or its Python handler
    (``sys.exit``, which can land in an at-fork hook and be lost): neither is installed, the driver's
    :class:`SignalScope` holds a signal until ray.init is done and then raises it.
    """
    scope = SignalScope.active
    try:
        with contextlib.ExitStack() as stack:
            if local:  # Ray keeps 127.0.0.1 as the node address (and binds every server to it) only off a cluster
                stack.enter_context(_patched(ray_constants, ENABLE_RAY_CLUSTER=False))
            stack.enter_context(_patched(ray_constants, RAY_DISABLE_FAILURE_SIGNAL_HANDLER=True))
            stack.enter_context(_patched(ray_utils, set_sigterm_handler=lambda handler: None))
            if scope is not None:
                stack.enter_context(scope.deferred())
            ray.init(**kwargs)
    except SystemExit as err:  # should Ray's own SIGTERM handler come back: sys.exit(SIGTERM) in place of ours
        if err.code == signal.SIGTERM:
            SignalScope.relay(signal.SIGTERM)
        raise
    finally:
        SignalScope.take_back()


def _private_temp_dir(paths: StudyPaths) -> Path:
    """Ray's files for a local instance (A24): ``r/`` inside a folder that only this user can enter.

    Ray makes its temp folder world-writable (0777: one Ray shared by several users), so it gets a
    folder one level down, under a parent of mode 0700 owned by this user: ``runs/<study>/ray`` when
    that path is short enough for Ray's Unix sockets (107 bytes with the session's own names), else
    ``/tmp/ap-ray-<hash of that path>`` with ``runs/<study>/ray`` linking to it. A parent that already
    exists is used only when it is a folder of this user's with mode 0700; anything else (another
    user's, a link, open to others, one an earlier version let Ray open) is left as it is, and a
    fresh folder is made with ``mkdtemp`` (a new name, mode 0700).
    """
    wanted = paths.ray.parent.resolve() / paths.ray.name  # not through the link this function may have made
    if len(str(wanted)) <= 38 and not wanted.is_symlink():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        if _private_folder(wanted):
            return wanted / "r"
    short = Path(tempfile.gettempdir()) / ("ap-ray-" + hashlib.sha1(str(wanted).encode()).hexdigest()[:10])
    if not _private_folder(short):
        short = Path(tempfile.mkdtemp(prefix="ap-ray-"))
    if wanted.is_symlink() and os.readlink(wanted) != str(short):
        wanted.unlink()  # the link autoprune made to an earlier folder (the folder itself stays)
    if not wanted.exists():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        wanted.symlink_to(short, target_is_directory=True)
    return short / "r"


def _private_folder(path: Path) -> bool:
    """Make ``path`` (mode 0700) unless it exists; True when it is now a folder only this user can enter."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = path.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not stat.S_IMODE(st.st_mode) & 0o077


class RayRunner(Runner):
    name = "ray"

    def __init__(self) -> None:
        self._started = False  # this process started a local Ray instance (and so must stop it)
        self._reaper = Reaper()

    def check(self, config: Any, storage: str) -> None:
        r = config.search.ray
        if r.address:
            _check_address(r.address)

    def _init(self, job: SearchJob) -> None:
        """Start a local Ray instance or join the cluster at ``search.ray.address``."""
        r = job.config.search.ray
        for key, value in _ENV.items():
            os.environ.setdefault(key, value)
        if ray.is_initialized():
            return
        if not r.address:
            self._start_local(job)
            return
        self._started = True  # stop() disconnects (the cluster keeps running)
        try:
            _ray_init(local=False, address=r.address, runtime_env={"env_vars": dict(_ENV)}, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as err:  # ConnectionError, RuntimeError, ...: one line, not Ray's traceback
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            raise ConfigError(f"search.ray.address / --ray-address {r.address}: cannot join the Ray cluster ({reason})") from None

    def _start_local(self, job: SearchJob) -> None:
        """A Ray instance of this search alone: every server on 127.0.0.1 (A23: with token auth off, nothing
        may listen beyond this machine), its files in a folder only this user can enter (A24), a watchdog
        that stops its processes however this driver ends (A23), and this driver's signals its own (D4)."""
        r = job.config.search.ray
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        temp = _private_temp_dir(study_paths(job.runs_dir, job.config.study))
        self._reaper.start(str(temp))
        self._started = True  # from here on stop() shuts down whatever ray.init got to start
        _ray_init(
            local=True,
            address="local",  # always a new instance: never silently join a cluster `ray start` left on this machine
            num_cpus=max(1, math.ceil(r.concurrency * r.cpus_per_trial)),
            **({"num_gpus": math.ceil(r.concurrency * r.gpus_per_trial)} if r.gpus_per_trial else {}),
            _node_ip_address=LOCALHOST,
            _temp_dir=str(temp),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )

    def run(self, job: SearchJob, study: Any, update: Callable[[], Dict[str, Any]]) -> None:
        dense_checkpoint = str(Path(job.dense_checkpoint).resolve()) if job.dense_checkpoint else ""
        # trials run elsewhere (another cwd, another node): every path they get is absolute; Tune pickles the job
        # (tuner.pkl, the object store) and the driver alone opens the study: no storage password goes with it
        job = dataclasses.replace(job, runs_dir=str(Path(job.runs_dir).resolve()), storage=written(job.storage), config=_capped(job, study))
        try:
            self._init(job)
            r = job.config.search.ray
            searcher = StudySearcher(study, job, SearchSpace(job.config, ArchSpec.from_dict(job.dense_arch)), update)
            resources = {"cpu": r.cpus_per_trial, **({"gpu": r.gpus_per_trial} if r.gpus_per_trial else {})}
            trainable = tune.with_resources(tune.with_parameters(_trial_main, job=job, dense_checkpoint=dense_checkpoint), resources)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=-1,
                    max_concurrent_trials=r.concurrency + _ahead(r),
                    reuse_actors=True,  # a trial's process keeps torch and Lightning imported for the next
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=str(study_paths(job.runs_dir, job.config.study).ray_results.resolve()),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            # results live in the Optuna study, not in Tune's (disabled) result files: no warning about them
            logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
            _fit(tuner)
            if searcher.error is not None:
                raise searcher.error
        finally:
            self.stop()

    def stop(self) -> None:
        """Disconnect from Ray: shut down the local instance this runner started (its trials' processes go
        with it; the watchdog kills what is left a few seconds later); leave a joined cluster running."""
        if self._started:
            self._started = False
            ray.shutdown()
        self._reaper.close()

"""storage_ceiling: where the study storage and the tracking server stop keeping up, by simulation.

N client processes run autoprune's real ask -> record -> tell path against one study: ``claim``
(the count of counted + running trials, then ``study.ask()`` with the shipped study's own sampler),
``start_trial`` (the policy from the real search space, its attributes), a trial body that only
sleeps (so that training CPU is not the limit), then ``run_and_tell`` with ``record_result`` (the
result, state and budget constraints a real trial records). Each client is a machine of its own
(its own ask lock file). Storages: the journal file (the default), SQLite, PostgreSQL, and
Optuna's gRPC storage proxy in front of that PostgreSQL (``autoprune search --storage grpc://HOST:PORT``).
Then the tracking server the same way: N clients log one nested MLflow run per trial (the real
``Tracker.log_trial``: parameters, metrics, tags, curve) to ``mlflow server --workers W``.

Reported per storage and N: trials told per second, p50 / p99 of ask (claim + policy) and tell
(record + tell) latency, errors, and how busy the machine's CPUs were (the clients, the server and
the proxy share this machine's cores: at 100 % CPU the machine, not the storage, is the limit).
One worker that runs trials of length T needs 1/T trials per second, so a storage that sustains
R trials per second serves about R x T workers: the capacity table in README "Scaling out".
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from benchmarks._common import Context, header, load_study_config, log, table, write_result

NAME = "storage_ceiling"
CLIENTS_FULL, CLIENTS_QUICK = (1, 8, 32, 128), (1, 8, 32)
SLEEP_S = 1.0  # the trial body: no CPU
MLFLOW_WORKERS = (1, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.3)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port} after {timeout} s")


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def postgres(max_connections: int) -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (as 'nobody' when run as root); yields the server URL without a database."""
    import glob

    path = os.pathsep.join([os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)])
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries missing (initdb, pg_ctl): apt-get install -y postgresql")
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="ap-bench-pg-"))
    if prefix:
        shutil.chown(root, "nobody")
    port = _free_port()
    subprocess.run(prefix + [initdb, "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} -c fsync=off"
    subprocess.run(prefix + [pg_ctl, "-D", str(root / "data"), "-o", opts, "-l", str(root / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(root / "data"), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _create_db(server: str, name: str) -> str:
    import psycopg

    port = server.rsplit(":", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@contextlib.contextmanager
def grpc_proxy(db_url: str) -> Iterator[str]:
    """Optuna's gRPC storage proxy in front of ``db_url``, in its own process; yields ``grpc://127.0.0.1:PORT``."""
    port = _free_port()
    code = (
        "import optuna, sys; from optuna.storages import RDBStorage, run_grpc_proxy_server; optuna.logging.set_verbosity(optuna.logging.WARNING); "
        f"run_grpc_proxy_server(RDBStorage({db_url!r}), host='127.0.0.1', port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        _reap(proc, 30)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, workers: int, artifacts: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port, 180)
        time.sleep(2)  # the port opens before every worker is ready
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _reap(proc, 60)


def _reap(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for a server the benchmark started to stop; one that does not within ``timeout`` (an MLflow server
    swamped by 128 clients did not) is killed with its process group."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"{NAME}: a server it started (pid {proc.pid}) did not stop within {timeout:.0f} s: killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------- clients


def _fake_result(arch: Any, policy: Any) -> Dict[str, Any]:
    """What a complete trial records (TrialResult.to_dict()), with plausible numbers and a 10-epoch curve."""
    return {
        "state": "complete", "val_accuracy": 0.9, "test_accuracy": 0.88, "val_loss": 0.3, "val_score": 0.9, "size_bytes": 50_000,
        "nonzero_params": 12_500, "params": 50_000, "macs": 1_000_000, "latency_ms": 0.5, "hidden_sizes": arch.hidden_sizes,
        "sparsity": {"overall": 0.8, "rnn": 0.8, "per_group": {"rnn.0.forward.ih": 0.8}, "hidden_units": {}},
        "dense": {"size_bytes": 500_000}, "history": [{"epoch": e, "val_accuracy": 0.9, "val_loss": 0.3, "train_loss": 0.3} for e in range(10)],
        "reason": None, "duration_s": SLEEP_S, "checkpoint": None, "precision": "float32", "int8": {},
    }


def _open_storage(url: str) -> Any:
    from autoprune.search.storage import Storage

    return Storage(url).open()


def _storage_client(args: tuple) -> Dict[str, Any]:
    """One client (a forked process): ask -> record -> tell until the deadline; latencies in seconds."""
    config, arch, url, lock, deadline, seed = args
    import optuna

    from autoprune.search.claim import claim
    from autoprune.search.samplers import make_sampler
    from autoprune.search.space import SearchSpace
    from autoprune.search.tell import record_result, run_and_tell, start_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out: Dict[str, Any] = {"ask": [], "tell": [], "errors": 0, "error": ""}
    try:
        study = optuna.load_study(study_name=config.study, storage=_open_storage(url), sampler=make_sampler(config, seed))
        space = SearchSpace(config, arch)
    except Exception as err:
        return {**out, "errors": 1, "error": f"{type(err).__name__}: {str(err)[:160]}"}
    while time.time() < deadline:
        try:
            t0 = time.perf_counter()
            trial = claim(study, 10**9, Path(lock))
            policy = start_trial(trial, space, backend="local")
            t1 = time.perf_counter()
            time.sleep(SLEEP_S)
            t2 = time.perf_counter()
            run_and_tell(study, trial, lambda: record_result(trial, config, arch.to_dict(), _fake_result(arch, policy)))
            out["tell"].append(time.perf_counter() - t2)
            out["ask"].append(t1 - t0)
        except Exception as err:  # lock errors, too many connections: counted, the client goes on
            out["errors"] += 1
            out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            time.sleep(0.5)
    return out


def _mlflow_client(args: tuple) -> Dict[str, Any]:
    """One client: log one nested run per 'trial' (the real Tracker.log_trial) until the deadline."""
    uri, study, runs_dir, policy, arch, deadline, first = args
    from autoprune.tracking.tracker import Tracker

    out: Dict[str, Any] = {"tell": [], "ask": [], "errors": 0, "error": ""}
    tracker = Tracker(uri, study, runs_dir)
    tracker.parent_run_id = first  # one parent run: the study's, made before the clients start
    number = os.getpid() * 100_000
    while time.time() < deadline:
        try:
            t0 = time.perf_counter()
            now = int(time.time() * 1000)
            tracker.log_trial(number, "complete", policy, _fake_result(arch, None), None, now - 1000, now)
            out["tell"].append(time.perf_counter() - t0)
            number += 1
        except Exception as err:
            out["errors"] += 1
            out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            time.sleep(0.5)
    return out


def _cpu_busy() -> tuple:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


#: a row stops when the machine's available memory falls below this (128 forked clients copy their parent's pages
#: as they touch them: with the TPE sampler SQLite's 128 clients filled 23 GiB and the machine thrashed)
MIN_AVAILABLE_GB = 1.5
#: and when its clients are still in an ask or tell this long after the deadline (a storage that has stopped keeping up)
LATE_S = 120.0


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _run_clients(fn, args: List[tuple], duration: float) -> Dict[str, Any]:
    ctx = mp.get_context("fork")  # from a parent that imported everything: clients start in milliseconds, pages shared
    gc.collect()
    gc.freeze()  # the clients' garbage collector then leaves the parent's objects (and their pages) alone
    c0 = _cpu_busy()
    t0 = time.time()
    stopped = None
    try:
        # the clients die at once on the SIGTERM of Pool.terminate (the parent's own handler unwinds; in a client it
        # could wait forever on a lock another thread held when the client was forked)
        with ctx.Pool(len(args), initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            pending = pool.map_async(fn, args, chunksize=1)
            while not pending.ready():
                pending.wait(0.5)
                if _available_gb() < MIN_AVAILABLE_GB:
                    stopped = f"{_available_gb():.1f} GiB of memory left on this machine"
                elif time.time() - t0 > duration + LATE_S:
                    stopped = f"clients still busy {LATE_S:.0f} s after the deadline"
                if stopped:
                    pool.terminate()
                    break
            results = [] if stopped else pending.get()
    finally:
        gc.unfreeze()
    elapsed = time.time() - t0
    c1 = _cpu_busy()
    asks = sorted(x for r in results for x in r["ask"])
    tells = sorted(x for r in results for x in r["tell"])

    def pct(xs: List[float], q: float) -> Optional[float]:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else None

    error = next((r["error"] for r in results if r["error"]), "")
    if stopped:
        error = f"stopped after {elapsed:.0f} s: {stopped} ({len(args)} clients)"
    return {
        "per_s": None if stopped else len(tells) / duration,
        "ask_p50": pct(asks, 0.5), "ask_p99": pct(asks, 0.99), "tell_p50": pct(tells, 0.5), "tell_p99": pct(tells, 0.99),
        "errors": sum(r["errors"] for r in results), "error": error,
        "cpu": 100.0 * (1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])), "elapsed": elapsed,
    }


# --------------------------------------------------------------------------- the benchmark


def _study_for(url: str, config: Any) -> None:
    import optuna

    from autoprune.search.samplers import make_sampler

    optuna.create_study(study_name=config.study, storage=_open_storage(url), directions=["maximize", "minimize"], sampler=make_sampler(config, 0))


def _storage_rows(ctx: Context, config: Any, arch: Any, rd: Path, clients: tuple, duration: float, pg: str) -> List[List[Any]]:
    rows = []
    for n in clients:
        for kind in ("journal", "sqlite", "postgresql", "grpc proxy"):
            name = f"c{n}_{kind.split()[0]}_{int(time.time())}"
            cfg = config.model_copy(update={"study": name})
            with contextlib.ExitStack() as stack:
                if kind == "journal":
                    url = str(rd / f"{name}.journal")
                elif kind == "sqlite":
                    url = f"sqlite:///{rd / name}.db"
                else:
                    url = _create_db(pg, name.lower())
                    if kind == "grpc proxy":
                        url = stack.enter_context(grpc_proxy(url))
                _study_for(url, cfg)
                log(f"{NAME}: {kind}, {n} clients, {duration:.0f} s")
                deadline = time.time() + duration
                r = _run_clients(_storage_client, [(cfg, arch, url, str(rd / f"{name}.ask{i}.lock"), deadline, i) for i in range(n)], duration)
            log(f"  {r['per_s'] or 0:.1f} trials/s, ask p50/p99 {r['ask_p50']}/{r['ask_p99']} ms, tell p50/p99 {r['tell_p50']}/{r['tell_p99']} ms, "
                f"CPU {r['cpu']:.0f} %, errors {r['errors']} {r['error']}")
            rows.append([kind, n, r["per_s"], r["ask_p50"], r["ask_p99"], r["tell_p50"], r["tell_p99"], r["errors"], r["cpu"], r["error"][:120] or "—"])
    return rows


def _mlflow_rows(config: Any, arch: Any, rd: Path, clients: tuple, duration: float, pg: str, on_row: Callable[[List[List[Any]]], None]) -> List[List[Any]]:
    """The tracking server rows; ``on_row`` gets the rows so far after each one (the results file is rewritten as they come)."""
    from autoprune.tracking.tracker import Tracker

    policy = None
    rows = []
    for workers in MLFLOW_WORKERS:
        backend = _create_db(pg, f"mlflow_w{workers}_{int(time.time())}")
        with mlflow_server(backend, workers, rd / f"mlartifacts_w{workers}") as uri:
            parent = Tracker(uri, config.study, str(rd))
            parent.start_parent(config.to_dict(), {"val_accuracy": 0.9, "test_accuracy": 0.9, "size_bytes": 500_000, "params": 125_000})
            for n in clients:
                log(f"{NAME}: MLflow server --workers {workers}, {n} clients, {duration:.0f} s")
                deadline = time.time() + duration
                r = _run_clients(_mlflow_client, [(uri, config.study, str(rd), policy, arch, deadline, parent.parent_run_id) for _ in range(n)], duration)
                log(f"  {r['per_s'] or 0:.1f} runs/s, p50/p99 {r['tell_p50']}/{r['tell_p99']} ms, CPU {r['cpu']:.0f} %, errors {r['errors']} {r['error']}")
                server = f"MLflow server, {workers} worker(s), PostgreSQL store"
                rows.append([server, n, r["per_s"], r["tell_p50"], r["tell_p99"], r["errors"], r["cpu"], r["error"][:120] or "—"])
                on_row(rows)
            try:
                parent.finish_parent()
            except Exception as err:  # a server swamped by the last row: its rows are measured already
                log(f"{NAME}: ending the parent run failed: {type(err).__name__}: {str(err)[:200]}")
    return rows


def run(ctx: Context) -> None:
    import optuna

    # everything the clients run, imported before they are forked (128 processes importing Lightning at once
    # would measure the imports, not the storage)
    import autoprune.search.claim  # noqa: F401
    import autoprune.search.samplers  # noqa: F401
    import autoprune.search.space  # noqa: F401
    import autoprune.search.tell  # noqa: F401
    import autoprune.tracking.tracker  # noqa: F401
    from autoprune.models.arch import ArchSpec

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    rd = ctx.runs(NAME)
    clients = CLIENTS_QUICK if ctx.quick else CLIENTS_FULL
    duration = 15.0 if ctx.quick else 45.0
    config = load_study_config("japanese_vowels_lstm")  # its shipped sampler: what a user's search asks with
    arch = ArchSpec.from_config(config.model, 12, 9)
    load = os.getloadavg()
    # SIGTERM (a stopped run) unwinds like Ctrl-C, so that the PostgreSQL, proxy and MLflow servers it started are stopped
    # (only while this benchmark runs: the benchmarks after it in the same process keep the handler they had)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mlflow_rows: List[List[Any]] = []
    failed = ""
    try:
        with postgres(max_connections=max(clients) * 2 + 40) as pg:
            storage_rows = _storage_rows(ctx, config, arch, rd, clients, duration, pg)
            try:
                mlflow_rows = _mlflow_rows(config, arch, rd, clients, duration, pg, on_row=lambda rows: _write(ctx, config, duration, load, storage_rows, rows))
            except Exception as err:  # the storage rows are measured: write them, say where the tracking part stopped
                failed = f"{type(err).__name__}: {str(err)[:300]}"
                log(f"{NAME}: the tracking server part failed: {failed}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    _write(ctx, config, duration, load, storage_rows, mlflow_rows, failed)
    if failed:
        raise RuntimeError(f"storage_ceiling: the tracking server part failed after {len(mlflow_rows)} rows ({failed[:120]}); the results file holds what was measured")


def _write(ctx: Context, config: Any, duration: float, load: tuple, storage_rows: List[List[Any]], mlflow_rows: List[List[Any]], failed: str = "") -> None:
    lines = header(
        "storage_ceiling: the study storage and the tracking server under N clients",
        ctx,
        [
            f"N forked client processes for {duration:.0f} s each, every one a machine of its own (own ask lock): claim + policy (`ask`), "
            f"a {SLEEP_S:g} s sleep as the trial body, record + tell (`tell`), with the JapaneseVowels study's real search space and its shipped sampler ({config.search.sampler}), "
            "on a fresh study per row. PostgreSQL 15 started by the benchmark on 127.0.0.1 (fsync off, max_connections = 2 x the largest N + 40), "
            "the gRPC proxy (`optuna.storages.run_grpc_proxy_server`) in front of it in one process. `CPU %`: how busy the machine's "
            f"{os.cpu_count()} cores were (clients, servers and proxy all run here: near 100 % the machine is the limit, not the storage). "
            f"Load average at the start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}. One worker running trials of T seconds needs 1/T trials per second: "
            "a storage sustaining R trials/s serves about R x T workers.",
        ],
    )
    lines += table(
        ["storage", "clients", "trials / s", "ask p50 (ms)", "ask p99 (ms)", "tell p50 (ms)", "tell p99 (ms)", "errors", "CPU %", "last error"], storage_rows
    )
    lines += [
        "",
        "The tracking server: N clients each logging one nested run per trial with autoprune's `Tracker.log_trial` (three requests per run: "
        "the run with its tags, one batch of metrics with a 10-epoch curve and parameters, the end), to `mlflow server --workers W` on a PostgreSQL store.",
        "",
    ]
    lines += table(["server", "clients", "runs / s", "log p50 (ms)", "log p99 (ms)", "errors", "CPU %", "last error"], mlflow_rows)
    if failed:
        lines += ["", f"**The tracking server part stopped after the rows above:** {failed}"]
    write_result(ctx, NAME, lines)

"""The ``autoprune`` command line: thin click commands that parse, call the library, print.

Heavy imports (torch, lightning, optuna, mlflow) happen inside the commands so that
``autoprune --help`` answers at once. Package errors print one line and exit 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable, Dict, Optional

import click

from autoprune.errors import AutopruneError
from autoprune.search.faults import environment_failure
from autoprune.search.interrupts import SearchStopped, SignalScope, as_interrupt, exit_code, signal_name
from autoprune.search.samplers import SAMPLERS  # the one table of sampler names (optuna's import is light)
from autoprune.services.urls import shown

__all__ = ["main", "cli"]

log = logging.getLogger("autoprune")


class _Ctx:
    def __init__(self, runs_dir: str, debug: bool, quiet: bool) -> None:
        self.runs_dir = runs_dir
        self.debug = debug
        self.quiet = quiet


def _given(options: Dict[str, Any]) -> Dict[str, Any]:
    """The config overrides of the options a user gave: an option left unset keeps the file's value (a ``None``
    override would set the key to null)."""
    return {key: value for key, value in options.items() if value is not None}


def _handle_errors(fn: Callable) -> Callable:
    """One line and exit 2 for a refused input or setting, and for the disk or a server failing under the command
    (:func:`autoprune.search.faults.environment_failure`); an interrupt exits 128 + its signal
    (:func:`autoprune.search.interrupts.exit_code`); anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context().find_object(_Ctx)
        try:
            return fn(*args, **kwargs)
        except AutopruneError as err:
            if ctx is not None and ctx.debug:
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except BaseException as err:
            found = as_interrupt(err)
            if found is None and not isinstance(err, KeyboardInterrupt):
                failed = environment_failure(err) if isinstance(err, Exception) and not (ctx is not None and ctx.debug) else None
                if failed is None:
                    raise
                # the disk or a server failed, not autoprune: one line instead of the libraries' traceback chain
                click.echo(f"error: {failed}; what was recorded is kept: fix it, then run the same command again", err=True)
                sys.exit(exit_code(err))
            name = found.signal_name if found is not None else signal_name(getattr(err, "signum", 2))
            click.echo(f"interrupted by {name}", err=True)
            sys.exit(exit_code(err))

    return wrapper


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs-dir", default="runs", show_default=True, envvar="AUTOPRUNE_RUNS_DIR", help="Output root for studies.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (errors and results only).")
@click.version_option(package_name="autoprune")
@click.pass_context
def cli(ctx: click.Context, runs_dir: str, debug: bool, quiet: bool) -> None:
    """autoprune: search how to prune LSTM/GRU sequence classifiers under a latency budget.

    \b
    Typical use:
      autoprune train search_spaces/quickstart.yaml       # dense model, cached
      autoprune search search_spaces/quickstart.yaml      # Pareto search, MLflow
      autoprune pareto quickstart                          # the front as a table
      autoprune export quickstart                          # ship the smallest model within 1 point of dense
    """
    ctx.obj = _Ctx(runs_dir, debug, quiet)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("autoprune").setLevel(logging.WARNING if quiet else logging.INFO)
    if debug:  # the traceback of every failed trial, below its one-line reason
        logging.getLogger("autoprune.search.faults").setLevel(logging.DEBUG)
    for noisy in ("mlflow", "alembic", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not debug:  # MLflow's SQL store logs every failed session with its traceback before it raises (a full disk: 7 of
        # them); the error then reaches the one-line report (search.faults.environment_failure). --debug keeps them.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def storage_option(help_text: str) -> Callable:
    """``--storage`` (or ``AUTOPRUNE_STORAGE``): where a study lives; the one definition for every command."""
    return click.option("--storage", envvar="AUTOPRUNE_STORAGE", default=None, help=help_text)


#: --storage of the commands that read a searched study
_READ_STORAGE = "Where the study lives (default: what runs/<study>/search.json recorded): for a machine without that runs folder."


def quiet_option(fn: Callable) -> Callable:
    """``--quiet`` accepted after the subcommand too."""

    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_object(_Ctx).quiet = True
            logging.getLogger("autoprune").setLevel(logging.WARNING)
        return value

    return click.option("-q", "--quiet", "quiet_sub", is_flag=True, expose_value=False, callback=callback, help="No progress output.")(fn)


@cli.command()
@_handle_errors
def tasks() -> None:
    """List task kinds and the UEA/UCR datasets bundled with aeon (usable offline)."""
    from autoprune.tasks import bundled_uea_datasets, list_task_kinds

    click.echo("Task kinds (use as task.name in a study YAML):")
    for kind, desc in list_task_kinds():
        click.echo(f"  {kind:<24} {desc}")
    names = bundled_uea_datasets()
    click.echo(f"\nUEA/UCR datasets bundled with aeon ({len(names)}), e.g. task.name: uea:{names[0] if names else 'JapaneseVowels'}")
    for i in range(0, len(names), 4):
        click.echo("  " + "".join(f"{n:<28}" for n in names[i : i + 4]).rstrip())


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--study", default=None, help="Study name (default: the config's 'study').")
@click.option("--force", is_flag=True, help="Retrain even if a cached dense checkpoint exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@quiet_option
@click.pass_obj
@_handle_errors
def train(obj: _Ctx, config: str, study: Optional[str], force: bool, as_json: bool) -> None:
    """Train (or reuse) the study's dense model and report its accuracy."""
    from autoprune.config import load_config
    from autoprune.reference.dense import ensure_dense

    cfg = load_config(config, overrides=_given({"study": study}))
    result = ensure_dense(cfg, obj.runs_dir, progress=not (obj.quiet or as_json), force=force)
    out = {"study": cfg.study, **result.to_json()}
    if as_json:
        _emit(out)
        return
    state = "reused cached" if result.cached else ("converted your" if cfg.model.user_model else "trained")
    click.echo(
        f"{state} dense {result.arch.cell.upper()} {[sizes[0] for sizes in result.arch.hidden_sizes]}"
        f"{' bidirectional' if result.arch.bidirectional else ''} on {cfg.task.name}: "
        f"val accuracy {out['val_accuracy']:.4f}, test accuracy {out['test_accuracy']:.4f}, "
        f"{out['params']:,} parameters\ncheckpoint: {result.checkpoint}"
    )


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Pruning policy YAML.")
@click.option("--study", default=None, help="Study name (default: the config's 'study').")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@quiet_option
@click.pass_obj
@_handle_errors
def prune(obj: _Ctx, config: str, policy_path: str, study: Optional[str], as_json: bool) -> None:
    """Apply one pruning policy to the study's dense model (a single trial, no search)."""
    from autoprune.config import load_config
    from autoprune.layout import study_paths
    from autoprune.pruning.policy import load_policy
    from autoprune.trial.result import TrialOptions
    from autoprune.trial.run import run_trial

    cfg = load_config(config, overrides=_given({"study": study}))
    policy = load_policy(policy_path)
    out_dir = study_paths(obj.runs_dir, cfg.study).prune(policy.key())
    result = run_trial(cfg, policy, TrialOptions(runs_dir=obj.runs_dir, trial_dir=str(out_dir), progress=not (obj.quiet or as_json)))
    d = result.dense
    out = {
        "study": cfg.study,
        "policy": policy.to_dict(),
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "dense_val_accuracy": d["val_accuracy"],
        "dense_test_accuracy": d["test_accuracy"],
        "size_bytes": result.size_bytes,
        "dense_size_bytes": d["size_bytes"],
        "compression_ratio": d["size_bytes"] / result.size_bytes,
        "nonzero_params": result.nonzero_params,
        "params": result.params,
        "dense_params": d["params"],
        "sparsity": result.sparsity,
        "hidden_sizes": result.hidden_sizes,
        "dense_hidden_sizes": d["hidden_sizes"],
        "macs": result.macs,
        "dense_macs": d["macs"],
        "latency_ms": result.latency_ms,
        "dense_latency_ms": d["latency_ms"],
        "latency_settings": {k: v for k, v in cfg.measure.model_dump().items()},
        "checkpoint": result.checkpoint,
        "duration_s": round(result.duration_s, 2),
        "precision": result.precision,
        "int8": result.int8 or None,
    }
    if as_json:
        _emit(out)
        return
    click.echo(
        f"{policy.method}/{policy.granularity} at sparsity {policy.sparsity}, {result.precision}: "
        f"test accuracy {out['test_accuracy']:.4f} (dense {out['dense_test_accuracy']:.4f}), "
        f"size {out['size_bytes']:,} B ({out['compression_ratio']:.1f}x smaller), hidden sizes {out['hidden_sizes']}, "
        f"latency {out['latency_ms']:.3f} ms (dense {out['dense_latency_ms']:.3f} ms)\nweights: {out['checkpoint']}"
    )


def _fmt_row(r: dict) -> str:
    lat = f"{r['latency_ms']:.3f}" if r.get("latency_ms") is not None else "-"
    test = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
    return (
        f"{r['trial']:>5}  {r['val_accuracy']:.4f}  {test:>6}  {r['size_bytes']:>10,}  {r['size_ratio'] * 100:6.2f}%  {lat:>8}  "
        f"{r['method'] or '-':<11} {r['granularity'] or '-':<12} {r['schedule'] or '-':<8} {r.get('precision') or 'float32':<7}  {r['hidden_sizes']}"
    )


def _print_front(rows: list, dense: Optional[dict] = None) -> None:
    click.echo(f"{'trial':>5}  {'val':>6}  {'test':>6}  {'size (B)':>10}  {'of dense':>7}  {'lat (ms)':>8}  {'method':<11} {'granularity':<12} {'schedule':<8} {'prec':<7}  hidden")
    if dense:
        click.echo(
            f"{'dense':>5}  {dense['val_accuracy']:.4f}  {dense['test_accuracy']:.4f}  {dense['size_bytes']:>10,}  {100:6.2f}%  "
            f"{dense.get('latency_ms') or 0:8.3f}  {'-':<11} {'-':<12} {'-':<8}"
        )
    for r in rows:
        click.echo(_fmt_row(r))
    from autoprune.trial.validation import noise_text

    best = max((r for r in rows if r.get("n_val")), key=lambda r: r["val_accuracy"], default=None)
    if best is not None:
        click.echo(f"noise: the most accurate point's {noise_text(best['val_accuracy'], best['n_val'])}")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--study", default=None, help="Study name (default: the config's 'study').")
@click.option("--trials", type=int, default=None, help="Total number of trials (complete + stopped early), counting earlier runs.")
@click.option("--timeout", type=float, default=None, help="Stop starting new trials after this many seconds.")
@click.option("--workers", type=int, default=None, help="Worker processes (one torch thread each).")
@click.option("--backend", default=None, help="Trial runner: local (processes on this machine) or ray (Ray Tune); default: the config's search.backend, else local.")
@click.option("--ray-address", default=None, help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray instance).")
@click.option("--concurrency", type=int, default=None, help="Ray backend: trials running at once.")
@click.option("--cpus-per-trial", type=float, default=None, help="Ray backend: CPUs reserved per trial (its torch threads).")
@click.option("--gpus-per-trial", type=float, default=None, help="Ray backend: GPUs reserved per trial (a fraction shares one); needs train.accelerator gpu.")
@click.option("--max-latency-ms", type=float, default=None, help="Latency budget (measured as the config's 'measure' section says).")
@click.option("--max-size-bytes", type=int, default=None, help="Size budget.")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default=None, help="Optuna sampler (default: the config's search.sampler).")
@storage_option("Optuna storage: a database URL or grpc://HOST:PORT (Optuna's gRPC storage proxy; default: a journal file under runs/<study>/; a resumed study uses the one it recorded). A password here is never stored: on resume give it again, or use PGPASSWORD / ~/.pgpass.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="MLflow tracking URI (default: embedded store under runs/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@quiet_option
@click.pass_obj
@_handle_errors
def search(obj: _Ctx, config: str, study: Optional[str], trials: Optional[int], timeout: Optional[float], workers: Optional[int], backend: Optional[str], ray_address: Optional[str], concurrency: Optional[int], cpus_per_trial: Optional[float], gpus_per_trial: Optional[float], max_latency_ms: Optional[float], max_size_bytes: Optional[int], sampler: Optional[str], storage: Optional[str], tracking_uri: Optional[str], as_json: bool) -> None:
    """Search pruning policies; record the Pareto front of accuracy vs size in MLflow."""
    from autoprune.config import load_config
    from autoprune.search.run import run_search

    cfg = load_config(
        config,
        overrides=_given({
            "study": study,
            "search.trials": trials,
            "search.timeout": timeout,
            "search.workers": workers,
            "search.backend": backend,
            "search.ray.address": ray_address,
            "search.ray.concurrency": concurrency,
            "search.ray.cpus_per_trial": cpus_per_trial,
            "search.ray.gpus_per_trial": gpus_per_trial,
            "search.constraints.max_latency_ms": max_latency_ms,
            "search.constraints.max_size_bytes": max_size_bytes,
            "search.sampler": sampler,
        }),
    )
    from autoprune.progress import SearchProgress

    # a live bar on a terminal (trials, front, best model within the budget, ETA), plain lines otherwise, nothing with -q
    bar = SearchProgress(cfg.search.trials, cfg.study, quiet=obj.quiet or as_json)
    try:
        summary = run_search(cfg, obj.runs_dir, tracking_uri=tracking_uri, storage=storage, progress=bar)
    except SearchStopped as err:  # interrupted after the study was recorded: what is kept, how to resume
        bar.close()
        click.echo(
            f"interrupted by {err.signal_name}: {err.marked} running trial(s) marked failed, the MLflow search run ended KILLED; "
            f"run the same command again to resume the study '{cfg.study}'",
            err=True,
        )
        sys.exit(err.exit_code)
    except BaseException as err:
        bar.close()
        if as_interrupt(err) is not None:  # before anything was recorded (the dense model was training, ...)
            click.echo(f"interrupted by {as_interrupt(err).signal_name} (nothing was being recorded yet; run the same command again)", err=True)
            sys.exit(exit_code(err))
        raise
    bar.close()
    if as_json:
        _emit(summary.to_json())
        return
    click.echo(
        f"\nstudy {summary.study}: {summary.n_trials} trials ({summary.n_complete} complete, {summary.n_infeasible} infeasible, "
        f"{summary.n_stopped_early} stopped early, {summary.n_failed} failed) in {summary.duration_s:.0f} s; hypervolume {summary.hypervolume:.4f}"
    )
    click.echo("Pareto front (validation accuracy vs size; test accuracy shown, never used for choices):")
    _print_front(summary.pareto, summary.dense)
    click.echo(f"\nMLflow: experiment '{summary.study}' (id {summary.mlflow_experiment_id}), parent run {summary.mlflow_parent_run_id}")
    click.echo(f"  open it with:  autoprune ui {summary.study}")
    if "pareto_front.png" in summary.artifacts:
        click.echo(f"  front plot:    {summary.artifacts['pareto_front.png']}")
    if summary.pareto:
        click.echo(f"export a model:  autoprune export {summary.study}   (--pick best: the smallest within 1 point of dense validation accuracy)")
    else:
        click.echo(f"no trial within the budgets yet: nothing to export (`autoprune pareto {summary.study} --all` lists every trial and why)")


@cli.command()
@click.argument("study")
@click.option("--all", "show_all", is_flag=True, help="Every trial, not only the front.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@storage_option(_READ_STORAGE)
@click.pass_obj
@_handle_errors
def pareto(obj: _Ctx, study: str, show_all: bool, as_json: bool, storage: Optional[str]) -> None:
    """Show a study's Pareto front (or every trial with --all)."""
    from autoprune.search.pareto import front_rows, trial_row
    from autoprune.search.study import open_study

    st, meta = open_study(study, obj.runs_dir, storage)
    rows = [trial_row(t) for t in st.get_trials(deepcopy=False)] if show_all else front_rows(st)
    if as_json:
        _emit(rows)
        return
    if show_all:
        for r in rows:
            if r["state"] == "complete":
                click.echo(_fmt_row(r))
            else:
                click.echo(f"{r['trial']:>5}  {r['state']:<14} {r['reason'] or r['error'] or ''}")
        return
    _print_front(rows)


@cli.command()
@click.argument("study", required=False)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="Show this store instead of the embedded one.")
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a browser once the UI answers.")
@click.pass_obj
@_handle_errors
def ui(obj: _Ctx, study: Optional[str], port: int, tracking_uri: Optional[str], open_browser: bool) -> None:
    """Start the MLflow UI on 127.0.0.1 against the study's store and print its URL."""
    import os

    from autoprune.tracking.server import check_port, serve
    from autoprune.tracking.tracker import default_tracking_uri, recorded_tracking_uri

    uri = tracking_uri or default_tracking_uri(obj.runs_dir)
    if study is not None:
        from autoprune.search.study import open_study

        _, meta = open_study(study, obj.runs_dir)
        uri = tracking_uri or recorded_tracking_uri(meta, obj.runs_dir) or uri
    if uri.startswith(("http://", "https://")):
        from autoprune.tracking.ui import study_link

        click.echo(f"the tracking store is a server already: open {shown(study_link(study, uri, uri) if study else uri)}")
        return
    check_port(port)  # before anything starts: in range and free
    # the store's URI (it may hold a password) goes through the environment, never argv: `ps` shows argv to every user
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": uri}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    from autoprune.tracking.ui import open_when_ready, study_links

    base = f"http://127.0.0.1:{port}"
    links = study_links(study, uri, base) if study else {"front": base}  # the front in MLflow's model-training runs table
    click.echo(f"MLflow UI: {links['front']}  (store {shown(uri)}; Ctrl-C stops it)")
    if "plot" in links:
        click.echo(f"front plot: {links['plot']}")
    if open_browser:
        open_when_ready(links["front"], base)
    with SignalScope():  # SIGINT/SIGTERM end the wait; serve stops the server's whole process group first
        code = serve(cmd, env)
    if code not in (0, 130, 143):
        click.echo(f"error: the MLflow server exited with code {code} (its message is above)", err=True)
    sys.exit(code)


@cli.command()
@click.argument("study")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@storage_option(_READ_STORAGE)
@click.pass_obj
@_handle_errors
def dashboard(obj: _Ctx, study: str, port: int, storage: Optional[str]) -> None:
    """Optuna Dashboard on the study's storage, on 127.0.0.1 (trials, objectives, Pareto front)."""
    from autoprune.search.study import open_study
    from autoprune.tracking.dashboard import serve_dashboard

    st, _ = open_study(study, obj.runs_dir, storage)
    try:
        serve_dashboard(st, port, announce=click.echo)
    except KeyboardInterrupt:
        pass


def _export_formats() -> dict:
    from autoprune.export.formats import FORMATS  # the registry; imports no torch

    return FORMATS


@cli.command()
@click.argument("study")
@click.option("--trial", type=int, default=None, help="Export this trial.")
@click.option("--pick", type=click.Choice(["best", "max-accuracy", "smallest", "knee"]), default=None, help="Choose among the Pareto trials meeting the limits, by validation accuracy (default: best = the smallest within --tolerance of dense).")
@click.option("--tolerance", type=click.FloatRange(0, 100), default=1.0, show_default=True, help="--pick best: allowed validation-accuracy drop below dense, in accuracy points.")
@click.option("--max-size-bytes", type=int, default=None)
@click.option("--max-latency-ms", type=float, default=None)
@click.option("--min-accuracy", type=float, default=None, help="Minimum validation accuracy.")
@click.option("--format", "formats", multiple=True, type=click.Choice(list(_export_formats())), help="Repeatable (default: torchscript, onnx and state_dict); an int8 trial ships int8 files.")
@click.option("--out", "out_dir", default=None, help="Output folder (default: runs/<study>/exports/trial-<n>).")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--register", default=None, help="Register the model under this name in the MLflow model registry.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="Where the study's MLflow runs live (default: what search.json recorded); the trial's weights come from its run when its runs folder is not here.")
@storage_option(_READ_STORAGE)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@quiet_option
@click.pass_obj
@_handle_errors
def export(obj: _Ctx, study: str, trial: Optional[int], pick: Optional[str], tolerance: float, max_size_bytes: Optional[int], max_latency_ms: Optional[float], min_accuracy: Optional[float], formats: tuple, out_dir: Optional[str], force: bool, register: Optional[str], tracking_uri: Optional[str], storage: Optional[str], as_json: bool) -> None:
    """Export a trial's pruned model (compacted, verified on the test set) with a model card."""
    from autoprune.errors import ConfigError
    from autoprune.export import export as do_export

    if trial is not None and pick is not None:
        raise ConfigError("give either --trial or --pick, not both")
    res = do_export(
        study, obj.runs_dir, trial=trial, pick=pick, max_size_bytes=max_size_bytes, max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy, formats=formats or ("torchscript", "onnx", "state_dict"), out_dir=out_dir, force=force,
        register=register, tracking_uri=tracking_uri, tolerance=tolerance / 100.0, storage=storage,
    )
    if as_json:
        _emit(res.to_json())
        return
    from autoprune.export.card import accuracy_text

    card = res.model_card
    click.echo(
        f"exported trial {res.trial} of study {study}: test accuracy {accuracy_text(res.test_accuracy_per_file, res.test_accuracy)} (dense {card['dense']['test_accuracy']:.4f}), "
        f"{res.size_bytes:,} B ({card['size_ratio'] * 100:.2f} % of dense), hidden sizes {card['hidden_sizes_after']}, "
        f"latency {res.latency_ms:.3f} ms; verified on the test set"
    )
    if (card.get("validation") or {}).get("note"):
        click.echo(f"chosen by validation: {card['validation']['note']}")
    for fmt, path in res.files.items():
        click.echo(f"  {fmt:<12} {path}")
    click.echo(f"  model card   {res.out_dir}/model_card.json   (how to load: {res.out_dir}/README.md)")
    if "torchscript" in res.files:
        click.echo(f"load it:  model = torch.jit.load('{res.files['torchscript']}'); logits = model(x, lengths)")
    if res.mlflow_model_uri:
        click.echo(f"MLflow model: {res.mlflow_model_uri}")


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="autoprune")


if __name__ == "__main__":  # pragma: no cover
    main()

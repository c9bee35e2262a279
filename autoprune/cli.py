"""The ``autoprune`` command line: thin click commands that parse, call the library, print.

Heavy imports (torch, lightning, optuna, mlflow) happen inside the commands so that
``autoprune --help`` answers at once. Package errors print one line and exit 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable, Optional

import click

from autoprune.errors import AutopruneError

__all__ = ["main", "cli"]

log = logging.getLogger("autoprune")


class _Ctx:
    def __init__(self, runs_dir: str, debug: bool, quiet: bool) -> None:
        self.runs_dir = runs_dir
        self.debug = debug
        self.quiet = quiet


def _handle_errors(fn: Callable) -> Callable:
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
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

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
      autoprune export quickstart --pick knee             # ship a pruned model
    """
    ctx.obj = _Ctx(runs_dir, debug, quiet)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("autoprune").setLevel(logging.WARNING if quiet else logging.INFO)


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
    from autoprune.dense import ensure_dense

    cfg = load_config(config, overrides={"study": study})
    result = ensure_dense(cfg, obj.runs_dir, progress=not (obj.quiet or as_json), force=force)
    out = {"study": cfg.study, **result.to_json()}
    if as_json:
        _emit(out)
        return
    state = "reused cached" if result.cached else "trained"
    click.echo(
        f"{state} dense {cfg.model.cell.upper()} {cfg.model.hidden_sizes} on {cfg.task.name}: "
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
    from autoprune.dense import study_dir
    from autoprune.pruning.policy import load_policy
    from autoprune.search.trial import TrialOptions, run_trial

    cfg = load_config(config, overrides={"study": study})
    policy = load_policy(policy_path)
    out_dir = study_dir(obj.runs_dir, cfg.study) / "prune" / policy.key()
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
    }
    if as_json:
        _emit(out)
        return
    click.echo(
        f"{policy.method}/{policy.granularity} at sparsity {policy.sparsity}: "
        f"test accuracy {out['test_accuracy']:.4f} (dense {out['dense_test_accuracy']:.4f}), "
        f"size {out['size_bytes']:,} B ({out['compression_ratio']:.1f}x smaller), hidden sizes {out['hidden_sizes']}, "
        f"latency {out['latency_ms']:.3f} ms (dense {out['dense_latency_ms']:.3f} ms)\nweights: {out['checkpoint']}"
    )


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="autoprune")


if __name__ == "__main__":  # pragma: no cover
    main()

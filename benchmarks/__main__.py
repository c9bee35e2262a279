"""Entry point: ``python -m benchmarks [--quick] [--only NAME ...]``.

Each benchmark writes ``benchmarks/results/<name>.md`` (and PNG plots); working files go
to ``runs/bench/``. A failing benchmark is reported and the others still run; the exit
code is 1 when any failed.
"""

from __future__ import annotations

import os

# one thread everywhere, set before torch is imported (also inherited by CLI subprocesses)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import shlex
import sys
import time
import traceback
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks._common import REPO, Context, log, one_thread, quiet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="autoprune benchmarks against baselines")
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats, JapaneseVowels only (under 10 minutes)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, metavar="NAME", default=[], help="run all but these")
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "bench"), help="working files (default: runs/bench)")
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"), help="tables and plots (default: benchmarks/results)")
    args = parser.parse_args(argv)

    os.chdir(REPO)
    one_thread()
    quiet()
    command = "python -m benchmarks" + "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    ctx = Context(quick=args.quick, runs_root=Path(args.runs_dir), results_dir=Path(args.results_dir), command=command)
    ctx.runs_root.mkdir(parents=True, exist_ok=True)
    names = [n for n in BENCHMARKS if (not args.only or n in args.only) and n not in args.skip]
    failed, took = [], {}
    for name in names:
        log(f"=== {name} ({ctx.mode})")
        t0 = time.time()
        try:
            importlib.import_module(f"benchmarks.{name}").run(ctx)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        took[name] = time.time() - t0
        log(f"=== {name}: {'FAILED' if name in failed else 'done'} in {took[name]:.0f} s")
    total = time.time() - ctx.started
    log("summary: " + ", ".join(f"{n} {t:.0f} s" for n, t in took.items()) + f"; total {total / 60:.1f} min")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

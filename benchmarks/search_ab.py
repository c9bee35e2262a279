"""search_ab: the shipped search of a task at an earlier commit and at this one, side by side: same trials? how much faster?

``python -m benchmarks.search_ab --base COMMIT [--task jv|mnist1d] [--seeds 0 1 2] [--results-dir DIR]``

For a change meant to make the search faster without changing what it finds. The base commit is
checked out into a git worktree under the runs folder; two processes, one per code tree and one
torch thread each, run ``search_quality``'s autoprune search (the study's shipped defaults) for
each seed at the same time, so both see the same load. The report gives each search's wall time,
the ratio, and whether the two searches' trials are the same (parameters, sizes, validation and
test accuracy, state), with the first difference when not. Not part of ``python -m benchmarks``:
it measures a change, not the product. Writes ``results/search_ab_<task>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from benchmarks._common import REPO, Context, header, log, table, write_result

NAME = "search_ab"
#: row keys that are timings or paths, not what the search found
_NOT_FOUND = ("completed_s", "duration_s", "checkpoint", "wall_s", "latency_ms")


def _worker(task: str, out: Path, seeds: List[int]) -> None:
    """Run in a code tree (first on ``PYTHONPATH``): its benchmarks and autoprune, this function's own code."""
    from benchmarks import search_quality as sq
    from benchmarks._common import Context, one_thread, quiet

    one_thread()
    quiet()
    ctx = Context(quick=False, runs_root=out / "runs", results_dir=out / "results", command=NAME)
    done: Dict[str, Any] = {}
    for seed in seeds:
        sq.dense_for(ctx, task, seed, [sq.search_config(ctx, task, None, seed).study])  # the dense model: not timed
        r = sq.run_search_contender(ctx, task, None, seed)
        done[str(seed)] = {"wall_s": r["wall_s"], "counted": r["counted"], "rows": r["rows"]}
        (out / "searches.json").write_text(json.dumps(done, default=str))


def worktree(base: str, root: Path) -> Tuple[Path, str]:
    """A detached worktree of ``base`` under ``root`` (made once per commit) and the commit's hash."""
    sha = subprocess.run(["git", "rev-parse", base], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    path = root / f"base_{sha[:10]}"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=REPO, check=True, capture_output=True)
    return path, sha


def found(row: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _NOT_FOUND}


def first_difference(a: List[Dict[str, Any]], b: List[Dict[str, Any]]) -> Optional[str]:
    """None when the two searches' complete trials are the same, else where they first differ."""
    if len(a) != len(b):
        return f"{len(a)} complete trials against {len(b)}"
    for x, y in zip(sorted(a, key=lambda r: r["trial"]), sorted(b, key=lambda r: r["trial"])):
        fx, fy = found(x), found(y)
        if fx != fy:
            key = next(k for k in sorted(set(fx) | set(fy)) if fx.get(k) != fy.get(k))
            return f"trial {x['trial']}: {key} {fx.get(key)!r} against {fy.get(key)!r}"
    return None


def run(ctx: Context, base: str, task: str, seeds: List[int]) -> List[str]:
    # imported here, not at the top: _worker runs this file's text against the base tree's autoprune, which may lack it
    from autoprune.search.faults import kill_with_parent

    rd = ctx.runs(f"{NAME}_{task}")
    tree, sha = worktree(base, ctx.runs_root / NAME)
    trees = {"base": tree, "this": REPO}
    procs = {}
    for name, code in trees.items():
        out = rd / name
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # this file's _worker, run with the tree's own benchmarks and autoprune (the base commit may not have this file)
        here = str(Path(__file__).resolve())
        cmd = [sys.executable, "-c", f"import sys, pathlib; sys.path.insert(0, {str(code)!r}); g = {{'__name__': 'search_ab_worker'}}; "
               f"exec(compile(open({here!r}).read(), {here!r}, 'exec'), g); g['_worker']({task!r}, pathlib.Path({str(out)!r}), {seeds!r})"]
        log(f"{NAME}: {task} seeds {seeds} in {name} ({code})")
        procs[name] = subprocess.Popen(cmd, cwd=code, env=env, stdout=open(out / "log.txt", "w"), stderr=subprocess.STDOUT,
                                       preexec_fn=kill_with_parent)  # a stopped comparison stops both searches
    t0 = time.time()
    codes = {name: p.wait() for name, p in procs.items()}
    if any(codes.values()):
        raise RuntimeError(f"{NAME}: a search failed: {codes}; see {rd}/*/log.txt")
    res = {name: json.loads((rd / name / "searches.json").read_text()) for name in trees}
    rows, walls = [], {"base": 0.0, "this": 0.0}
    same_all = True
    for seed in seeds:
        a, b = res["base"][str(seed)], res["this"][str(seed)]
        diff = first_difference(a["rows"], b["rows"])
        same_all &= diff is None
        walls["base"] += a["wall_s"]
        walls["this"] += b["wall_s"]
        rows.append([seed, a["counted"], a["wall_s"], b["wall_s"], b["wall_s"] / a["wall_s"], "same" if diff is None else diff])
    rows.append(["all", "", walls["base"], walls["this"], walls["this"] / walls["base"], "same" if same_all else "differ"])
    return [
        f"## {task}: the shipped search at {sha[:10]} (base) and at this commit, side by side",
        "",
        f"Both trees ran at once, one process each, {time.time() - t0:.0f} s in all. Trials compared on everything but timings and paths.",
        "",
        *table(["seed", "trials", "base wall (s)", "this wall (s)", "this / base", "trials found"], rows, align="rrrrrl"),
        "",
        f"**This commit takes {walls['this'] / walls['base']:.2f}x the base's wall time; its searches are "
        + ("the same trial for trial.**" if same_all else "not the same (above).**"),
    ]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_ab")
    parser.add_argument("--base", required=True, help="the commit to compare against (a worktree of it is made under the runs folder)")
    parser.add_argument("--task", default="jv", choices=["jv", "mnist1d"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    os.chdir(REPO)
    command = "python -m benchmarks.search_ab " + " ".join(argv if argv is not None else sys.argv[1:])
    ctx = Context(quick=False, runs_root=Path(args.runs_dir), results_dir=Path(args.results_dir), command=command.strip())
    body = run(ctx, args.base, args.task, args.seeds)
    write_result(ctx, f"{NAME}_{args.task}", header(f"search_ab: the shipped {args.task} search before and after a change meant to be exact", ctx) + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

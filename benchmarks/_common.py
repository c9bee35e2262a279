"""Shared helpers of the benchmarks: context, machine info, interleaved timing, markdown, plots, dense cache.

Every number in a results file comes from the run that wrote it. Timings are compared
only within one run: a baseline and its contender are measured interleaved (round-robin,
the order rotating every round) and reported as medians and ratios.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
SEARCH_SPACES = REPO / "search_spaces"


@dataclass
class Context:
    """What every benchmark gets: mode, output folders and the command that started the run."""

    quick: bool
    runs_root: Path  # runs/bench (git-ignored): studies, checkpoints, profiles
    results_dir: Path  # benchmarks/results (committed): tables and small plots
    command: str
    started: float = field(default_factory=time.time)
    #: machine, versions, load and commit when the run started (a results file describes the start, not the end)
    machine: Dict[str, str] = field(default_factory=lambda: machine_info())

    def runs(self, name: str, fresh: bool = True) -> Path:
        """The benchmark's own folder under ``runs/bench/`` (emptied first unless ``fresh=False``)."""
        path = self.runs_root / name
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def one_thread() -> None:
    """One torch thread (the machine has 2 shared cores; tiny RNNs run best on one)."""
    import torch

    torch.set_num_threads(1)


def process_pool(workers: int) -> Any:
    """A pool of ``workers`` spawned processes that die with this one: stopping a benchmark stops its jobs.

    (A ProcessPoolExecutor's workers otherwise outlive a killed parent and keep the cores busy, which spoils
    every timing taken after, the next benchmark's included.)
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from autoprune.search.faults import die_with_parent

    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent)


def quiet() -> None:
    """Silence Lightning / Optuna / MLflow chatter (results go to files, progress to stderr)."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "optuna", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "missing"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # pragma: no cover - git missing
        return ""


def machine_info() -> Dict[str, str]:
    """Platform, cores, versions and the commit the numbers belong to (read-only git calls)."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        nproc = os.cpu_count() or 0
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "?"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu or platform.processor() or "?",
        "nproc": str(nproc),
        "load average at start": load,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "lightning": _version("lightning"),
        "onnxruntime": _version("onnxruntime"),
        "optuna": _version("optuna"),
        "commit at start": commit + (" (with uncommitted changes to tracked files)" if dirty else ""),
    }


def header(title: str, ctx: Context, notes: Sequence[str] = ()) -> List[str]:
    """The top of a results file: title, command, date, machine."""
    info = dict(ctx.machine)
    started = _dt.datetime.fromtimestamp(ctx.started).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# {title}",
        "",
        f"Made by `{ctx.command}` ({ctx.mode} mode), started {started}, written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines.append("")
    lines += list(notes)
    if notes:
        lines.append("")
    return lines


def write_result(ctx: Context, name: str, lines: Iterable[str]) -> Path:
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.results_dir / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- tables


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: Optional[str] = None) -> List[str]:
    """A GitHub markdown table; ``align`` is one char per column (l, r, c), numbers right by default."""
    rows = [[fmt(c) for c in r] for r in rows]
    if align is None:
        align = "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "—"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


# --------------------------------------------------------------------------- timing


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleave(candidates: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, List[Any]]:
    """Run every candidate once per round, ``repeats`` rounds, rotating the order each round.

    A candidate measures itself (so untimed setup can stay outside its stopwatch) and
    returns seconds, or any value the caller wants collected. Returns name → values.
    """
    names = list(candidates)
    out: Dict[str, List[Any]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(candidates[name]())
    return out


def spread(xs: Sequence[float]) -> str:
    """min–max of a sample, for the tables."""
    return f"{min(xs):.3g}–{max(xs):.3g}" if xs else "—"


# --------------------------------------------------------------------------- plots


def save_png(fig: Any, path: Path, max_kb: int = 190) -> Path:
    """Save a matplotlib figure, lowering the resolution until the file is small."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    for dpi in (100, 80, 64, 50):
        fig.savefig(path, dpi=dpi)
        if path.stat().st_size <= max_kb * 1024:
            break
    plt.close(fig)
    return path


def log_ticks(ax, ticks=(0.5, 1, 2, 5, 10, 20, 50, 100)) -> None:
    """Readable ticks on a log x axis (no minor-tick labels)."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in ticks if lo <= t <= hi] or list(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- dense models


def load_study_config(name: str, overrides: Optional[Dict[str, Any]] = None):
    """A shipped study (``search_spaces/<name>.yaml``) with dotted-key overrides."""
    from autoprune.config import load_config

    return load_config(SEARCH_SPACES / f"{name}.yaml", overrides=overrides or {})


def search_key_supported(key: str) -> bool:
    """Whether ``search.<key>`` exists in this version of the config (the tree changes under us)."""
    from autoprune.config import SearchConfig

    return key in SearchConfig.model_fields


def shared_dense(config: Any, cache_root: Path, runs_dir: Path, studies: Sequence[str]):
    """Train (or reuse) the dense model once under ``cache_root`` and copy it into each study.

    ``ensure_dense`` caches per study (``runs/<study>/dense/<key>``) and the key does not
    depend on the study name, so a copied folder is a cache hit: every contender starts
    from the very same checkpoint.
    """
    from autoprune.reference.dense import ensure_dense
    from autoprune.layout import study_paths

    dense = ensure_dense(config, cache_root)
    src = study_paths(cache_root, config.study).dense
    for study in studies:
        dst = study_paths(runs_dir, study).dense
        if not (dst / dense.key / "checkpoint.pt").is_file():
            shutil.copytree(src, dst, dirs_exist_ok=True)
    return dense

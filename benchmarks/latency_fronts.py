"""latency_fronts: measured batch-1 latency of every model on the JapaneseVowels front of search_quality's autoprune search.

Reads the ``sq_jv_autoprune`` study that ``search_quality`` writes (runs it first when it
is missing), rebuilds each front model from its trial weights
(``autoprune.trial.result.load_trial_model``) and times it beside the dense model in torch
and ONNX Runtime, batch 1, the task's longest sequence, one thread, interleaved.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from benchmarks._common import Context, header, interleave, log, median, one_thread, pyplot, save_png, table, write_result
from benchmarks.hidden_unit_latency import _ort_session, ort_call, timer, torch_call

NAME = "latency_fronts"


def run(ctx: Context) -> None:
    one_thread()
    import torch

    from autoprune.reference.cache import load_dense_model
    from autoprune.errors import TrialError
    from autoprune.runtime.measure import macs_per_sequence
    from autoprune.runtime.convert import to_onnx_bytes
    from autoprune.search.study import open_study
    from autoprune.search.pareto import front_rows
    from autoprune.trial.result import load_trial_model
    from benchmarks import search_quality as sq

    ctx.runs(NAME)
    study_name = sq.study_name("jv", "autoprune")
    rd = sq.runs_dir(ctx)
    try:
        study, meta = open_study(study_name, str(rd))
    except TrialError:
        log(f"{NAME}: no {study_name} study under {rd}: running that search first")
        rd.mkdir(parents=True, exist_ok=True)
        sq.run_search_contender(ctx, "jv", None)  # the study's own sampler: the contender search_quality calls autoprune
        study, meta = open_study(study_name, str(rd))
    front = sorted(front_rows(study), key=lambda r: r["size_ratio"])
    dense, payload = load_dense_model(meta["dense_checkpoint"])
    dense_metrics = payload["metrics"]
    seq_len = int(dense_metrics["max_length"])
    repeats, calls = (7, 40) if ctx.quick else (15, 100)

    x = torch.randn(1, seq_len, dense.spec.input_size)
    lengths = torch.full((1,), seq_len, dtype=torch.long)
    feed = {"x": x.numpy(), "lengths": lengths.numpy()}
    models: Dict[str, Any] = {"dense": dense}
    for r in front:
        models[f"trial {r['trial']}"], _ = load_trial_model(r["checkpoint"])
    log(f"{NAME}: {len(front)} front models + dense, exporting to ONNX")
    candidates: Dict[str, Callable[[], float]] = {}
    for name, model in models.items():
        candidates[f"torch|{name}"] = timer(torch_call(model, x, lengths), calls)
        candidates[f"ort|{name}"] = timer(ort_call(_ort_session(to_onnx_bytes(model)), feed), calls)
    for c in candidates.values():
        c()
    log(f"{NAME}: {repeats} interleaved rounds x {len(candidates)} candidates x {calls} calls")
    ms = {k: median(v) for k, v in interleave(candidates, repeats).items()}

    dense_macs = macs_per_sequence(dense, seq_len)
    rows = [["dense", dense_metrics["val_accuracy"], dense_metrics["test_accuracy"], "100 %", str(dense.hidden_sizes), "—", 1.0, ms["torch|dense"], 1.0, ms["ort|dense"], 1.0, None]]
    pts = []
    for r in front:
        name = f"trial {r['trial']}"
        model = models[name]
        t, o = ms[f"torch|{name}"], ms[f"ort|{name}"]
        rows.append([
            name, r["val_accuracy"], r["test_accuracy"], f"{100 * r['size_ratio']:.2f} %", str(model.hidden_sizes), f"{r['method']}/{r['granularity']}",
            dense_macs / macs_per_sequence(model, seq_len), t, ms["torch|dense"] / t, o, ms["ort|dense"] / o, r.get("latency_ms"),
        ])
        pts.append((r["test_accuracy"], t, o, r["granularity"]))

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
    for ax, idx, rt in ((axes[0], 1, "torch"), (axes[1], 2, "ONNX Runtime")):
        for gran, marker in (("hidden_unit", "o"), ("unstructured", "s")):
            sel = [p for p in pts if p[3] == gran]
            ax.scatter([p[idx] for p in sel], [p[0] for p in sel], marker=marker, label=f"front: {gran}", s=28)
        ax.scatter([ms[f"{'torch' if idx == 1 else 'ort'}|dense"]], [dense_metrics["test_accuracy"]], marker="*", s=120, c="k", label="dense")
        ax.set_xlabel(f"{rt} latency, batch 1 (ms)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"JapaneseVowels autoprune front ({len(front)} models), {seq_len} steps, 1 thread", fontsize=10)
    fig.tight_layout()
    save_png(fig, ctx.results_dir / f"{NAME}.png")

    hu = [row for row, r in zip(rows[1:], front) if r["granularity"] == "hidden_unit"]
    un = [row for row, r in zip(rows[1:], front) if r["granularity"] != "hidden_unit"]
    lines = header(
        "latency_fronts: measured latency of the JapaneseVowels front",
        ctx,
        [
            f"The Pareto front (validation accuracy vs size) of study `{study_name}` from `search_quality` ({len(study.trials)} trials), "
            f"each model rebuilt from its trial checkpoint. Batch 1, {seq_len} steps (the task's longest sequence), one thread; "
            f"median over {repeats} interleaved rounds of the median of {calls} calls; speedups against dense in the same runtime. "
            "`MAC ratio` = dense MACs / model MACs (dense kernels). `search (ms)` is the torch latency the search recorded for the architecture (cached by shape).",
        ],
    )
    lines += table(
        ["model", "val acc", "test acc", "size", "hidden sizes", "method / granularity", "MAC ratio", "torch (ms)", "torch speedup", "ORT (ms)", "ORT speedup", "search (ms)"],
        rows,
        align="lrrrllrrrrrr",
    )
    lines.append("")
    if hu:
        best = max(hu, key=lambda r: r[10])
        lines.append(f"- {len(hu)} hidden-unit models: torch speedup {min(r[8] for r in hu):.2f}–{max(r[8] for r in hu):.2f}x, ORT {min(r[10] for r in hu):.2f}–{max(r[10] for r in hu):.2f}x "
                     f"(fastest: {best[0]}, {best[4]}, test accuracy {best[2]:.4f}).")
    if un:
        lines.append(f"- {len(un)} unstructured models: torch speedup {min(r[8] for r in un):.2f}–{max(r[8] for r in un):.2f}x, ORT {min(r[10] for r in un):.2f}–{max(r[10] for r in un):.2f}x "
                     "(zeros kept in dense matrices: smaller to store, not faster).")
    lines += ["", f"![test accuracy vs latency]({NAME}.png)"]
    write_result(ctx, NAME, lines)

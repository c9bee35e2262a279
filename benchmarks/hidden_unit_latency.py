"""hidden_unit_latency: how much of the MAC reduction of hidden-unit pruning shows up as speed.

A 2-layer unidirectional LSTM of 256 units (12 input channels, 9 classes, last pooling),
batch 1, 40 steps, one thread. 25 / 50 / 75 % of the hidden units of each layer are
removed at random (unit masks through ``ModelGroups.apply_unit_mask``), the model is
compacted with ``autoprune.pruning.compact.compact`` and timed in torch and ONNX Runtime
against the dense model, interleaved. The bound is dense MACs / compact MACs
(``macs_per_sequence``). A plain ``nn.LSTM(num_layers=2)`` of half width (128) + Linear,
in both runtimes, is the "reachable" reference for 50 %.
"""

from __future__ import annotations

import io
import time
import warnings
from typing import Any, Callable, Dict

from benchmarks._common import Context, header, interleave, log, median, one_thread, pyplot, save_png, table, verdict, write_result

NAME = "hidden_unit_latency"
FRACTIONS = [0.25, 0.5, 0.75]
SEQ_LEN, BATCH, HIDDEN, INPUT, CLASSES = 40, 1, 256, 12, 9
TARGET = 0.80  # measured ORT speedup at 50 % >= 80 % of the MAC bound


def _dense():
    import torch

    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier

    torch.manual_seed(0)
    return RNNClassifier(ArchSpec("lstm", INPUT, [[HIDDEN], [HIDDEN]], CLASSES, "last")).eval()


def _remove_units(dense: Any, fraction: float, seed: int):
    """Random unit masks on every layer, applied to a copy, then compacted. Returns (masked, compact)."""
    import copy

    import torch

    from autoprune.pruning.compact import compact
    from autoprune.pruning.groups import ModelGroups

    model = copy.deepcopy(dense)
    groups = ModelGroups(model)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in groups.params.items()}
    g = torch.Generator().manual_seed(seed)
    for layer in groups.iter_layers():
        keep = torch.ones(layer.hidden, dtype=torch.bool)
        keep[torch.randperm(layer.hidden, generator=g)[: int(round(fraction * layer.hidden))]] = False
        groups.apply_unit_mask(layer, keep, masks)
    with torch.no_grad():
        for n, p in groups.params.items():
            p.mul_(masks[n])
    return model.eval(), compact(model)


class HalfWidthLSTM:
    """The hand-built reference: ``nn.LSTM(num_layers=2)`` + Linear on the last step (full-length inputs)."""

    def __new__(cls, hidden: int):
        import torch
        from torch import nn

        class Ref(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(INPUT, hidden, num_layers=2, batch_first=True)
                self.head = nn.Linear(hidden, CLASSES)

            def forward(self, x):
                return self.head(self.lstm(x)[0][:, -1])

        torch.manual_seed(0)
        return Ref().eval()


def _ort_session(onnx_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def _ref_onnx(model: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(BATCH, SEQ_LEN, INPUT),), buf, dynamo=False, input_names=["x"], output_names=["logits"], opset_version=17)
    return buf.getvalue()


def timer(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    """A candidate for ``interleave``: the median of ``calls`` timed calls, in milliseconds."""

    def run() -> float:
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return median(times) * 1e3

    return run


def torch_call(model: Any, *inputs: Any) -> Callable[[], Any]:
    import torch

    def call():
        with torch.inference_mode():
            return model(*inputs)

    return call


def ort_call(session: Any, feed: Dict[str, Any]) -> Callable[[], Any]:
    return lambda: session.run(None, feed)


def run(ctx: Context) -> None:
    one_thread()
    import numpy as np
    import torch

    from autoprune.runtime.measure import macs_per_sequence, size_bytes
    from autoprune.runtime.convert import to_onnx_bytes

    ctx.runs(NAME)
    repeats, calls, warmup = (9, 40, 40) if ctx.quick else (21, 100, 100)
    x = torch.randn(BATCH, SEQ_LEN, INPUT)
    lengths = torch.full((BATCH,), SEQ_LEN, dtype=torch.long)
    feed = {"x": x.numpy(), "lengths": lengths.numpy()}

    dense = _dense()
    models: Dict[str, Any] = {"dense": dense}
    info: Dict[str, Dict[str, Any]] = {"dense": {"fraction": 0.0, "hidden": dense.hidden_sizes, "macs": macs_per_sequence(dense, SEQ_LEN), "size": size_bytes(dense)}}
    for i, frac in enumerate(FRACTIONS):
        masked, small = _remove_units(dense, frac, seed=i)
        with torch.inference_mode():
            err = float((masked(x, lengths) - small(x, lengths)).abs().max())
        name = f"{int(frac * 100)}% removed"
        models[name] = small
        info[name] = {"fraction": frac, "hidden": small.hidden_sizes, "macs": macs_per_sequence(small, SEQ_LEN), "size": size_bytes(small), "max_abs_diff": f"{err:.1e}"}
    ref = HalfWidthLSTM(HIDDEN // 2)
    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier

    ref_macs = macs_per_sequence(RNNClassifier(ArchSpec("lstm", INPUT, [[HIDDEN // 2], [HIDDEN // 2]], CLASSES, "last")), SEQ_LEN)
    info["nn.LSTM 128 (reference)"] = {"fraction": 0.5, "hidden": [[HIDDEN // 2], [HIDDEN // 2]], "macs": ref_macs, "size": sum(p.numel() for p in ref.parameters()) * 4}

    log(f"{NAME}: exporting {len(models) + 1} models to ONNX")
    candidates: Dict[str, Callable[[], float]] = {}
    for name, model in models.items():
        candidates[f"torch|{name}"] = timer(torch_call(model, x, lengths), calls)
        sess = _ort_session(to_onnx_bytes(model))
        np.testing.assert_allclose(sess.run(None, feed)[0], torch_call(model, x, lengths)().numpy(), rtol=1e-3, atol=1e-4)
        candidates[f"ort|{name}"] = timer(ort_call(sess, feed), calls)
    rname = "nn.LSTM 128 (reference)"
    candidates[f"torch|{rname}"] = timer(torch_call(ref, x), calls)
    rsess = _ort_session(_ref_onnx(ref))
    candidates[f"ort|{rname}"] = timer(ort_call(rsess, {"x": x.numpy()}), calls)
    for c in candidates.values():  # warm-up
        for _ in range(max(1, warmup // calls)):
            c()
    log(f"{NAME}: {repeats} interleaved rounds x {len(candidates)} candidates x {calls} calls")
    ms = {k: median(v) for k, v in interleave(candidates, repeats).items()}

    rows, plot = [], {"torch": [], "ort": [], "bound": []}
    dense_macs = info["dense"]["macs"]
    result50 = None
    for name, meta in info.items():
        bound = dense_macs / meta["macs"]
        t, o = ms[f"torch|{name}"], ms[f"ort|{name}"]
        st, so = ms["torch|dense"] / t, ms["ort|dense"] / o
        rows.append([name, str(meta["hidden"]), meta["macs"], bound, t, st, f"{100 * st / bound:.0f} %", o, so, f"{100 * so / bound:.0f} %", meta.get("max_abs_diff")])
        if name.endswith("removed") or name == "dense":
            plot["torch"].append((meta["fraction"], st))
            plot["ort"].append((meta["fraction"], so))
            plot["bound"].append((meta["fraction"], bound))
        if name == "50% removed":
            result50 = (so, bound)
    ref_t, ref_o = ms[f"torch|{rname}"], ms[f"ort|{rname}"]
    c50t, c50o = ms["torch|50% removed"], ms["ort|50% removed"]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style, label in (("bound", "k--", "MAC bound"), ("torch", "o-", "torch (measured)"), ("ort", "s-", "ONNX Runtime (measured)")):
        pts = sorted(plot[key])
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.plot([50], [ms["torch|dense"] / ref_t], "o", mfc="none", ms=10, c="C0", label="nn.LSTM 128, torch")
    ax.plot([50], [ms["ort|dense"] / ref_o], "s", mfc="none", ms=10, c="C1", label="nn.LSTM 128, ORT")
    ax.set_xlabel("hidden units removed per layer (%)")
    ax.set_ylabel("speedup over dense (x)")
    ax.set_title(f"2-layer LSTM {HIDDEN}, batch {BATCH}, {SEQ_LEN} steps, 1 thread")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, ctx.results_dir / f"{NAME}.png")

    so50, bound50 = result50
    lines = header(
        "hidden_unit_latency: compaction speedup against the MAC bound",
        ctx,
        [
            f"2-layer unidirectional LSTM, {HIDDEN} units, {INPUT} input channels, {CLASSES} classes, last pooling; batch {BATCH}, {SEQ_LEN} steps, one thread "
            "(torch: `torch.set_num_threads(1)`; ONNX Runtime: intra- and inter-op threads 1, CPU provider, exported by `autoprune.runtime.convert.to_onnx_bytes`). "
            "Units removed at random with `ModelGroups.apply_unit_mask`, then `compact`. "
            f"Each cell is the median over {repeats} interleaved rounds of the median of {calls} timed calls. "
            "Speedups are against dense in the same runtime; `% of bound` = speedup / (dense MACs / compact MACs). "
            "`max |Δ|`: largest difference between the masked and the compacted model's logits.",
        ],
    )
    lines += table(
        ["model", "hidden sizes", "MACs / sequence", "MAC bound (x)", "torch (ms)", "torch speedup", "% of bound", "ORT (ms)", "ORT speedup", "% of bound", "max |Δ|"],
        rows,
    )
    lines += [
        "",
        f"Reachable reference at 50 %: the hand-built `nn.LSTM(12, 128, num_layers=2)` + Linear runs in {ref_t:.3f} ms (torch) and {ref_o:.3f} ms (ORT); "
        f"autoprune's compacted 50 % model (a stack of single-layer LSTMs) in {c50t:.3f} ms and {c50o:.3f} ms, i.e. "
        f"{c50t / ref_t:.2f}x and {c50o / ref_o:.2f}x the reference's time.",
        "",
        f"**Target: at 50 % removed, measured ORT speedup >= {int(TARGET * 100)} % of the MAC bound.** "
        f"Measured {so50:.2f}x of a {bound50:.2f}x bound = {100 * so50 / bound50:.0f} % → {verdict(so50 / bound50 >= TARGET)}.",
        "",
        f"![speedup vs units removed]({NAME}.png)",
    ]
    write_result(ctx, NAME, lines)

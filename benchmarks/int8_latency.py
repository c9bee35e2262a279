"""int8_latency: int8 against float32 after hidden-unit pruning, in torch and ONNX Runtime, with sizes.

2-layer unidirectional LSTM-256 and GRU-256 (12 input channels, 9 classes, last pooling),
dense and with 50 % of the units of every layer removed (compacted to 128), batch 1,
40 steps, one thread. int8 is what ``quantize: int8`` runs (:mod:`autoprune.runtime.quantize`):
torch ``quantize_dynamic`` (int8 LSTM/GRU/Linear kernels) and ONNX Runtime's
``quantize_dynamic`` on the exported graph (``DynamicQuantizeLSTM`` + ``MatMulInteger``;
ONNX Runtime has no int8 GRU kernel, so its GRU stays float32 and only the head is int8:
measured anyway, to show it). float32 and int8 of one model and runtime are timed
interleaved. Sizes: ``size_bytes`` (float32) and ``int8_size_bytes`` (int8 values, scales
and zero points), plus the ONNX file sizes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from benchmarks._common import Context, header, interleave, log, median, one_thread, table, verdict, write_result
from benchmarks.hidden_unit_latency import ort_call, timer, torch_call

NAME = "int8_latency"
SEQ_LEN, BATCH, HIDDEN, INPUT, CLASSES = 40, 1, 256, 12, 9
SPEED_TARGET, SIZE_TARGET = 2.0, 0.27  # ORT LSTM-256 dense: int8 >= 2x faster, <= 0.27x the float32 size


def _model(cell: str, hidden: int) -> Any:
    import torch

    from autoprune.models.arch import ArchSpec
    from autoprune.models.rnn import RNNClassifier

    torch.manual_seed(0)
    return RNNClassifier(ArchSpec(cell, INPUT, [[hidden], [hidden]], CLASSES, "last")).eval()


def run(ctx: Context) -> None:
    one_thread()
    import torch

    from autoprune.runtime.measure import size_bytes
    from autoprune.runtime.convert import to_onnx_bytes
    from autoprune.runtime.kernels import INT8_CELLS
    from autoprune.runtime.quantize import int8_size_bytes
    from autoprune.runtime.convert import onnx_int8_bytes, ort_session, torch_int8

    ctx.runs(NAME)
    repeats, calls, warmup = (5, 40, 40) if ctx.quick else (15, 100, 100)
    x = torch.randn(BATCH, SEQ_LEN, INPUT)
    lengths = torch.full((BATCH,), SEQ_LEN, dtype=torch.long)
    feed = {"x": x.numpy(), "lengths": lengths.numpy()}

    rows, sizes, checks = [], [], {}
    for cell in ("lstm", "gru"):
        for label, hidden in (("dense", HIDDEN), ("50% removed", HIDDEN // 2)):
            model = _model(cell, hidden)
            name = f"{cell.upper()}-{HIDDEN} {label}"
            f_onnx, q_onnx = to_onnx_bytes(model), onnx_int8_bytes(model)
            q_torch = torch_int8(model)
            f_sess, q_sess = ort_session(f_onnx), ort_session(q_onnx)
            with torch.inference_mode():
                ref = model(x, lengths)
                diff_torch = float((q_torch(x, lengths) - ref).abs().max())
            diff_ort = float((torch.from_numpy(q_sess.run(None, feed)[0]) - ref).abs().max())
            candidates: Dict[str, Callable[[], float]] = {
                "torch|float32": timer(torch_call(model, x, lengths), calls),
                "torch|int8": timer(torch_call(q_torch, x, lengths), calls),
                "ort|float32": timer(ort_call(f_sess, feed), calls),
                "ort|int8": timer(ort_call(q_sess, feed), calls),
            }
            for c in candidates.values():  # warm-up
                for _ in range(max(1, warmup // calls)):
                    c()
            log(f"{NAME}: {name}: {repeats} interleaved rounds x 4 candidates x {calls} calls")
            ms = {k: median(v) for k, v in interleave(candidates, repeats).items()}
            ort_note = "" if cell in INT8_CELLS["onnxruntime"] else " (no int8 GRU kernel: GRU stays float32)"
            for rt, key, diff in (("torch", "torch", diff_torch), ("ONNX Runtime" + ort_note, "ort", diff_ort)):
                f, q = ms[f"{key}|float32"], ms[f"{key}|int8"]
                rows.append([name, rt, f, q, f / q, f"{diff:.1e}"])
            fs = size_bytes(model)
            qs_ort, qs_torch = int8_size_bytes(model, "onnxruntime"), int8_size_bytes(model, "torch")
            if cell not in INT8_CELLS["onnxruntime"]:
                qs_ort = None  # ONNX Runtime cannot run it in int8: no int8 size to claim
            sizes.append([name, fs, qs_ort, qs_ort / fs if qs_ort else None, qs_torch, qs_torch / fs, len(f_onnx), len(q_onnx), len(q_onnx) / len(f_onnx)])
            if cell == "lstm" and label == "dense":
                checks = {"speedup": ms["ort|float32"] / ms["ort|int8"], "size": qs_ort / fs}

    speed_ok = checks["speedup"] >= SPEED_TARGET
    size_ok = checks["size"] <= SIZE_TARGET
    lines = header(
        f"{NAME}: int8 against float32, torch and ONNX Runtime",
        ctx,
        [
            f"2-layer unidirectional LSTM / GRU of {HIDDEN} units ({INPUT} input channels, {CLASSES} classes, last pooling), dense and with 50 % of "
            f"every layer's units removed ({HIDDEN // 2} left); random weights (latency and size do not depend on their values); batch {BATCH}, "
            f"{SEQ_LEN} steps, one thread. int8 = `autoprune.runtime.quantize`: torch `quantize_dynamic` (per-tensor int8 weights) and ONNX Runtime "
            "`quantize_dynamic` (per-channel int8 weights, `DynamicQuantizeLSTM` + `MatMulInteger`) on the graph `autoprune export` writes. "
            f"Each cell: median over {repeats} interleaved rounds of the median of {calls} timed calls. "
            "`max |Δ|`: largest difference between int8 and float32 logits on the timed input.",
        ],
    )
    lines += ["## Latency", ""]
    lines += table(["model", "runtime", "float32 (ms)", "int8 (ms)", "int8 speedup (x)", "max |Δ| logits"], rows)
    lines += ["", "## Size", ""]
    lines += [
        "`size_bytes` counts float32 parameters; the int8 sizes count one byte per weight value (or the sparse encoding where smaller), "
        "a float32 scale and an int8 zero point per output channel (ONNX Runtime) or per tensor (torch), and float32 biases. "
        "ONNX file sizes include the graph and shape constants; the int8 GRU file is the float32 GRU with an int8 head (—: no int8 GRU in ONNX Runtime).",
        "",
    ]
    lines += table(
        ["model", "float32 (B)", "int8 ORT (B)", "ratio", "int8 torch (B)", "ratio", "float32 .onnx (B)", "int8 .onnx (B)", "file ratio"], sizes
    )
    lines += [
        "",
        f"**Target: LSTM-{HIDDEN} dense in ONNX Runtime, int8 >= {SPEED_TARGET:.0f}x faster than float32.** Measured {checks['speedup']:.2f}x → {verdict(speed_ok)}.",
        "",
        f"**Target: int8 size <= {SIZE_TARGET}x float32 (LSTM-{HIDDEN} dense).** Measured {checks['size']:.3f}x → {verdict(size_ok)}.",
    ]
    path = write_result(ctx, NAME, lines)
    log(f"{NAME}: wrote {path}")

"""The model in another runtime's form: the ONNX graph (float32 or int8), an ONNX Runtime
session, and torch's dynamic int8 form. Size, latency, int8 evaluation and export all
convert through these functions, so what is measured is exactly what ships.

* ONNX: the TorchScript-based exporter (``dynamo=False``, opset 17) writes the native
  ONNX LSTM/GRU ops with their weights as graph initializers, which ONNX Runtime runs
  well and its dynamic quantizer turns into ``DynamicQuantizeLSTM`` / ``MatMulInteger``.
* torch int8: ``torch.ao.quantization.quantize_dynamic`` (int8 LSTM/GRU/Linear kernels).
  It is deprecated and torchao's quantizers cover ``nn.Linear`` only, so this route lives
  exactly as long as torch ships it; :func:`torch_int8` says so when it is gone.
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from autoprune.errors import ConfigError

__all__ = ["onnx_available", "to_onnx_bytes", "onnx_int8_bytes", "ort_session", "torch_int8", "input_size_of", "example_inputs"]


def onnx_available() -> bool:
    """True when the ``onnx`` extra (onnx, onnxruntime) is installed."""
    try:
        import onnx  # noqa: F401  (optional: the onnx extra)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def input_size_of(module: Any) -> int:
    """Input channels of an :class:`RNNClassifier` or of a wrapper holding one as ``.model`` (``Normalized``)."""
    spec = getattr(module, "spec", None) or module.model.spec
    return int(spec.input_size)


def example_inputs(module: Any, batch_size: int = 1, seq_len: int = 8, random: bool = False, input_size: Optional[int] = None) -> tuple:
    """``(x, lengths)`` of the input type the model takes: float ``[B, T, C]``, or token ids ``[B, T]`` int64
    when its front starts with an embedding (``random``: random values or ids, else zeros).

    ``module`` is an :class:`RNNClassifier` or a wrapper holding one as ``.model``; ``input_size``
    defaults to the model's own (see :func:`input_size_of`).
    """
    spec = getattr(module, "spec", None) or module.model.spec
    size = input_size if input_size is not None else int(spec.input_size)
    lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    if spec.tokens:
        x = torch.randint(0, size, (batch_size, seq_len)) if random else torch.zeros(batch_size, seq_len, dtype=torch.long)
    else:
        x = torch.randn(batch_size, seq_len, size) if random else torch.zeros(batch_size, seq_len, size)
    return x, lengths


def to_onnx_bytes(model: nn.Module, input_size: Optional[int] = None, batch_size: int = 1, seq_len: int = 8) -> bytes:
    """Export ``model(x, lengths)`` to ONNX in memory with dynamic batch and time axes (and per-frame outputs' time axis).

    ``input_size`` defaults to the model's own (see :func:`input_size_of`).
    """
    x, lengths = example_inputs(model, batch_size, seq_len, input_size=input_size)
    spec = getattr(model, "spec", None) or model.model.spec
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x, lengths),
            buf,
            dynamo=False,
            input_names=["x", "lengths"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch", 1: "time"} if spec.per_frame else {0: "batch"}},
            opset_version=17,
        )
    return buf.getvalue()


def onnx_int8_bytes(module: nn.Module, input_size: Optional[int] = None) -> bytes:
    """The int8 ONNX graph of ``module(x, lengths)``: float export, then ONNX Runtime's dynamic quantizer.

    Weights int8 with one scale per output channel. Deterministic: the same weights give the
    same bytes (export and trial build the same file).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional: the onnx extra

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(to_onnx_bytes(module, input_size))
        root.setLevel(logging.ERROR)  # the quantizer logs "consider pre-processing" on the root logger
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def ort_session(model: bytes | str, threads: int = 1) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads."""
    import onnxruntime as ort  # optional: the onnx extra

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def torch_int8(module: nn.Module) -> nn.Module:
    """A dynamically quantized copy of ``module`` (int8 LSTM/GRU/Linear) for torch.

    Raises:
        ConfigError: this torch no longer ships ``torch.ao.quantization.quantize_dynamic``.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - a future torch
        raise ConfigError(
            f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic: int8 in runtime 'torch' is gone; "
            "use measure.runtime: onnxruntime"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization, on every call
        return quantize_dynamic(copy.deepcopy(module).eval(), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)

"""int8 after pruning: the model as it will run, in the runtime ``measure.runtime`` names.

A policy's ``quantize: int8`` applies after compaction. Weights become int8 (symmetric,
zero point 0), activations are quantized dynamically at run time; biases stay float32.

* ``onnxruntime`` (the route that lasts): the float ONNX graph (weights as initializers)
  goes through ``onnxruntime.quantization.quantize_dynamic`` with per-output-channel
  scales, giving ``DynamicQuantizeLSTM`` and ``MatMulInteger`` kernels. ONNX Runtime has
  no int8 GRU kernel: its quantizer leaves a GRU in float, so int8 GRU is refused there.
* ``torch``: ``torch.ao.quantization.quantize_dynamic`` (per-tensor scales; int8 kernels
  for LSTM, GRU and Linear). ``torch.ao.quantization`` is deprecated and torchao's
  quantizers cover ``nn.Linear`` only, so this route lives exactly as long as torch ships
  it; everything torch-int8 goes through :func:`autoprune.runtime.convert.torch_int8`, which
  says so when it is gone.

Dynamic activation scales are computed over the whole input of a call, so other
sequences in a batch would change a sequence's logits: int8 accuracy is always evaluated
one sequence at a time (batch 1, trimmed to its length), the way a deployment sees it,
and always on the raw-input form that export ships (normalisation folded in front).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.models.rnn import Normalized, flat_labels, flat_outputs
from autoprune.runtime.convert import onnx_available, onnx_int8_bytes, ort_session, torch_int8
from autoprune.runtime.kernels import INT8_CELLS, PRECISIONS
from autoprune.runtime.measure import encoded_bytes, tensor_size_bytes

__all__ = [
    "int8_size_bytes",
    "int8_matrix_bytes",
    "int8_params",
    "int8_predictor",
    "predict_each",
    "raw_split",
    "int8_evaluation",
    "quantized_result",
]

#: runtimes whose int8 weights carry one scale per output channel (the rest: one per tensor)
_PER_CHANNEL = {"onnxruntime": True, "torch": False}

#: modules whose weights each runtime's dynamic quantizer makes int8 (measured on the exported graphs:
#: ONNX Runtime quantizes LSTM, MatMul/Gemm, Conv and Gather, not GRU; torch's quantize_dynamic LSTM, GRU, Linear)
_INT8_MODULES = {"onnxruntime": (nn.LSTM, nn.Linear, nn.Conv1d, nn.Embedding), "torch": (nn.LSTM, nn.GRU, nn.Linear)}


def int8_params(model: Any, runtime: str) -> set:
    """Names of the weight matrices ``runtime`` stores in int8 (the rest of the model stays float32)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, _INT8_MODULES.get(runtime, _INT8_MODULES["onnxruntime"])):
            names |= {f"{prefix}.{n}" if prefix else n for n, p in module.named_parameters(recurse=False) if p.dim() >= 2}
    return names


def int8_matrix_bytes(numel: int, nnz: int, rows: int, runtime: str) -> int:
    """Bytes of an int8 weight matrix of ``numel`` values in ``rows`` rows (output channels), ``nnz`` of them non-zero:
    the values (dense or sparse, :func:`~autoprune.runtime.measure.encoded_bytes`) plus a float32 scale and an int8
    zero point per output channel (ONNX Runtime) or per tensor (torch)."""
    channels = rows if _PER_CHANNEL.get(runtime, True) else 1
    return encoded_bytes(numel, nnz, rows, elem_bytes=1) + channels * (4 + 1)


def _int8_tensor_bytes(w: Any, runtime: str) -> int:
    """Bytes of one int8 weight matrix as ``runtime`` quantizes it (weights that round to 0 are zeros too)."""
    w = w.detach().float().reshape(w.shape[0], -1)  # a Conv1d's [out, in, kernel]: one channel per output
    if _PER_CHANNEL.get(runtime, True):
        amax = w.abs().amax(dim=1, keepdim=True)
    else:
        amax = w.abs().max().reshape(1, 1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scale)
    return int8_matrix_bytes(q.numel(), int(torch.count_nonzero(q)), q.shape[0], runtime)


def int8_size_bytes(model: Any, runtime: str = "onnxruntime") -> int:
    """Storage of ``model`` with int8 weight matrices (as the runtime quantizes them) and float32 biases.

    The weight matrices the runtime quantizes (recurrent ``weight_ih``/``weight_hh``, every Linear's;
    in ONNX Runtime also Conv1d and Embedding weights, in torch the GRU's) count one byte per value,
    with the sparse encoding where smaller, plus a float32 scale and an int8 zero point per output
    channel (ONNX Runtime) or per tensor (torch). Everything else counts as float32, as in
    :func:`autoprune.runtime.measure.size_bytes`.
    """
    int8 = int8_params(model, runtime)
    total = 0
    for name, p in model.named_parameters():
        total += _int8_tensor_bytes(p, runtime) if name in int8 else tensor_size_bytes(p.detach())
    return total


def int8_predictor(wrapped: Any, runtime: str, input_size: Optional[int] = None) -> Callable[[Any, Any], Any]:
    """``fn(x, lengths) -> logits`` of the int8 form of ``wrapped`` in ``runtime``."""
    if runtime == "torch":
        q = torch_int8(wrapped)
        return lambda x, lengths: q(x, lengths)
    if runtime == "onnxruntime":
        sess = ort_session(onnx_int8_bytes(wrapped, input_size))
        return lambda x, lengths: torch.from_numpy(sess.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})[0])
    raise ConfigError(f"int8 runtime must be one of {', '.join(INT8_CELLS)}, got {runtime!r}")


def predict_each(fn: Callable[[Any, Any], Any], x: Any, lengths: Any) -> Any:
    """Logits of every sequence run alone (batch 1, trimmed to its length): dynamic int8 depends on the batch.

    Scored outputs in the order of :func:`~autoprune.models.rnn.flat_outputs`: ``[N, C]``, or ``[ΣL, C]`` per frame.
    """
    outs = []
    with torch.inference_mode():
        for i in range(len(lengths)):
            n = int(lengths[i])
            one = lengths[i : i + 1].contiguous()
            outs.append(flat_outputs(torch.as_tensor(fn(x[i : i + 1, :n].contiguous(), one)), one))
    return torch.cat(outs)


def raw_split(dm: Any, split: str) -> tuple:
    """``(raw x, lengths, y, mean, std)`` of a split: the inputs as the task gives them (un-normalised, zero-padded;
    token ids as they are, with ``mean``/``std`` None)."""
    x, lengths, y = dm.tensors(split)
    if x.dim() == 2:  # token ids: given as they are, nothing to normalise
        return x, lengths, y, None, None
    mean = getattr(dm, "channel_mean", None)
    std = getattr(dm, "channel_std", None)
    if mean is None or std is None:
        mean, std = torch.zeros(x.size(2)), torch.ones(x.size(2))
    steps = torch.arange(x.size(1)).unsqueeze(0)
    valid = (steps < lengths.unsqueeze(1)).unsqueeze(2).float()
    raw = (x * std.reshape(1, 1, -1) + mean.reshape(1, 1, -1)) * valid
    return raw, lengths, y, mean, std


def int8_evaluation(model: Any, dm: Any, runtime: str) -> Dict[str, Any]:
    """Accuracy of the int8 form of a compacted model on validation and test, as deployed.

    Returns ``val_accuracy``/``val_loss`` and ``test_accuracy``/``test_loss`` in ``runtime``, and ``test_correct``:
    the count of correct test predictions in every runtime with an int8 kernel for the
    cell (export checks each exported file against its runtime's count).
    """
    out: Dict[str, Any] = {"runtime": runtime, "test_correct": {}}
    cell = model.spec.cell
    predictors: Dict[str, Callable[[Any, Any], Any]] = {}  # one int8 build per runtime (the normalisation is the same for every split)
    for split in ("val", "test"):
        raw, lengths, y, mean, std = raw_split(dm, split)
        for rt in INT8_CELLS:
            if cell not in INT8_CELLS[rt] or (rt != runtime and split == "val"):
                continue
            if rt == "onnxruntime" and not onnx_available():
                continue
            if rt not in predictors:
                predictors[rt] = int8_predictor(Normalized(model, mean, std).eval(), rt)
            logits = predict_each(predictors[rt], raw, lengths)
            labels = flat_labels(y, lengths)  # a sequence's label, or each valid frame's
            correct = int((logits.argmax(1) == labels).sum())
            if rt == runtime:
                out[f"{split}_accuracy"] = correct / len(labels)
                out[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(logits.float(), labels))
            if split == "test":
                out["test_correct"][rt] = correct
                out["n_test"] = len(labels)
    return out


def quantized_result(model: Any, dm: Any, quantize: str, runtime: str) -> Dict[str, Any]:
    """What a trial records for a quantized policy, measured on the int8 model in ``runtime``.

    Returns ``size_bytes`` and ``val``/``test`` (``accuracy``, ``loss``) of the int8 model, plus
    ``int8``: the float32 model's numbers beside them (``float_val_accuracy``,
    ``float_test_accuracy`` are filled by the caller), the runtime and the per-runtime counts
    of correct test predictions (see :func:`int8_evaluation`).
    """
    if quantize != "int8":
        raise ConfigError(f"quantize must be one of {', '.join(PRECISIONS)}, got {quantize!r}")
    ev = int8_evaluation(model, dm, runtime)
    return {
        "size_bytes": int8_size_bytes(model, runtime),
        "val": {"accuracy": ev["val_accuracy"], "loss": ev["val_loss"]},
        "test": {"accuracy": ev["test_accuracy"], "loss": ev["test_loss"]},
        "int8": {"runtime": runtime, "test_correct": ev["test_correct"], "n_test": ev["n_test"]},
    }

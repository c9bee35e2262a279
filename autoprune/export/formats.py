"""Export formats as a registry: each format is one :class:`ExportFormat` entry.

An entry says how to write the model (float32 or int8) to a file, how to load the file
back into ``fn(x, lengths) -> logits``, which runtime's numerics the file has (its
int8 accuracy is checked against the count the trial recorded in that runtime), the
largest logit difference allowed against the in-memory model, per precision, and the
how-to-load snippet of the export's README. A new format is one :func:`register_format`.

Nothing here imports torch at import time: the CLI lists the format names when it starts
(``autoprune --help``), so every torch-using import sits inside the function that needs it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from autoprune.errors import ConfigError, ExportError
from autoprune.runtime.kernels import INT8_CELLS

__all__ = ["ExportFormat", "ExportSubject", "Snippet", "FORMATS", "register_format", "get_format", "verify_file", "int8_unsupported", "load_state_dict_export"]

Predict = Callable[[Any, Any], Any]


@dataclass
class ExportSubject:
    """The model being exported: the compacted float32 model, the task's normalisation and the precision it ships in."""

    model: Any  # RNNClassifier, compacted, float32 weights
    mean: Any
    std: Any
    precision: str = "float32"  # float32 | int8
    class_names: Optional[List[str]] = None
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def wrapped(self) -> Any:
        """The float32 model taking raw inputs (normalisation folded in front)."""
        if "wrapped" not in self._cache:
            from autoprune.models.rnn import Normalized

            self._cache["wrapped"] = Normalized(self.model, self.mean, self.std).eval()
        return self._cache["wrapped"]

    @property
    def input_size(self) -> int:
        return int(self.model.spec.input_size)

    def torch_module(self) -> Any:
        """The module torch runs: the float32 model, or its int8 form."""
        if self.precision != "int8":
            return self.wrapped
        if "torch_int8" not in self._cache:
            from autoprune.runtime.convert import torch_int8

            self._cache["torch_int8"] = torch_int8(self.wrapped)
        return self._cache["torch_int8"]

    def onnx_bytes(self) -> bytes:
        """The ONNX graph: float32, or int8 through ONNX Runtime's quantizer."""
        if "onnx" not in self._cache:
            from autoprune.runtime.convert import onnx_int8_bytes, to_onnx_bytes

            make = onnx_int8_bytes if self.precision == "int8" else to_onnx_bytes
            self._cache["onnx"] = make(self.wrapped, self.input_size)
        return self._cache["onnx"]

    def reference(self, runtime: str) -> Predict:
        """The in-memory model an exported file is compared with: torch float32, or the int8 form in ``runtime``."""
        if self.precision != "int8":
            return self.wrapped
        key = f"ref-{runtime}"
        if key not in self._cache:
            if runtime == "torch":
                self._cache[key] = self.torch_module()
            else:
                from autoprune.runtime.convert import ort_session

                sess = ort_session(self.onnx_bytes())
                self._cache[key] = _ort_predict(sess)
        return self._cache[key]

    def predict(self, fn: Predict, x: Any, lengths: Any) -> Any:
        """Logits of a whole split: in batches for float32, one sequence at a time for int8 (dynamic activation scales)."""
        if self.precision == "int8":
            from autoprune.runtime.quantize import predict_each

            return predict_each(fn, x, lengths)
        return predict_batched(fn, x, lengths)


def predict_batched(fn: Predict, x: Any, lengths: Any, batch_size: int = 256) -> Any:
    """Scored logits of a whole split in batches: ``[N, C]``, or per frame ``[ΣL, C]`` (:func:`~autoprune.models.rnn.flat_outputs`)."""
    import torch

    from autoprune.models.rnn import flat_outputs

    outs = []
    with torch.inference_mode():
        for i in range(0, len(lengths), batch_size):
            xb, lb = x[i : i + batch_size], lengths[i : i + batch_size]
            outs.append(flat_outputs(torch.as_tensor(fn(xb[:, : int(lb.max())], lb)), lb))
    return torch.cat(outs)


def _ort_predict(sess: Any) -> Predict:
    import torch

    return lambda xb, lb: torch.from_numpy(sess.run(None, {"x": xb.numpy(), "lengths": lb.numpy()})[0])


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: the ``--format`` value.
        filename: the file written in the export folder.
        runtime: whose numerics the file has (``torch`` | ``onnxruntime``); an int8 file must reproduce
            the count of correct test predictions the trial recorded in that runtime.
        write: ``write(subject, path)``.
        load: ``load(path) -> fn(x, lengths) -> logits``.
        tolerance: largest max |logit difference| from ``subject.reference(runtime)``, per precision.
        snippet: ``snippet(filename, precision) -> README lines`` (how to load it; a :class:`Snippet` builds them).
        requires: raises :class:`ExportError` when an optional dependency is missing.
    """

    name: str
    filename: str
    runtime: str
    write: Callable[[ExportSubject, Path], None]
    load: Callable[[Path], Predict]
    tolerance: Dict[str, float]
    snippet: Callable[[str, str], List[str]]
    requires: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Snippet:
    """An export README's how-to-load text: ``snippet(filename, precision) -> lines``.

    A heading (its int8 form for an int8 export, when it differs), the Python lines in a
    code block (``{name}`` stands for the file's name), and a note after them for int8.
    """

    title: str
    code: Tuple[str, ...]
    int8_title: str = ""
    int8_note: str = ""

    def __call__(self, name: str, precision: str) -> List[str]:
        int8 = precision == "int8"
        lines = [f"## {self.int8_title if int8 and self.int8_title else self.title}", "```python"]
        lines += [line.replace("{name}", name) for line in self.code] + ["```"]
        return lines + [self.int8_note] * bool(int8 and self.int8_note)


FORMATS: Dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> ExportFormat:
    """Raises:
    ConfigError: unknown format (lists the registered ones)."""
    if name not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {name!r}")
    return FORMATS[name]


def verify_file(fmt: ExportFormat, subject: ExportSubject, path: Path, x: Any, lengths: Any, y: Any, expected_correct: int, reference: Any,
                float_logits: Any = None) -> Dict[str, Any]:
    """Load ``path`` back and check it against the in-memory model and the recorded test result.

    Args:
        y: the scored labels (one per sequence, or per valid frame: :func:`~autoprune.models.rnn.flat_labels`).
        reference: ``subject.predict(subject.reference(fmt.runtime), x, lengths)``, computed once per runtime.
        expected_correct: the count of correct test predictions recorded for this precision and runtime.
        float_logits: the float32 model's test logits: how often the file's predictions agree with them is measured.

    Returns:
        ``max_abs_diff``, ``correct`` and ``test_accuracy`` of the loaded file; with ``float_logits``,
        ``agrees_with_float32``: the fraction of test sequences it predicts as the float32 model does
        (int8 changes a hidden-unit-pruned model's predictions on some sequences; float32 files agree exactly).

    Raises:
        ExportError: logits beyond the format's tolerance, or a different count of correct predictions.
    """
    got = subject.predict(fmt.load(path), x, lengths)
    diff = float((got.float() - reference).abs().max())
    tol = fmt.tolerance[subject.precision]
    if diff > tol:
        raise ExportError(
            f"{fmt.name} export ({subject.precision}) does not match the model it was written from: max |difference| of logits {diff:.2e} > {tol:.0e}"
        )
    correct = int((got.argmax(1) == y).sum())
    if correct != expected_correct:
        n = len(y)
        raise ExportError(
            f"{fmt.name} export ({subject.precision}, {fmt.runtime}) gets {correct}/{n} test sequences right "
            f"(accuracy {correct / n:.6f}); the trial recorded {expected_correct}/{n} ({expected_correct / n:.6f})"
        )
    out = {"max_abs_diff": diff, "correct": correct, "test_accuracy": correct / len(y)}
    if float_logits is not None:
        out["agrees_with_float32"] = float((got.argmax(1) == float_logits.argmax(1)).float().mean())
    return out


# --------------------------------------------------------------------------- torchscript


def _ts_write(subject: ExportSubject, path: Path) -> None:
    import torch

    buffer = io.BytesIO()  # serialised in memory: torch's file writer aborts the process when the disk fills up
    torch.jit.save(torch.jit.script(subject.torch_module()), buffer)
    path.write_bytes(buffer.getbuffer())


def _ts_load(path: Path) -> Predict:
    import torch

    return torch.jit.load(str(path))


_ts_snippet = Snippet(
    "TorchScript (plain PyTorch, no autoprune)",
    ("import torch", "model = torch.jit.load('{name}')", "logits = model(x, lengths)"),
    int8_title="TorchScript int8 (plain PyTorch with its dynamic int8 kernels; no autoprune)",
)
# tolerance: float32: the scripted module runs the same kernels; int8: the same quantized kernels
register_format(ExportFormat("torchscript", "model.torchscript.pt", "torch", _ts_write, _ts_load, {"float32": 1e-4, "int8": 1e-5}, _ts_snippet))


# --------------------------------------------------------------------------- onnx


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(f"--format onnx needs the onnx extra ({err.name} is not installed): pip install 'autoprune[onnx]'") from None


def _onnx_write(subject: ExportSubject, path: Path) -> None:
    path.write_bytes(subject.onnx_bytes())


def _onnx_load(path: Path) -> Predict:
    from autoprune.runtime.convert import ort_session

    return _ort_predict(ort_session(str(path)))


_onnx_snippet = Snippet(
    "ONNX Runtime (batch and time axes are dynamic)",
    (
        "import onnxruntime as ort",
        "sess = ort.InferenceSession('{name}')",
        "logits = sess.run(None, {'x': x, 'lengths': lengths.astype('int64')})[0]  # x as test_set.npz holds it",
    ),
    int8_title="ONNX Runtime int8 (DynamicQuantizeLSTM / MatMulInteger kernels; batch and time axes are dynamic)",
    int8_note="Activations are quantized per call: run one sequence per call to get exactly the recorded accuracy.",
)
# tolerance: float32: ONNX Runtime's kernels against torch's; int8: the same file's bytes in the same runtime
register_format(ExportFormat("onnx", "model.onnx", "onnxruntime", _onnx_write, _onnx_load, {"float32": 1e-4, "int8": 1e-6}, _onnx_snippet, _require_onnx))


# --------------------------------------------------------------------------- state_dict


def load_state_dict_export(path: str | os.PathLike) -> Any:
    """Rebuild an exported ``model_state.pt`` (architecture + weights + normalisation) as an nn.Module.

    An int8 export holds the float32 weights and ``quantize: int8``: the module returned is
    the torch int8 form (see :func:`autoprune.runtime.convert.torch_int8`).
    """
    from autoprune.models.checkpoints import load_checkpoint, model_from
    from autoprune.models.rnn import Normalized

    payload = load_checkpoint(path)
    wrapped = Normalized(model_from(payload, path), payload["mean"], payload["std"]).eval()
    if payload.get("quantize", "none") == "int8":
        from autoprune.runtime.convert import torch_int8

        return torch_int8(wrapped)
    return wrapped


def _sd_write(subject: ExportSubject, path: Path) -> None:
    from autoprune.models.checkpoints import save_checkpoint

    m = subject.model
    save_checkpoint(
        {
            "arch": m.spec.to_dict(),
            "state_dict": m.state_dict(),
            "mean": subject.mean,
            "std": subject.std,
            "class_names": subject.class_names,
            "quantize": "int8" if subject.precision == "int8" else "none",
        },
        path,
    )


_sd_snippet = Snippet(
    "state_dict (rebuild with autoprune)",
    ("from autoprune.export import load_state_dict_export", "model = load_state_dict_export('{name}')"),
    int8_note="The file holds float32 weights and `quantize: int8`; the loader returns the torch int8 form.",
)
register_format(ExportFormat("state_dict", "model_state.pt", "torch", _sd_write, load_state_dict_export, {"float32": 1e-4, "int8": 1e-5}, _sd_snippet))


def int8_unsupported(fmt: ExportFormat, cell: str) -> Optional[str]:
    """Why ``fmt`` cannot ship an int8 ``cell`` model (its runtime has no int8 kernel for it), or None."""
    if cell not in INT8_CELLS.get(fmt.runtime, ()):
        return f"--format {fmt.name} runs in {fmt.runtime}, which has no int8 {cell.upper()} kernel"
    return None

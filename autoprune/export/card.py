"""What an export folder says about its model: ``model_card.json`` and the ``README.md`` on how to load it."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Dict

import torch

import autoprune
from autoprune.export.formats import FORMATS
from autoprune.models.arch import ArchSpec
from autoprune.reference.cache import dense_cache_key
from autoprune.runtime.kernels import precision_name
from autoprune.runtime.measure import macs_per_sequence, size_bytes
from autoprune.runtime.quantize import int8_size_bytes

__all__ = ["model_card", "write_readme", "inputs_text", "accuracy_text"]


def inputs_text(arch: Any) -> str:
    """What an exported model takes and returns, in one sentence (``arch``: an ArchSpec or its dict)."""
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.from_dict(arch)
    x = (
        "`x` int64 token ids `[batch, time]`, padded after each sequence's end"
        if spec.tokens
        else "`x` float32 `[batch, time, channels]`, padded with zeros after each sequence's end (normalisation is inside the model)"
    )
    out = "logits `[batch, time, classes]`, one per frame (frames past a sequence's length are padding)" if spec.per_frame else "logits `[batch, classes]`"
    return f"{x}, and `lengths` int64 `[batch]`; output: {out}"


def model_card(study: str, number: int, config: Any, model: Any, result: Dict[str, Any], payload: Dict[str, Any], settings: Any,
               lat_now: float, files: Dict[str, str], folder: Path, class_names: Any) -> Dict[str, Any]:
    """The model card of an exported trial (``files`` already written in ``folder``)."""
    dense = result.get("dense", {})
    quantize = (payload.get("policy") or {}).get("quantize", "none")
    sz = int8_size_bytes(model, config.measure.runtime) if quantize == "int8" else size_bytes(model)
    return {
        "study": study,
        "trial": number,
        "task": config.task.name,
        "n_classes": model.spec.n_classes,
        "class_names": class_names,
        "policy": payload.get("policy"),
        "sparsity": result.get("sparsity"),
        "hidden_sizes_before": dense.get("hidden_sizes"),
        "hidden_sizes_after": model.hidden_sizes,
        "architecture": model.spec.to_dict(),
        "val_accuracy": result.get("val_accuracy"),
        "test_accuracy": result.get("test_accuracy"),
        "dense": {k: dense.get(k) for k in ("val_accuracy", "test_accuracy", "size_bytes", "params", "latency_ms", "macs")},
        "size_bytes": sz,
        "size_ratio": sz / dense["size_bytes"] if dense.get("size_bytes") else None,
        "compression_ratio": dense["size_bytes"] / sz if dense.get("size_bytes") else None,  # against dense float32
        "precision": precision_name(quantize),
        "int8": result.get("int8") or None,
        "nonzero_params": result.get("nonzero_params"),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs_per_sequence(model, settings["seq_len"]),
        "latency": {
            "search_ms": result.get("latency_ms"),
            "export_ms": lat_now,
            "batch_size": settings["batch_size"],
            "seq_len": settings["seq_len"],
            "threads": settings["threads"],
            "runtime": settings["runtime"],
        },
        "files": {fmt: {"path": name, "bytes": (folder / name).stat().st_size} for fmt, name in files.items()},
        "inputs": inputs_text(model.spec),
        "config_hash": dense_cache_key(config),
        "versions": {"torch": torch.__version__, "autoprune": autoprune.__version__, "python": platform.python_version()},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def accuracy_text(per_file: Dict[str, float], recorded: float) -> str:
    """The test accuracy of an export's files, each verified in its own runtime: one number when they all
    agree, else one per file (an int8 model scores differently in torch and in ONNX Runtime)."""
    values = set(per_file.values())
    if len(values) == 1:
        return f"{values.pop():.4f}"
    if not values:
        return f"{recorded:.4f}"
    return ", ".join(f"{acc:.4f} ({name}: {FORMATS[name].runtime})" for name, acc in per_file.items())


def write_readme(out: Path, card: Dict[str, Any], files: Dict[str, str]) -> None:
    """``README.md`` of an export folder: what the model is, its inputs, and how to load each file."""
    c = card
    lines = [
        f"# Pruned {c['architecture']['cell'].upper()} classifier — study `{c['study']}`, trial {c['trial']}",
        "",
        f"Task `{c['task']}`: {c['n_classes']} classes, {c['architecture']['input_size']} "
        + ("tokens in the vocabulary." if ArchSpec.from_dict(c["architecture"]).tokens else "input channels."),
        f"Test accuracy {accuracy_text(c.get('test_accuracy_per_file') or {}, c['test_accuracy'])} (dense {c['dense']['test_accuracy']:.4f}); "
        f"size {c['size_bytes']:,} B ({c['size_ratio'] * 100:.2f} % of dense); hidden sizes {c['hidden_sizes_after']} "
        f"(dense {c['hidden_sizes_before']}). Precision: {c.get('precision', 'float32')}"
        + (f" (float32 test accuracy {c['int8']['float_test_accuracy']:.4f}; sizes count int8 values, scales and zero points)." if c.get("int8") else "."),
        "",
        f"Inputs are **raw** sequences as the task provides them: {inputs_text(c['architecture'])}. "
        "Class names are in `model_card.json` (`class_names`).",
        "",
    ]
    for name, filename in files.items():
        lines += FORMATS[name].snippet(Path(filename).name, c.get("precision", "float32")) + [""]
    lines += ["`test_set.npz` holds the raw test inputs (`x`, `lengths`, `y`) the export was verified on."]
    (out / "README.md").write_text("\n".join(lines) + "\n")

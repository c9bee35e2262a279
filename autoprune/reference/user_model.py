"""A user's own trained model as a study's dense reference: load, convert, check, cache.

A study may start from a model trained outside autoprune instead of training one::

    model: {from: my_pkg.models:load_trained}                         # returns a trained nn.Module
    model: {checkpoint: runs/my_lstm.pt, build: my_pkg.models:build}  # state dict or Lightning checkpoint
    model: {from: models/my_lstm.py:load_trained}                     # either function named by its file

    model: {from: pkg.mod:fn, front: [conv, bn], rnn: [lstm], pooling: mean, head: [fc1, fc2]}  # the parts named

Supported modules: the family of :mod:`autoprune.models.arch` (a front-end of Embedding,
Linear, Conv1d, norms, activations and Dropout; one or more ``nn.LSTM``/``nn.GRU`` with norms
or dropout between them; last-step, mean, max or attention pooling, or none for one output
per frame; an MLP head), found from what the module's forward does
(:mod:`autoprune.reference.convert`, which logs the mapping); or an autoprune
:class:`~autoprune.models.rnn.RNNClassifier`. float64 weights are converted to float32.

The module's ``forward`` is called as ``forward(x, lengths)`` when it takes two inputs,
else ``forward(x)``, with ``x`` batch-first ``[B, T, C]`` (token ids ``[B, T]``) exactly as
the task's data function gives it (no normalisation is added: the model was trained without
it). The converted :class:`RNNClassifier` must reproduce its logits on the test set within
:data:`MAX_LOGIT_DIFF` (per frame over the true lengths for per-frame models); its validation
and test accuracy become the dense reference, and no dense training runs. The result is cached under ``runs/<study>/dense/<key>/``
like a trained dense model; the key covers the model section, the task, and the
contents of the checkpoint file and of the module files named by ``from``/``build``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, List, Optional

import torch
from torch import nn

from autoprune.config import StudyConfig
from autoprune.errors import ConfigError
from autoprune.layout import study_paths
from autoprune.models.arch import task_mismatch
from autoprune.models.rnn import flat_outputs
from autoprune.reference.cache import DenseResult, file_digest, load_cached, reference_metrics, source_fingerprint, versions, write_reference
from autoprune.tasks import build_datamodule
from autoprune.reference.convert import SUPPORTED, Names, call_user, convert_user_module, convert_with_mapping, takes_lengths
from autoprune.tasks.custom import FunctionImportError, import_function, module_file
from autoprune.yamlio import stable_hash

__all__ = ["MAX_LOGIT_DIFF", "SUPPORTED", "load_user_module", "convert_user_module", "max_logit_diff", "ensure_user_dense"]

log = logging.getLogger(__name__)

#: largest allowed difference between the user's logits and the converted model's on the test set
MAX_LOGIT_DIFF = 1e-5


def _where(config: StudyConfig) -> str:
    m = config.model
    what = f"model.from {m.from_}" if m.from_ else f"model.checkpoint {m.checkpoint}"
    return f"{config.source or '<config>'}: {what}"


def _import_function(spec: str, key: str, where: str) -> Callable:
    module, _, name = spec.partition(":")
    try:
        return import_function(module, name)
    except FunctionImportError as err:
        raise ConfigError(f"{where}: model.{key}: {err}") from err.__cause__


def _call(fn: Callable, spec: str, key: str, where: str):
    try:
        module = fn()
    except Exception as err:
        raise ConfigError(f"{where}: model.{key}: {spec}() raised {' '.join(f'{type(err).__name__}: {err}'.split())}") from err
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{where}: model.{key}: {spec}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _state_dict_for(module: Any, payload: Any, where: str) -> dict:
    """The state dict inside a checkpoint, fitted to ``module``'s keys (a Lightning checkpoint's ``model.`` prefix is dropped)."""
    sd = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{where}: the file holds no state dict (a dict of tensors, or a Lightning checkpoint with 'state_dict')")
    want = set(module.state_dict())
    if want <= set(sd):
        return {k: sd[k] for k in want}
    prefixes = {k[: i + 1] for k in sd for i, ch in enumerate(k) if ch == "."}
    for prefix in sorted(prefixes, key=len):
        stripped = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if want <= set(stripped):
            return {k: stripped[k] for k in want}
    missing = sorted(want - set(sd))
    raise ConfigError(
        f"{where}: the state dict does not fit the module model.build makes: missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
        f"file has {sorted(sd)[:4]}{' ...' if len(sd) > 4 else ''}"
    )


def load_user_module(config: StudyConfig):
    """The user's trained module, in eval mode.

    Raises:
        ConfigError: one line naming the config key and what went wrong (import, call, file, keys).
    """
    m, where = config.model, _where(config)
    if m.from_:
        module = _call(_import_function(m.from_, "from", where), m.from_, "from", where)
    else:
        module = _call(_import_function(m.build, "build", where), m.build, "build", where)
        path = Path(m.checkpoint)
        if not path.is_file():
            raise ConfigError(f"{where}: no such file (relative paths are taken from the current directory, {os.getcwd()})")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"{where}: cannot load it with torch.load(weights_only=True): {' '.join(str(err).split())[:300]}") from err
        try:
            module.load_state_dict(_state_dict_for(module, payload, where))
        except RuntimeError as err:  # shapes that do not fit
            reason = " ".join(str(err).split("\n\t", 1)[-1].split())[:300]
            raise ConfigError(f"{where}: the state dict does not fit the module model.build makes: {reason}") from None
    return module.eval()


def max_logit_diff(user: Any, converted: Any, x: Any, lengths: Any, batch_size: int = 256) -> float:
    """Largest absolute difference between the user's logits and the converted model's (eval mode), on the scored outputs.

    A forward that takes ``lengths`` runs on padded batches, as the task serves them (it is told where each
    sequence ends); one that takes ``x`` alone runs on batches of sequences of one length (no padding: what it
    computes for each sequence alone). A float64 model is given float64 inputs.
    """
    two = takes_lengths(user)
    double = any(p.dtype == torch.float64 for p in user.parameters())
    worst = 0.0
    with torch.no_grad():
        for idx in _batches(lengths, batch_size, by_length=not two):
            xb, lb = x[idx], lengths[idx]
            xb = xb[:, : int(lb.max())]
            got = call_user(user, xb.double() if double and xb.is_floating_point() else xb, lb)
            want = converted(xb, lb)
            if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ConfigError(f"your model returned {shape} for a batch of {len(lb)}; expected logits of shape {tuple(want.shape)}")
            worst = max(worst, float((flat_outputs(got.float(), lb) - flat_outputs(want, lb)).abs().max()))
    return worst


def _batches(lengths: Any, size: int, by_length: bool) -> List[Any]:
    """Index batches of a split: in order, or grouped by length (each batch one length)."""
    n = len(lengths)
    if not by_length:
        return [torch.arange(i, min(i + size, n)) for i in range(0, n, size)]
    out = []
    for length in torch.unique(lengths):
        idx = torch.nonzero(lengths == length).flatten()
        out += list(idx.split(size))
    return out


def equal_length_sample(x: Any, lengths: Any, size: int = 16) -> tuple:
    """A batch of up to ``size`` sequences of the most common length (at least 2 steps when there is one): what the conversion traces."""
    values, counts = torch.unique(lengths, return_counts=True)
    longer = values >= 2
    if longer.any():
        values, counts = values[longer], counts[longer]
    length = values[int(torch.argmax(counts))]
    idx = torch.nonzero(lengths == length).flatten()[:size]
    return x[idx][:, : int(length)], lengths[idx]


def _digest(path: Optional[str]) -> Optional[str]:
    return file_digest(path) if path and os.path.isfile(path) else None


def _named_parts(m: Any) -> dict:
    """The parts a study names (front, rnn, head, a pooling written out): only when given, so earlier keys stay."""
    out = {key: list(getattr(m, key)) for key in ("front", "rnn", "head") if getattr(m, key) is not None}
    if "pooling" in m.model_fields_set:
        out["pooling"] = m.pooling
    return out


def user_cache_key(config: StudyConfig) -> str:
    """Content hash of everything the converted dense reference depends on."""
    m = config.model
    content = {
        "kind": "user_model",
        "model": {"from": m.from_, "checkpoint": m.checkpoint, "build": m.build, **_named_parts(m)},
        "files": [_digest(m.checkpoint), _digest(module_file((m.from_ or m.build).partition(":")[0]))],
        "task": config.task.model_dump(),
        "seed": config.seed,
        "versions": versions(),
        "source": source_fingerprint(config.task.name),
    }
    return stable_hash(content, 16)


def ensure_user_dense(config: StudyConfig, runs_dir: str | os.PathLike = "runs", force: bool = False, dm: Any = None):
    """Convert and check the user's trained model; cache it as the study's dense checkpoint.

    Returns:
        A :class:`~autoprune.reference.cache.DenseResult` (``cached`` when an earlier run converted it).

    Raises:
        ConfigError: unsupported module, channels/classes/inputs that do not match the data, or logits
            that differ from the user's by more than :data:`MAX_LOGIT_DIFF` on the test set.
    """
    key = user_cache_key(config)
    out_dir = study_paths(runs_dir, config.study).dense / key
    cached = None if force else load_cached(out_dir, key)
    if cached is not None:
        return cached

    where = _where(config)
    user = load_user_module(config)
    dm = dm if dm is not None else build_datamodule(config)
    x, lengths, y = dm.tensors("test")
    m = config.model
    names = Names(
        front=tuple(m.front) if m.front is not None else None, rnn=tuple(m.rnn) if m.rnn is not None else None,
        head=tuple(m.head) if m.head is not None else None, pooling=m.pooling if "pooling" in m.model_fields_set else None,
    )
    model, mapping = convert_with_mapping(user, where, equal_length_sample(x, lengths), names, dm.n_channels, f"task {config.task.name}")
    spec = model.spec
    _check_fits(spec, dm, config, where)
    try:
        diff = max_logit_diff(user, model, x, lengths)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not diff <= MAX_LOGIT_DIFF:  # also refuses NaN
        raise ConfigError(
            f"{where}: the converted model's logits differ from {type(user).__name__}'s by up to {diff:.3g} on the test set "
            f"(allowed {MAX_LOGIT_DIFF:g}); its forward must take batch-first x [B, T, C] (and lengths: then padding must not change "
            f"a sequence's outputs) and pool over each sequence's true length; autoprune read it as: {mapping}"
        )
    metrics = reference_metrics(
        model, dm, test=(x, lengths, y), best_epoch=None, epochs=0, train_time_s=0.0, source="user_model", conversion_max_logit_diff=diff,
        conversion=mapping,
    )
    log.info(
        "dense reference: your %s %s (converted; logits within %.1e of yours on the test set): val accuracy %.4f, test accuracy %.4f; no dense training",
        spec.cell.upper(), spec.hidden_sizes, diff, metrics["val_accuracy"], metrics["test_accuracy"],
    )
    ckpt = write_reference(out_dir, spec, model, metrics, [], config)
    return DenseResult(ckpt, spec, metrics, False, key, [])


def _check_fits(spec: Any, dm: Any, config: StudyConfig, where: str) -> None:
    """The converted model takes the task's data: its channels (or vocabulary), classes, inputs and outputs.

    Raises:
        ConfigError: one line saying what does not match.
    """
    task = config.task.name
    problem = task_mismatch(spec, task, bool(getattr(dm, "tokens", False)), bool(getattr(dm, "per_frame", False)))
    if problem:
        raise ConfigError(f"{where}: {problem}")
    if spec.tokens and spec.input_size < dm.n_channels:
        raise ConfigError(f"{where}: the model's embedding holds {spec.input_size} tokens but task {task} uses ids up to {dm.n_channels - 1}")
    if not spec.tokens and spec.input_size != dm.n_channels:
        raise ConfigError(f"{where}: the model takes {spec.input_size} input channels but task {task} has {dm.n_channels}")
    if spec.n_classes != dm.n_classes:
        raise ConfigError(f"{where}: the model's head has {spec.n_classes} outputs but task {task} has {dm.n_classes} classes")

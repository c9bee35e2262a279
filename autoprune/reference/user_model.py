"""A user's own trained model as a study's dense reference: load, convert, check, cache.

A study may start from a model trained outside autoprune instead of training one::

    model: {from: my_pkg.models:load_trained}                         # returns a trained nn.Module
    model: {checkpoint: runs/my_lstm.pt, build: my_pkg.models:build}  # state dict or Lightning checkpoint
    model: {from: models/my_lstm.py:load_trained}                     # either function named by its file

Supported modules: one ``nn.LSTM`` or ``nn.GRU`` (any number of layers, uni- or
bidirectional, ``batch_first`` either way) followed by last-step pooling and an
``nn.Linear`` head, or by attention pooling (a projection ``nn.Linear``, a score
``nn.Linear`` with one output, softmax over valid steps) and the head; or an
autoprune :class:`~autoprune.models.rnn.RNNClassifier`. Dropout layers may sit anywhere.

The module's ``forward`` is called as ``forward(x, lengths)`` when it takes two inputs,
else ``forward(x)``, with ``x`` batch-first ``[B, T, C]`` exactly as the task's data
function gives it (no normalisation is added: the model was trained without it). The
converted :class:`RNNClassifier` must reproduce its logits on the test set within
:data:`MAX_LOGIT_DIFF`; its validation and test accuracy become the dense reference,
and no dense training runs. The result is cached under ``runs/<study>/dense/<key>/``
like a trained dense model; the key covers the model section, the task, and the
contents of the checkpoint file and of the module files named by ``from``/``build``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from autoprune.config import StudyConfig
from autoprune.errors import ConfigError
from autoprune.layout import study_paths
from autoprune.models.rnn import RNNClassifier
from autoprune.reference.cache import DenseResult, file_digest, load_cached, reference_metrics, source_fingerprint, versions, write_reference
from autoprune.tasks import build_datamodule
from autoprune.tasks.custom import FunctionImportError, import_function, module_file
from autoprune.yamlio import stable_hash

__all__ = ["MAX_LOGIT_DIFF", "SUPPORTED", "load_user_module", "convert_user_module", "max_logit_diff", "ensure_user_dense"]

log = logging.getLogger(__name__)

#: largest allowed difference between the user's logits and the converted model's on the test set
MAX_LOGIT_DIFF = 1e-5

SUPPORTED = (
    "supported: one nn.LSTM or nn.GRU (any layers, bidirectional, batch_first either way) followed by last-step "
    "or attention pooling and one nn.Linear head (Dropout allowed), or an autoprune RNNClassifier"
)


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


def convert_user_module(module: Any, where: str = "model"):
    """Convert a supported module into an :class:`RNNClassifier` (see the module docstring).

    Raises:
        ConfigError: an unsupported module (named, with its type), or layers that do not fit together.
    """
    if isinstance(module, RNNClassifier):
        return copy.deepcopy(module).eval()
    rnns, linears = [], []
    for name, sub in module.named_modules():
        if not any(True for _ in sub.parameters(recurse=False)) and not any(True for _ in sub.buffers(recurse=False)):
            continue
        if isinstance(sub, (nn.LSTM, nn.GRU)):
            rnns.append((name, sub))
        elif isinstance(sub, nn.Linear):
            linears.append((name, sub))
        else:
            label = f"'{name}' ({type(sub).__name__})" if name else f"parameters of {type(sub).__name__} itself"
            raise ConfigError(f"{where}: unsupported module {label} in {type(module).__name__}; {SUPPORTED}")
    if len(rnns) != 1:
        found = ", ".join(f"'{n}' ({type(r).__name__})" for n, r in rnns) or "none"
        raise ConfigError(f"{where}: {type(module).__name__} needs exactly one nn.LSTM or nn.GRU, found {found}; {SUPPORTED}")
    rnn = rnns[0][1]
    out = rnn.hidden_size * (2 if rnn.bidirectional else 1)
    if len(linears) == 1 and linears[0][1].in_features == out:
        head, pooling, attention = linears[0][1], "last", None
    elif len(linears) == 3:
        scores = [lin for _, lin in linears if lin.out_features == 1]
        proj = next((p for _, p in linears for s in scores if p.in_features == out and p.out_features == s.in_features and p is not s), None)
        score = next((s for s in scores if proj is not None and s.in_features == proj.out_features and s is not proj), None)
        rest = [lin for _, lin in linears if lin is not proj and lin is not score]
        if proj is None or score is None or len(rest) != 1 or rest[0].in_features != out:
            raise ConfigError(f"{where}: the three nn.Linear layers {[n for n, _ in linears]} are not attention projection, score (1 output) and head; {SUPPORTED}")
        head, pooling = rest[0], "attention"
        attention = (proj, _score_without_bias(score))
    else:
        shapes = ", ".join(f"'{n}' ({lin.in_features}->{lin.out_features})" for n, lin in linears) or "none"
        raise ConfigError(
            f"{where}: expected one nn.Linear head taking the RNN's {out} features (or attention projection, score and head), found {shapes}; {SUPPORTED}"
        )
    try:
        return RNNClassifier.from_torch(rnn, head, pooling=pooling, attention=attention).eval()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}; {SUPPORTED}") from None


def _score_without_bias(score: Any):
    """A score layer's bias adds the same to every step: softmax ignores it, and RNNClassifier has none."""
    plain = nn.Linear(score.in_features, 1, bias=False)
    plain.weight.data.copy_(score.weight.data)
    return plain


def _takes_lengths(module: Any) -> bool:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def max_logit_diff(user: Any, converted: Any, x: Any, lengths: Any, batch_size: int = 256) -> float:
    """Largest absolute difference between the user's logits and the converted model's (eval mode, batches)."""
    two = _takes_lengths(user)
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(lengths), batch_size):
            xb, lb = x[i : i + batch_size], lengths[i : i + batch_size]
            xb = xb[:, : int(lb.max())]
            got = user(xb, lb) if two else user(xb)
            if isinstance(got, (tuple, list)):
                got = got[0]
            want = converted(xb, lb)
            if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                raise ConfigError(f"your model returned {shape} for a batch of {len(lb)}; expected logits of shape {tuple(want.shape)}")
            worst = max(worst, float((got.float() - want).abs().max()))
    return worst


def _digest(path: Optional[str]) -> Optional[str]:
    return file_digest(path) if path and os.path.isfile(path) else None


def user_cache_key(config: StudyConfig) -> str:
    """Content hash of everything the converted dense reference depends on."""
    m = config.model
    content = {
        "kind": "user_model",
        "model": {"from": m.from_, "checkpoint": m.checkpoint, "build": m.build},
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
        ConfigError: unsupported module, channels/classes that do not match the data, or logits
            that differ from the user's by more than :data:`MAX_LOGIT_DIFF` on the test set.
    """
    key = user_cache_key(config)
    out_dir = study_paths(runs_dir, config.study).dense / key
    cached = None if force else load_cached(out_dir, key)
    if cached is not None:
        return cached

    where = _where(config)
    user = load_user_module(config)
    model = convert_user_module(user, where)
    dm = dm if dm is not None else build_datamodule(config)
    spec = model.spec
    if spec.input_size != dm.n_channels:
        raise ConfigError(f"{where}: the model takes {spec.input_size} input channels but task {config.task.name} has {dm.n_channels}")
    if spec.n_classes != dm.n_classes:
        raise ConfigError(f"{where}: the model's head has {spec.n_classes} outputs but task {config.task.name} has {dm.n_classes} classes")
    x, lengths, y = dm.tensors("test")
    try:
        diff = max_logit_diff(user, model, x, lengths)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not diff <= MAX_LOGIT_DIFF:  # also refuses NaN
        raise ConfigError(
            f"{where}: the converted model's logits differ from {type(user).__name__}'s by up to {diff:.3g} on the test set "
            f"(allowed {MAX_LOGIT_DIFF:g}); its forward must take batch-first x [B, T, C] (and lengths) and pool the last valid "
            f"step or by attention before the head; {SUPPORTED}"
        )
    metrics = reference_metrics(
        model, dm, test=(x, lengths, y), best_epoch=None, epochs=0, train_time_s=0.0, source="user_model", conversion_max_logit_diff=diff
    )
    log.info(
        "dense reference: your %s %s (converted; logits within %.1e of yours on the test set): val accuracy %.4f, test accuracy %.4f; no dense training",
        spec.cell.upper(), spec.hidden_sizes, diff, metrics["val_accuracy"], metrics["test_accuracy"],
    )
    ckpt = write_reference(out_dir, spec, model, metrics, [], config)
    return DenseResult(ckpt, spec, metrics, False, key, [])

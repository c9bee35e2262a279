"""User data sources: ``module.path:function`` (or ``path/to/file.py:function``).

The function is called once, when the task is built, with ``seed=`` (if it takes it) and
the task options as keyword arguments. It returns either

* arrays: a tuple ``(x_train, y_train, x_test, y_test)`` or a dict with those keys, where
  ``x`` is a numpy array ``[N, T, C]`` (or ``[N, T]`` for one channel) or a list of
  ``[T_i, C]`` arrays of unequal lengths, and ``y`` holds integer or string labels: one per
  sequence, or one per frame (a list of ``[T_i]`` label arrays, or ``[N, T]`` with ``x [N, T, C]``).
  A dict with ``padding_id`` gives token ids instead: ``x`` a list of ``[T_i]`` integer arrays
  (or ``[N, T]`` padded with ``padding_id``), read by a model whose front starts with an embedding; or
* a ready :class:`~autoprune.tasks.SequenceDataModule`, or any LightningDataModule, used
  as-is. A generic LightningDataModule must keep the data contract itself: its loaders
  yield ``(x float32 [B, T, C], lengths int64 [B], y int64 [B])`` and, after ``setup()``,
  it exposes ``n_channels`` and ``n_classes`` for the model.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks.sequences import RawSplits, to_sequences, to_tokens

__all__ = ["FunctionImportError", "import_function", "module_file", "call_source"]

logger = logging.getLogger(__name__)

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: optional keys of a returned dict: the padding id of token ids
OPTIONAL_KEYS = ("padding_id",)


class FunctionImportError(TaskError):
    """A user's ``module:function`` gives no function (the message words it as model.from / model.build do).

    Attributes:
        reason: ``import`` (the module fails to import; its error is the ``__cause__``),
            ``missing`` (no such attribute) or ``not_callable``.
        detail: the import error in one line, or the type name of what is not callable.
    """

    def __init__(self, message: str, reason: str, detail: str = "") -> None:
        super().__init__(message)
        self.reason, self.detail = reason, detail


def _look_in_cwd(module: str) -> None:
    """Put the current directory on sys.path when the top-level package of ``module`` is found nowhere else.

    ``autoprune`` run as a console script has no current directory on sys.path, where
    ``python -m`` has it: a user's ``my_pkg.data:load`` beside the study is found either way.
    """
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return
    try:
        found = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return
    if found is None:
        sys.path.insert(0, cwd)
        logger.debug("added %s to sys.path to import %r", cwd, module)


def _import_module(module: str):
    if not module.endswith(".py"):
        _look_in_cwd(module)
        return importlib.import_module(module)
    path = Path(module).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {str(path)!r}")
    mod_spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def import_function(module: str, function: str) -> Callable:
    """Import a user's ``module`` and return its callable ``function``: task data sources and model.from / model.build.

    Args:
        module: a dotted module path (also looked up from the current directory) or a
            path to a ``.py`` file.
        function: an attribute of the module (dots allowed: ``Class.method``).

    Returns:
        The callable.

    Raises:
        FunctionImportError: the module cannot be imported, or has no such callable (``reason`` says
            which, so that each caller words it for its key).
    """
    try:
        obj = _import_module(module)
    except Exception as e:  # any failure while importing user code
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        raise FunctionImportError(f"cannot import {module!r} ({detail})", "import", detail) from e
    for part in function.split("."):
        if not hasattr(obj, part):
            raise FunctionImportError(f"module {module!r} has no {function!r}", "missing")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FunctionImportError(f"{module}:{function} is a {type(obj).__name__}, not a function", "not_callable", type(obj).__name__)
    return obj


def module_file(module: str) -> Optional[str]:
    """The file :func:`import_function` imports ``module`` from (a ``.py`` path or a dotted module), or None."""
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        return str(path) if path.is_file() else None
    _look_in_cwd(module)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return found.origin if found is not None else None


def _task_function(module: str, function: str, spec: str, hint: str) -> Callable:
    if not module or not function:
        raise TaskError(f"task spec {spec!r} must look like module.path:function")
    try:
        return import_function(module, function)
    except FunctionImportError as err:
        if err.reason == "import":
            raise TaskError(f"cannot import module {module!r} for task {spec!r}: {err.detail}{hint}") from err.__cause__
        if err.reason == "missing":
            raise TaskError(f"module {module!r} has no function {function!r} (task {spec!r})") from None
        raise


def _kwargs(fn, seed: int, options: Mapping, spec: str) -> dict:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return dict(options)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [
        n for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "seed"
    ]
    for key in options:
        if key not in named and not var_kw:
            raise ConfigError(
                f"unknown option {key!r} for task {spec!r}; allowed options (the "
                f"function's keyword arguments): {', '.join(named) or 'none'}"
            )
    kwargs = dict(options)
    if "seed" in params or var_kw:
        kwargs["seed"] = seed
    return kwargs


def _as_arrays(result, fn_name: str):
    if isinstance(result, Mapping):
        missing = [k for k in ARRAY_KEYS if k not in result]
        if missing:
            raise TaskError(
                f"{fn_name} returned a dict without keys {missing}; it needs "
                f"{', '.join(ARRAY_KEYS)}"
            )
        extra = sorted(set(result) - set(ARRAY_KEYS) - set(OPTIONAL_KEYS), key=str)
        if extra:
            logger.warning("%s: ignoring extra keys %s", fn_name, extra)
        return tuple(result[k] for k in ARRAY_KEYS)
    if isinstance(result, tuple | list) and len(result) == 4:
        return tuple(result)
    return None


def call_source(module: str, function: str, *, spec: str, seed: int, options: Mapping,
                hint: str = ""):
    """Import and call a user data source once.

    Args:
        module: module path or ``.py`` file.
        function: function name in the module.
        spec: the task spec (messages).
        seed: passed as ``seed=`` when the function accepts it.
        options: passed as keyword arguments; each must be a parameter of the function.
        hint: appended to an import error.

    Returns:
        Either a LightningDataModule (to use as-is) or :class:`RawSplits`.

    Raises:
        TaskError: import failure, missing function, a wrong return type, malformed arrays.
        ConfigError: an option the function does not accept.
    """
    fn = _task_function(module, function, spec, hint)
    fn_name = f"{module}:{function}"
    kwargs = _kwargs(fn, seed, options, spec)
    try:
        result = fn(**kwargs)
    except (TaskError, ConfigError):
        raise
    except Exception as e:  # user code failed: one line here, the traceback is chained
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise TaskError(f"{fn_name} (task {spec!r}) raised {msg}") from e
    from lightning.pytorch import LightningDataModule  # seconds to import: tasks/ loads it only when used

    if isinstance(result, LightningDataModule):
        # training, pruning (taylor/confidence/dynamic), evaluation and export read these
        needed = ("n_channels", "n_classes", "max_length", "tensors")
        missing = [name for name in needed if not hasattr(result, name)]
        if missing:
            raise TaskError(
                f"{fn_name} returned a {type(result).__name__} without {', '.join(missing)}; "
                f"return a SequenceDataModule (autoprune.tasks.SequenceDataModule.from_arrays(...)) or the arrays "
                f"(x_train, y_train, x_test, y_test) instead"
            )
        return result
    arrays = _as_arrays(result, fn_name)
    if arrays is None:
        what = f"a {type(result).__name__}"
        if isinstance(result, tuple | list):
            what += f" of {len(result)} items"
        raise TaskError(
            f"{fn_name} returned {what}; allowed: a LightningDataModule, a tuple "
            f"(x_train, y_train, x_test, y_test) or a dict with those keys"
        )
    x_train, y_train, x_test, y_test = arrays
    padding_id = result.get("padding_id") if isinstance(result, Mapping) else None
    if padding_id is None:
        convert = functools.partial(to_sequences, layout="NTC")
    elif isinstance(padding_id, bool) or not isinstance(padding_id, int) or padding_id < 0:
        raise TaskError(f"{fn_name} returned padding_id {padding_id!r}; it must be an integer >= 0 (the token id that pads sequences)")
    else:
        convert = functools.partial(to_tokens, padding_id=padding_id)
    return RawSplits(
        x_train=convert(x_train, what=f"{fn_name} x_train"),
        y_train=y_train,
        x_test=convert(x_test, what=f"{fn_name} x_test"),
        y_test=y_test,
        padding_id=padding_id,
    )


"""User data sources: ``module.path:function`` (or ``path/to/file.py:function``).

The function is called once, when the task is built, with ``seed=`` (if it takes it) and
the task options as keyword arguments. It returns either

* arrays: a tuple ``(x_train, y_train, x_test, y_test)`` or a dict with those keys, where
  ``x`` is a numpy array ``[N, T, C]`` (or ``[N, T]`` for one channel) or a list of
  ``[T_i, C]`` arrays of unequal lengths, and ``y`` holds integer or string labels; or
* a ready :class:`~autoprune.tasks.SequenceDataModule`, or any LightningDataModule, used
  as-is. A generic LightningDataModule must keep the data contract itself: its loaders
  yield ``(x float32 [B, T, C], lengths int64 [B], y int64 [B])`` and, after ``setup()``,
  it exposes ``n_channels`` and ``n_classes`` for the model.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks.sequences import RawSplits, to_sequences

__all__ = ["import_function", "call_source"]

logger = logging.getLogger(__name__)

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _import_module(module: str, spec: str, hint: str):
    try:
        if module.endswith(".py"):
            path = Path(module).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no file {str(path)!r}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            mod = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(mod)
            return mod
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            cwd = os.getcwd()
            top = module.split(".")[0]
            if e.name != top or cwd in sys.path or "" in sys.path:
                raise
            # `autoprune` run as a console script has no cwd on sys.path: add it
            sys.path.insert(0, cwd)
            logger.debug("added %s to sys.path to import %r", cwd, module)
            return importlib.import_module(module)
    except Exception as e:  # any failure while importing user code
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise TaskError(f"cannot import module {module!r} for task {spec!r}: {msg}{hint}") from e


def import_function(module: str, function: str, *, spec: str, hint: str = ""):
    """Import ``module`` and return its callable ``function``.

    Args:
        module: a dotted module path (also looked up from the current directory) or a
            path to a ``.py`` file.
        function: an attribute of the module (dots allowed: ``Class.method``).
        spec: the task spec, for messages.
        hint: appended to the import error (e.g. the registered task kinds).

    Returns:
        The callable.

    Raises:
        TaskError: the module cannot be imported, or has no such callable.
    """
    if not module or not function:
        raise TaskError(f"task spec {spec!r} must look like module.path:function")
    obj = _import_module(module, spec, hint)
    for part in function.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"module {module!r} has no function {function!r} (task {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TaskError(f"{module}:{function} is a {type(obj).__name__}, not a function")
    return obj


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
        extra = sorted(set(result) - set(ARRAY_KEYS), key=str)
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
    fn = import_function(module, function, spec=spec, hint=hint)
    fn_name = f"{module}:{function}"
    kwargs = _kwargs(fn, seed, options, spec)
    try:
        result = fn(**kwargs)
    except (TaskError, ConfigError):
        raise
    except Exception as e:  # user code failed: one line here, the traceback is chained
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise TaskError(f"{fn_name} (task {spec!r}) raised {msg}") from e
    from lightning.pytorch import LightningDataModule

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
    return RawSplits(
        x_train=to_sequences(x_train, layout="NTC", what=f"{fn_name} x_train"),
        y_train=y_train,
        x_test=to_sequences(x_test, layout="NTC", what=f"{fn_name} x_test"),
        y_test=y_test,
    )


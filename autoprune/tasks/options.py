"""Task-specific options: a tiny typed schema per task kind, and the raw-data cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoprune.errors import ConfigError

__all__ = ["Option", "validate_options", "cached_load", "clear_cache"]

_CACHE_SIZE = 8
_RAW_CACHE: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class Option:
    """One option a task kind accepts: its type, default and a one-line help."""

    type: type | tuple[type, ...]
    default: Any
    help: str
    min: float | None = None


def _type_name(t) -> str:
    names = [x.__name__ for x in (t if isinstance(t, tuple) else (t,))]
    return " or ".join(names)


def validate_options(
    kind: str, schema: Mapping[str, Option], options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check options against a kind's schema and fill in the defaults.

    Args:
        kind: the task kind, for messages.
        schema: allowed option names and their types.
        options: what the user passed (``None`` means none).

    Returns:
        A new dict with every option of the schema.

    Raises:
        ConfigError: for an unknown key (naming the allowed keys), a value of the wrong
            type or below its minimum.
    """
    options = dict(options or {})
    allowed = ", ".join(sorted(schema)) or "none"
    out = {k: o.default for k, o in schema.items()}
    for key, value in options.items():
        if key not in schema:
            raise ConfigError(
                f"unknown option {key!r} for task kind {kind!r}; allowed options: {allowed}"
            )
        opt = schema[key]
        types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
        # bool is an int subclass: reject True where a count is expected
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if value is None and opt.default is None:
            ok = True
        if not ok:
            raise ConfigError(
                f"option {key!r} of task kind {kind!r} must be {_type_name(opt.type)}, "
                f"got {value!r}"
            )
        if opt.min is not None and value is not None and value < opt.min:
            raise ConfigError(
                f"option {key!r} of task kind {kind!r} must be >= {opt.min}, got {value!r}"
            )
        out[key] = value
    return out


def cached_load(
    key: tuple, load: Callable[[], Any], keep: Callable[[Any], bool] | None = None
) -> Any:
    """Return ``load()``, cached in-process under ``key`` (a few most recent entries).

    The cache is meant for raw data only (read-only arrays), so sharing it between data
    modules built from the same spec and seed is safe; ``keep(value)`` false leaves a
    value (say, a stateful data module) out of the cache.
    """
    if key in _RAW_CACHE:
        _RAW_CACHE.move_to_end(key)
        return _RAW_CACHE[key]
    value = load()
    if keep is not None and not keep(value):
        return value
    _RAW_CACHE[key] = value
    while len(_RAW_CACHE) > _CACHE_SIZE:
        _RAW_CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every cached data source (tests, or to free memory)."""
    _RAW_CACHE.clear()

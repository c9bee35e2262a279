"""UEA/UCR classification data through aeon: ``uea:<Name>`` or ``uea:<path to .ts>``.

aeon is imported only when data is actually read (it takes about a second). Whether a
name is bundled with the aeon wheel is decided from aeon's package data directory
without importing aeon, so a wrong or non-bundled name fails fast and deterministically.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import logging
import os
from pathlib import Path

from autoprune.errors import TaskError
from autoprune.tasks import frames
from autoprune.tasks.options import Option
from autoprune.tasks.sequences import RawSplits, to_sequences

__all__ = ["OPTIONS", "bundled_uea_datasets", "resolve"]

logger = logging.getLogger(__name__)

OPTIONS = {
    "allow_download": Option(bool, True, "let aeon download a dataset that is not bundled"),
    "equal_length": Option(bool, False, "load aeon's truncated equal-length version if any"),
    "no_missing": Option(bool, False, "load aeon's imputed no-missing-values version if any"),
    **frames.OPTIONS,  # a per-frame task built from the set (uea:JapaneseVowels with frames: who is speaking)
}


def _aeon_data_dir() -> Path | None:
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _is_classification(ts_file: Path) -> bool:
    with open(ts_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.strip().lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@classlabel", "true"]:
                return True
    return False


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[str, ...]:
    root = _aeon_data_dir()
    if root is None or not root.is_dir():
        return ()
    names = []
    for d in root.iterdir():
        train, test = d / f"{d.name}_TRAIN.ts", d / f"{d.name}_TEST.ts"
        if train.is_file() and test.is_file() and _is_classification(train):
            names.append(d.name)
    return tuple(sorted(names))


def bundled_uea_datasets() -> list[str]:
    """Names of the UEA/UCR classification datasets shipped inside the aeon wheel.

    Found by scanning aeon's package data directory (no network, aeon not imported).

    Returns:
        Sorted dataset names usable offline as ``uea:<Name>``.
    """
    return list(_bundled())


def _local_usage(name: str) -> str:
    return (
        f"to use a local copy pass 'uea:/path/to/{name}_TRAIN.ts' (with {name}_TEST.ts "
        f"next to it) or 'uea:/path/to/dir' holding both files"
    )


def _looks_like_path(arg: str) -> bool:
    return (
        os.sep in arg
        or "/" in arg
        or arg.startswith(("~", "."))
        or arg.lower().endswith(".ts")
    )


def _pair_from_path(arg: str) -> tuple[Path, Path]:
    path = Path(arg).expanduser()
    if path.is_dir():
        preferred = path / f"{path.name}_TRAIN.ts"
        trains = [preferred] if preferred.is_file() else sorted(path.glob("*_TRAIN.ts"))
        if len(trains) != 1:
            found = ", ".join(p.name for p in trains) or "none"
            raise TaskError(
                f"directory {str(path)!r} must hold exactly one <Name>_TRAIN.ts file "
                f"(found: {found}); pass the file itself as uea:<path>"
            )
        path = trains[0]
    if not path.is_file():
        raise TaskError(f"UEA .ts file {str(path)!r} does not exist")
    stem = path.name
    for suffix, other in (("_TRAIN.ts", "_TEST.ts"), ("_TEST.ts", "_TRAIN.ts")):
        if stem.endswith(suffix):
            sibling = path.with_name(stem[: -len(suffix)] + other)
            if not sibling.is_file():
                raise TaskError(
                    f"{str(path)!r} has no matching {sibling.name} next to it "
                    f"(expected {str(sibling)!r})"
                )
            return (path, sibling) if suffix == "_TRAIN.ts" else (sibling, path)
    raise TaskError(f"UEA file {str(path)!r} must be named <Name>_TRAIN.ts or <Name>_TEST.ts")


def _to_raw(x_train, y_train, x_test, y_test, spec: str) -> RawSplits:
    return RawSplits(
        x_train=to_sequences(x_train, layout="NCT", what=f"task {spec!r} train"),
        y_train=y_train,
        x_test=to_sequences(x_test, layout="NCT", what=f"task {spec!r} test"),
        y_test=y_test,
    )


def _load_files(train: Path, test: Path, spec: str) -> RawSplits:
    from aeon.datasets import load_from_ts_file

    arrays = []
    for path in (train, test):
        try:
            arrays.extend(load_from_ts_file(str(path)))
        except Exception as e:  # aeon raises IOError/ValueError/IndexError on bad files
            raise TaskError(f"cannot read {str(path)!r}: {type(e).__name__}: {e}") from e
    return _to_raw(*arrays, spec)


def _load_name(name: str, equal_length: bool, no_missing: bool, spec: str) -> RawSplits:
    from aeon.datasets import load_classification

    kw = {"load_equal_length": equal_length, "load_no_missing": no_missing}
    x_train, y_train = load_classification(name, split="train", **kw)
    x_test, y_test = load_classification(name, split="test", **kw)
    return _to_raw(x_train, y_train, x_test, y_test, spec)


def _not_bundled(name: str, reason: str) -> TaskError:
    close = difflib.get_close_matches(name, _bundled(), n=3, cutoff=0.6)
    close += [b for b in _bundled() if b.lower() == name.lower() and b not in close]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return TaskError(
        f"UEA dataset {name!r} is not bundled with aeon and {reason}; "
        f"{_local_usage(name)}. Bundled: {', '.join(_bundled())}.{hint}"
    )


def _in_download_cache(name: str) -> bool:
    from aeon.datasets.dataset_collections import get_downloaded_tsc_tsr_datasets

    return name in get_downloaded_tsc_tsr_datasets()


def resolve(arg: str, *, spec: str, seed: int, options: dict):
    """Validate ``uea:<arg>`` now and return a loader of its raw data; with option ``frames``, of the
    per-frame task built from it (:mod:`autoprune.tasks.frames`).

    Raises:
        TaskError: missing file, regression dataset, or a dataset that is neither
            bundled, downloaded before, nor downloadable now.
        ConfigError: ``min_parts > max_parts``.
    """
    return frames.per_frame(_resolve(arg, spec=spec, seed=seed, options=options), spec=spec, seed=seed, options=options)


def _resolve(arg: str, *, spec: str, seed: int, options: dict):
    """Validate ``uea:<arg>`` now and return a loader of its raw data (see :func:`resolve`).

    Args:
        arg: a dataset name or a path to a ``.ts`` file / directory.
        spec: the whole task spec (messages, cache key).
        seed: unused (the data of a UEA set does not depend on it).
        options: validated :data:`OPTIONS`.

    Returns:
        A zero-argument callable returning :class:`RawSplits`.

    Raises:
        TaskError: missing file, regression dataset, or a dataset that is neither
            bundled, downloaded before, nor downloadable now.
    """
    if _looks_like_path(arg):
        if options["equal_length"] or options["no_missing"]:
            raise TaskError(
                f"options 'equal_length'/'no_missing' apply to dataset names, not to the "
                f"file {arg!r}"
            )
        train, test = _pair_from_path(arg)
        return functools.partial(_load_files, train, test, spec)
    base = arg.removesuffix("_nmv").removesuffix("_eq")
    load = functools.partial(
        _load_name, arg, options["equal_length"], options["no_missing"], spec
    )
    if base in _bundled():
        return load
    root = _aeon_data_dir()
    if root is not None and (root / base / f"{base}_TRAIN.ts").is_file():
        raise TaskError(f"UEA dataset {base!r} bundled with aeon is not a classification set")
    if root is None:
        raise TaskError(f"task {spec!r} needs aeon, which is not installed (pip install aeon)")
    if _in_download_cache(base):
        return load
    if not options["allow_download"]:
        raise _not_bundled(arg, "downloading is disabled (allow_download=False)")
    logger.info("UEA dataset %r is not bundled with aeon: downloading it", arg)
    try:
        # download now, so that a failure comes before any training
        raw = load()
    except TaskError:
        raise
    except Exception as e:  # network errors, or a name aeon does not know
        raise _not_bundled(arg, f"downloading failed ({type(e).__name__}: {e})") from e
    return functools.partial(_given, raw)


def _given(raw: RawSplits) -> RawSplits:
    return raw

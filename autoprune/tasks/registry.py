"""The registry of task kinds and ``build_task``: task spec string -> data module.

A spec is ``<kind>`` or ``<kind>:<argument>`` for a kind registered in
:data:`TASK_KINDS`; anything else with a colon is ``module.path:function``. This module
imports neither torch nor lightning, so parsing and listing stay fast; ``build_task``
imports the data module class when it builds one.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoprune.errors import ConfigError, TaskError
from autoprune.tasks import custom, mnist1d, synthetic, uea
from autoprune.tasks.options import Option, cached_load, validate_options
from autoprune.tasks.sequences import RawSplits

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule

    from autoprune.tasks.datamodule import SequenceDataModule

__all__ = ["TaskKind", "TASK_KINDS", "build_task", "build_datamodule", "list_task_kinds"]

CUSTOM_USAGE = (
    "<module>:<function>",
    "your own loader: a function returning (x_train, y_train, x_test, y_test) arrays "
    "or a LightningDataModule",
)


@dataclass(frozen=True)
class TaskKind:
    """A registered data source.

    Attributes:
        usage: ``(pattern, one-line description)`` pairs, as shown to users.
        options: the task-specific options it accepts.
        resolve: ``resolve(arg, *, spec, seed, options)`` validates the spec eagerly and
            returns a zero-argument loader of :class:`~autoprune.tasks.sequences.RawSplits`.
        takes_argument: whether the spec needs ``:<argument>``.
    """

    usage: tuple[tuple[str, str], ...]
    options: Mapping[str, Option]
    resolve: Callable[..., Callable[[], Any]]
    takes_argument: bool


TASK_KINDS: dict[str, TaskKind] = {
    "uea": TaskKind(
        usage=(
            ("uea:<Name>", "UEA/UCR classification set by name via aeon (bundled ones "
             "offline, e.g. JapaneseVowels; others downloaded); option frames: true joins series "
             "of different classes into a per-frame task"),
            ("uea:<path>", "local <Name>_TRAIN.ts (with <Name>_TEST.ts beside it) or a "
             "directory holding both"),
        ),
        options=uea.OPTIONS,
        resolve=uea.resolve,
        takes_argument=True,
    ),
    "mnist1d": TaskKind(
        usage=(("mnist1d", "MNIST-1D generated offline: 4000 train / 1000 test, length 40, "
                "1 channel, 10 classes"),),
        options=mnist1d.OPTIONS,
        resolve=mnist1d.resolve,
        takes_argument=False,
    ),
    "synthetic": TaskKind(
        usage=(("synthetic:<name>", "tiny generated tasks with unequal lengths: "
                + ", ".join(synthetic.SYNTHETIC_TASKS)),),
        options=synthetic.OPTIONS,
        resolve=synthetic.resolve,
        takes_argument=True,
    ),
}


def list_task_kinds() -> list[tuple[str, str]]:
    """List the task spec patterns users can type.

    Returns:
        ``(pattern, one-line description)`` pairs, e.g. ``("uea:<Name>", "...")``.
    """
    pairs = [u for kind in TASK_KINDS.values() for u in kind.usage]
    return [*pairs, CUSTOM_USAGE]


def _valid_kinds() -> str:
    return ", ".join(p for p, _ in list_task_kinds())


def _check_args(seed, batch_size, val_fraction, options) -> None:
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if (
        not isinstance(val_fraction, int | float)
        or isinstance(val_fraction, bool)
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"options must be a mapping, got {type(options).__name__}")


def _resolve(spec: str, seed: int, options: dict):
    """Return ``(kind name, loader or ready LightningDataModule)``."""
    kind_name, sep, arg = spec.partition(":")
    kind = TASK_KINDS.get(kind_name)
    if kind is None:
        close = difflib.get_close_matches(kind_name, TASK_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if not sep:
            raise TaskError(
                f"unknown task kind {spec!r}; valid kinds: {_valid_kinds()}{hint}"
            )
        # not a registered kind: a user data source module:function
        import_hint = (
            f" ({kind_name!r} is not a registered task kind either; valid kinds: "
            f"{_valid_kinds()}{hint})"
        )
        result = cached_load(
            (spec, seed, repr(sorted(options.items()))),
            functools.partial(
                custom.call_source, kind_name, arg, spec=spec, seed=seed,
                options=options, hint=import_hint,
            ),
            keep=lambda value: isinstance(value, RawSplits),
        )
        return "custom", result
    if kind.takes_argument and not arg:
        patterns = " or ".join(p for p, _ in kind.usage)
        raise TaskError(f"task spec {spec!r} needs an argument: {patterns}")
    if not kind.takes_argument and sep:
        raise TaskError(f"task kind {kind_name!r} takes no argument, got {spec!r}")
    opts = validate_options(kind_name, kind.options, options)
    load = kind.resolve(arg if sep else None, spec=spec, seed=seed, options=opts)
    key = (spec, seed, repr(sorted(opts.items())))
    return kind_name, functools.partial(cached_load, key, load)


def build_task(
    spec: str,
    *,
    seed: int = 0,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    options: Mapping[str, Any] | None = None,
) -> SequenceDataModule | LightningDataModule:
    """Build the data module of a task spec.

    The spec is checked now (unknown kind, unimportable module, missing file, dataset not
    available offline); the data itself is loaded by the module's ``setup()``, except for
    ``module:function`` sources, which are called here (their return type decides what
    is built) and for UEA sets that must be downloaded first.

    Args:
        spec: ``uea:<Name>``, ``uea:<path>``, ``mnist1d``, ``synthetic:<name>`` or
            ``module.path:function`` (see :func:`list_task_kinds`).
        seed: seeds the validation split, the training shuffle and generated data.
        batch_size: sequences per batch.
        val_fraction: share of the training sequences held out for validation.
        options: task-specific options (see each kind's ``OPTIONS``; for
            ``module:function``, keyword arguments of the function).

    Returns:
        A :class:`SequenceDataModule`, or the LightningDataModule a user function returned.

    Raises:
        TaskError: unknown kind, missing data, unusable user source.
        ConfigError: invalid ``seed``/``batch_size``/``val_fraction`` or an unknown or
            ill-typed option.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"task spec must be a non-empty string, got {spec!r}; "
                        f"valid kinds: {_valid_kinds()}")
    spec = spec.strip()
    _check_args(seed, batch_size, val_fraction, options)
    kind, result = _resolve(spec, seed, dict(options or {}))
    # lightning takes seconds to import: only when a data module is built (this module stays light)
    from lightning.pytorch import LightningDataModule

    from autoprune.tasks.datamodule import SequenceDataModule

    if isinstance(result, LightningDataModule):
        return result
    if kind == "custom":  # already loaded raw data
        return SequenceDataModule.from_raw(
            spec, result, seed=seed, batch_size=batch_size, val_fraction=val_fraction
        )
    return SequenceDataModule(
        spec, result, seed=seed, batch_size=batch_size, val_fraction=val_fraction
    )


def build_datamodule(config: Any) -> "LightningDataModule":
    """The data module of a study (a :class:`~autoprune.config.StudyConfig`), set up for fitting.

    A user's own trained model (``model.from`` / ``model.checkpoint``) was trained on the inputs
    exactly as their data gives them, so its study gets no per-channel normalisation.
    """
    dm = build_task(
        config.task.name,
        seed=config.seed,
        batch_size=config.task.batch_size,
        val_fraction=config.task.val_fraction,
        options=dict(config.task.options),
    )
    if config.model.user_model and hasattr(dm, "normalize"):
        dm.normalize = False
    dm.setup("fit")
    return dm

"""Data sources for sequence classification: task spec string -> LightningDataModule; budgets in steps.

``build_task("uea:JapaneseVowels")``, ``build_task("mnist1d")``,
``build_task("synthetic:sines")`` or ``build_task("mypkg.data:load")``; see
:func:`list_task_kinds`. Importing this package loads neither torch, lightning, aeon nor
mnist1d; :class:`SequenceDataModule` (which needs lightning) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoprune.tasks.registry import TASK_KINDS, build_datamodule, build_task, list_task_kinds
from autoprune.tasks.uea import bundled_uea_datasets

if TYPE_CHECKING:
    from autoprune.tasks.datamodule import SequenceDataModule

__all__ = [
    "TASK_KINDS",
    "SequenceDataModule",
    "build_datamodule",
    "build_task",
    "bundled_uea_datasets",
    "list_task_kinds",
]


def __getattr__(name: str) -> Any:
    # lightning takes seconds to import: load the data module class only when asked
    if name == "SequenceDataModule":
        from autoprune.tasks.datamodule import SequenceDataModule

        return SequenceDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

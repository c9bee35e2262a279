"""Export a searched trial: compacted, verified in every format, with a model card; the formats registry.

``from autoprune.export import export, load_state_dict_export`` works. The CLI reads the
format names at start (:mod:`autoprune.export.formats` imports no torch), so the exporter
(torch, MLflow) loads on first use of ``export``.
"""

from typing import Any

from autoprune.export.formats import load_state_dict_export

__all__ = ["export", "load_state_dict_export"]


def __getattr__(name: str) -> Any:
    if name == "export":
        from autoprune.export.exporter import export

        return export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

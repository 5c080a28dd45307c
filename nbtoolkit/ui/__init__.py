"""Notebook widgets: thin views over nbtoolkit's configs, jobs and results (the only package importing ipywidgets).

    from nbtoolkit.ui import ColumnMappingForm, HyperparameterForm, JobMonitor, ResultsView, SampleExplorer

Each form has `.widget` (its root box), `.value` (the config it edits) and named children (`form.save`,
`form.launch`, ...) so code and tests can drive it. ipywidgets is imported on first use, with an actionable error
when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "nbtoolkit.ui.mapping": ("ColumnMappingForm",),
    "nbtoolkit.ui.hyperparameters": ("HyperparameterForm",),
    "nbtoolkit.ui.monitor": ("JobMonitor",),
    "nbtoolkit.ui.results": ("ResultsView", "load_stage_results"),
    "nbtoolkit.ui.samples": ("SampleExplorer", "filter_predictions"),
    "nbtoolkit.ui.mix": ("MixForm",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'nbtoolkit.ui' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

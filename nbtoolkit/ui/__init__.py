"""Notebook widgets: thin views over nbtoolkit's configs, jobs and results (the only package importing ipywidgets).

    from nbtoolkit.ui import ColumnMappingForm, HyperparameterForm, JobMonitor, ResultsView, SampleExplorer

Each form has `.widget` (its root box), `.value` (the config it edits) and named children (`form.save`,
`form.launch`, ...) so code and tests can drive it. ipywidgets is imported on first use, with an actionable error
when it is missing.
"""

from __future__ import annotations

from nbtoolkit._lazy import lazy_exports

_EXPORTS = {
    "nbtoolkit.ui.mapping": ("ColumnMappingForm",),
    "nbtoolkit.ui.hyperparameters": ("HyperparameterForm",),
    "nbtoolkit.ui.monitor": ("JobMonitor",),
    "nbtoolkit.ui.results": ("ResultsView", "load_general_results", "load_stage_results"),
    "nbtoolkit.ui.samples": ("SampleExplorer", "filter_predictions"),
    "nbtoolkit.ui.mix": ("MixForm",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

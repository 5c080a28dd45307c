"""Run long work outside the notebook kernel: a job is a subprocess writing into its own run directory.

    runtime = LocalRuntime("runs")
    print(runtime.launch(spec, dry_run=True))   # every check, the command and job.json; nothing starts
    job = runtime.launch(spec)                   # returns at once
    job.wait()                                   # or job.status(), job.metrics(), job.logs(), job.cancel()
    Job.attach(run_dir).result()                 # from a fresh kernel

Names are imported on first use, so `python -m nbtoolkit.runtime.worker` starts without loading the launcher.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "nbtoolkit.runtime.events": ("COMPLETED", "FAILED", "IN_PROGRESS", "JOB_STATES", "RunLog", "read_metrics"),
    "nbtoolkit.runtime.local": ("Check", "DryRunReport", "Job", "JobError", "JobFailed", "JobSpec", "JobStatus",
                                "LaunchError", "LocalRuntime"),
    "nbtoolkit.runtime.results": ("TrainingResult",),
    "nbtoolkit.runtime.worker": ("JobCancelled",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from nbtoolkit.runtime.events import COMPLETED, FAILED, IN_PROGRESS, JOB_STATES, RunLog, read_metrics
    from nbtoolkit.runtime.local import (
        Check,
        DryRunReport,
        Job,
        JobError,
        JobFailed,
        JobSpec,
        JobStatus,
        LaunchError,
        LocalRuntime,
    )
    from nbtoolkit.runtime.results import TrainingResult
    from nbtoolkit.runtime.worker import JobCancelled


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'nbtoolkit.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

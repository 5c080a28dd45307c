"""Run long work outside the notebook kernel: a job is a subprocess writing into its own run directory.

    runtime = LocalRuntime("runs")
    print(runtime.launch(spec, dry_run=True))   # every check, the command and job.json; nothing starts
    job = runtime.launch(spec)                   # returns at once
    job.wait()                                   # or job.status(), job.metrics(), job.logs(), job.cancel()
    Job.attach(run_dir).result()                 # from a fresh kernel

Names are imported on first use, so `python -m nbtoolkit.runtime.worker` starts without loading the launcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtoolkit._lazy import lazy_exports

_EXPORTS = {
    "nbtoolkit.runtime.events": ("COMPLETED", "FAILED", "IN_PROGRESS", "JOB_STATES", "RunLog", "read_metrics"),
    "nbtoolkit.runtime.local": ("Check", "DryRunReport", "Job", "JobError", "JobFailed", "JobSpec", "JobStatus",
                                "LaunchError", "LocalRuntime"),
    "nbtoolkit.runtime.results": ("TrainingResult",),
    "nbtoolkit.runtime.worker": ("JobCancelled",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

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

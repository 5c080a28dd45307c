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
    "nbtoolkit.runtime.checks": ("Check", "DryRunReport", "LaunchError"),
    "nbtoolkit.runtime.local": ("Job", "LocalRuntime"),
    "nbtoolkit.runtime.progress": ("JobSnapshot", "EtaClock"),
    "nbtoolkit.runtime.results": ("TrainingResult", "JobFailed"),
    "nbtoolkit.runtime.spec": ("JobSpec",),
    "nbtoolkit.runtime.status": ("JobError", "JobStatus"),
    "nbtoolkit.runtime.worker": ("JobCancelled",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from nbtoolkit.runtime.events import COMPLETED, FAILED, IN_PROGRESS, JOB_STATES, RunLog, read_metrics
    from nbtoolkit.runtime.checks import Check, DryRunReport, LaunchError
    from nbtoolkit.runtime.local import Job, LocalRuntime
    from nbtoolkit.runtime.progress import EtaClock, JobSnapshot
    from nbtoolkit.runtime.results import JobFailed, TrainingResult
    from nbtoolkit.runtime.spec import JobSpec
    from nbtoolkit.runtime.status import JobError, JobStatus
    from nbtoolkit.runtime.worker import JobCancelled

"""A SageMaker run's handle: SageMakerJob (status from DescribeTrainingJob, logs mirrored from CloudWatch,
cancel through StopTrainingJob, result() downloading model.tar.gz) and its SageMakerJobStatus.

It follows the same state machine as a local job (`nbtoolkit.runtime.status`): SageMaker's TrainingJobStatus maps
onto IN_PROGRESS, COMPLETED and FAILED, and Stopped is FAILED with stopped=True.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtoolkit.aws.errors import AwsError, MissingCredentials
from nbtoolkit.aws.logs import sync_run_logs
from nbtoolkit.aws.session import AwsSession
from nbtoolkit.aws.validation import parse_s3_uri
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    LOG_FILE,
    METRICS_FILE,
    RESULT_FILE,
    STATUS_FILE,
    RunLog,
    read_json,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.local import Job
from nbtoolkit.runtime.progress import progress_html, run_dir_snapshot, state_html
from nbtoolkit.runtime.results import TrainingResult
from nbtoolkit.runtime.spec import JobSpec
from nbtoolkit.runtime.status import CANCELLED, JobError, JobStatus
from nbtoolkit.theme import COLOURS, MUTED

if TYPE_CHECKING:
    from nbtoolkit.aws.runtime import SageMakerRuntime

SAGEMAKER_FILE = "sagemaker.json"
CONTAINER_JOB_FILE = "job.container.json"
CONTAINER_RUN_DIR = "/opt/ml/model"
# DescribeTrainingJob TrainingJobStatus -> nbtoolkit state (Stopped is FAILED with stopped=True).
STATUS_MAP = {"InProgress": IN_PROGRESS, "Stopping": IN_PROGRESS, "Created": IN_PROGRESS, "Running": IN_PROGRESS,
              "Pending": IN_PROGRESS, "Completed": COMPLETED, "Succeeded": COMPLETED, "Failed": FAILED,
              "Stopped": FAILED}
DEFAULT_POLL = 15.0


def map_status(sagemaker_status: str | None) -> tuple[str, bool]:
    """(nbtoolkit state, stopped) for a DescribeTrainingJob TrainingJobStatus."""
    state = STATUS_MAP.get(sagemaker_status or "", IN_PROGRESS)
    return state, sagemaker_status == "Stopped"


@dataclass(frozen=True)
class SageMakerJobStatus(JobStatus):
    """JobStatus plus what SageMaker says: its status, secondary status and the transitions so far."""

    sagemaker_status: str | None = None
    secondary: str | None = None
    transitions: tuple[dict[str, Any], ...] = ()
    training_job: str | None = None

    def __str__(self) -> str:
        text = self.state + (f" ({self.reason})" if self.reason else "")
        if self.secondary and not self.done:
            text += f" - {self.secondary}"
        return text + (f", {self.training_job}" if self.training_job else "")


class SageMakerJob(Job):
    """A SageMaker run: status from DescribeTrainingJob (with secondary status transitions), logs and metrics
    mirrored from CloudWatch into the run directory, cancel through StopTrainingJob, result() downloading
    model.tar.gz. Works after `SageMakerJob.attach(run_dir)` in a fresh kernel."""

    def __init__(self, run_dir: str | os.PathLike, spec: JobSpec | None = None, *,
                 runtime: SageMakerRuntime | None = None, aws: AwsSession | None = None) -> None:
        super().__init__(run_dir, spec)
        info = read_json(self.run_dir / SAGEMAKER_FILE)
        if info is None:
            raise FileNotFoundError(f"{self.run_dir} is not a SageMaker run directory: it has no {SAGEMAKER_FILE}")
        self.info = info
        self._runtime = runtime
        self.aws = aws or (runtime.aws if runtime is not None else AwsSession(region=info.get("region")))
        self._seen_transitions = 0
        self._announcing: int | None = None  # the thread whose wait() prints new secondary statuses

    @classmethod
    def attach(cls, run_dir: str | os.PathLike, *, boto_session: Any = None,
               aws: AwsSession | None = None) -> SageMakerJob:
        """The job of an existing SageMaker run directory."""
        info = read_json(Path(run_dir) / SAGEMAKER_FILE, {})
        if aws is None and boto_session is not None:
            aws = AwsSession(region=info.get("region"), boto_session=boto_session)
        return cls(run_dir, aws=aws)

    @property
    def training_job_name(self) -> str | None:
        """The latest attempt's SageMaker training job name."""
        jobs = self.info.get("jobs") or []
        return jobs[-1].get("name") if jobs else None

    @property
    def is_nova(self) -> bool:
        return self.info.get("backend") in ("nova", "nova_serverless", "hyperpod")

    def console_url(self) -> str | None:
        if not self.training_job_name or not self.info.get("region"):
            return None
        region = self.info["region"]
        return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                f"#/jobs/{self.training_job_name}")

    # -- reading ----------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """DescribeTrainingJob of the latest attempt (throttling retried)."""
        if self.info.get("backend") == "hyperpod":
            raise JobError("a HyperPod job is not a SageMaker training job: follow it with `hyperpod list-jobs` / "
                           "`hyperpod get-log` (see docs/sagemaker.md)")
        return self.aws.call("sagemaker", "describe_training_job", TrainingJobName=self.training_job_name)

    def status(self) -> SageMakerJobStatus:
        """Where the job is: IN_PROGRESS, COMPLETED or FAILED (Stopped is FAILED with stopped=True), with
        SageMaker's status, secondary status and transitions; recorded in status.json. A job that ended is
        read from status.json without calling AWS."""
        local = read_json(self.run_dir / STATUS_FILE, {})
        if local.get("state") in (COMPLETED, FAILED) and (local.get("sagemaker_status") in ("Completed", "Failed",
                                                                                             "Stopped")
                                                         or not self.training_job_name):
            return _status_from(local)
        if self.info.get("backend") == "hyperpod":
            return _status_from({**local, "reason": local.get("reason") or "submitted to HyperPod"})
        description = self.describe()
        sagemaker_status = description.get("TrainingJobStatus")
        state, stopped = map_status(sagemaker_status)
        transitions = tuple(_plain(t) for t in description.get("SecondaryStatusTransitions") or ())
        reason = None
        if sagemaker_status == "Failed":
            reason = description.get("FailureReason") or "failed (no FailureReason given)"
        elif stopped:
            reason = CANCELLED
        elif sagemaker_status == "Stopping":
            reason = "stopping"
        data = {**local, "state": state, "reason": self.aws.scrub(reason) if reason else None, "stopped": stopped,
                "sagemaker_status": sagemaker_status, "secondary": description.get("SecondaryStatus"),
                "transitions": list(transitions), "training_job": self.training_job_name,
                "started": _iso(description.get("TrainingStartTime")) or local.get("started"),
                "ended": _iso(description.get("TrainingEndTime")) if state != IN_PROGRESS else None,
                "billable_seconds": description.get("BillableTimeInSeconds")}
        if state != IN_PROGRESS and not self.is_nova:
            data["model_artifacts"] = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        ended = state != IN_PROGRESS
        if state != local.get("state") or data.get("secondary") != local.get("secondary") \
                or len(transitions) != len(local.get("transitions") or []):
            if ended:
                self.sync_logs(force=True)  # every line the job wrote, before the run directory says it ended
                RunLog(self.run_dir, echo=None).info(f"SageMaker: {sagemaker_status}"
                                                     + (f" - {data['reason']}" if data["reason"] else ""))
            write_json_atomic(self.run_dir / STATUS_FILE, data)
        if not ended:
            self.sync_logs()
        status = _status_from(data)
        if self._announcing == threading.get_ident():
            self._print_transitions(status)
        return status

    def transitions(self) -> list[dict[str, Any]]:
        """SecondaryStatusTransitions so far: Starting, Downloading, Training, Uploading, ... with messages."""
        return list(self.status().transitions)

    def sync_logs(self, force: bool = False) -> int:
        """Copy new CloudWatch lines of every attempt into the run directory; returns how many were added."""
        return sync_run_logs(self.aws, self.run_dir, self.info, force=force)

    def logs(self, tail: int = 50):
        """The last `tail` lines of the job's log (log.txt) and of the container output (stdout.log)."""
        try:
            self.sync_logs()
        except MissingCredentials:
            pass  # show what was mirrored before
        return super().logs(tail)

    def metrics(self):
        """metrics.jsonl rows (mirrored from the container's NBT_METRIC lines) as a DataFrame."""
        try:
            self.sync_logs()
        except MissingCredentials:
            pass
        return super().metrics()

    def result(self) -> TrainingResult:
        """The finished job's TrainingResult, after downloading model.tar.gz into the run directory (once)."""
        status = self.status()
        if not status.done:
            raise JobError(f"job {self.name!r} is still running ({status}); call .wait() first")
        self.download_artifacts()
        return TrainingResult.from_run_dir(self.run_dir)

    def download_artifacts(self) -> Path | None:
        """Extract the latest attempt's model.tar.gz into the run directory (the local job.json is kept; the
        container's is saved as job.container.json); returns the run directory, or None without artifacts."""
        jobs = self.info.get("jobs") or []
        if not jobs or jobs[-1].get("artifacts_downloaded"):
            return self.run_dir if jobs and jobs[-1].get("artifacts_downloaded") else None
        status = read_json(self.run_dir / STATUS_FILE, {})
        if self.is_nova:
            return self._record_nova_result(jobs[-1], status)
        uri = status.get("model_artifacts")
        if not uri:
            return None
        bucket, key = parse_s3_uri(uri)
        with tempfile.TemporaryDirectory(prefix="nbtoolkit-artifacts-") as tmp:
            archive = Path(tmp) / "model.tar.gz"
            try:
                self.aws.call("s3", "download_file", Bucket=bucket, Key=key, Filename=str(archive),
                              context={"bucket": bucket})
            except AwsError as error:
                if error.code in ("404", "NoSuchKey", "NotFound"):
                    RunLog(self.run_dir, echo=None).warning(f"no model artifacts at {uri} (the job wrote none)")
                    return None
                raise
            extracted = Path(tmp) / "run"
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if (m.isfile() or m.isdir())
                           and not m.name.lstrip("./").startswith("checkpoints")]
                tar.extractall(extracted, members=members, filter="data")
            self._merge_artifacts(extracted, jobs[-1])
        jobs[-1]["artifacts_downloaded"] = utc_now()
        write_json_atomic(self.run_dir / SAGEMAKER_FILE, self.info)
        RunLog(self.run_dir, echo=None).info(f"downloaded {uri} into {self.run_dir}")
        return self.run_dir

    def _record_nova_result(self, job: dict[str, Any], status: dict[str, Any]) -> Path | None:
        """result.json of a Nova job: its state and the S3 checkpoint its manifest names (paths.checkpoint_s3)."""
        checkpoint = None
        if status.get("state") == COMPLETED and self.info.get("backend") != "hyperpod":
            from nbtoolkit.aws.nova import nova_checkpoint

            checkpoint = nova_checkpoint(self.aws, self.info["output_s3"], job["name"])
        write_json_atomic(self.run_dir / RESULT_FILE, {
            "status": status.get("state"), "reason": status.get("reason"), "stopped": bool(status.get("stopped")),
            "kind": self.spec.kind, "name": self.spec.name, "run_dir": str(self.run_dir),
            "attempt": status.get("attempt", 1), "started": status.get("started"), "ended": status.get("ended"),
            "output": {"training_job": job["name"], "paths": {"checkpoint_s3": checkpoint}}})
        job["artifacts_downloaded"] = utc_now()
        write_json_atomic(self.run_dir / SAGEMAKER_FILE, self.info)
        return self.run_dir

    def _merge_artifacts(self, extracted: Path, job: dict[str, Any]) -> None:
        container_job = extracted / JOB_FILE
        remote_run_dir = CONTAINER_RUN_DIR
        if container_job.exists():
            remote_run_dir = (read_json(container_job) or {}).get("container", {}).get("run_dir") or remote_run_dir
            shutil.move(str(container_job), self.run_dir / CONTAINER_JOB_FILE)
        sizes = job.get("mirror_sizes") or {}
        for name in (METRICS_FILE, LOG_FILE):
            source = extracted / name
            if not source.exists():
                continue
            target = self.run_dir / name
            keep = min(sizes.get(name, 0), target.stat().st_size) if target.exists() else 0
            with open(target, "r+b" if target.exists() else "wb") as handle:
                handle.truncate(keep)  # earlier attempts' lines stay; this attempt's come from the container
                handle.seek(keep)
                handle.write(source.read_bytes())
            source.unlink()
        remote_status = read_json(extracted / STATUS_FILE, {})
        (extracted / STATUS_FILE).unlink(missing_ok=True)
        for path in sorted(extracted.rglob("*")):
            relative = path.relative_to(extracted)
            target = self.run_dir / relative
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif relative.as_posix() == RESULT_FILE:
                text = path.read_text(encoding="utf-8").replace(json.dumps(remote_run_dir)[1:-1],
                                                                json.dumps(str(self.run_dir))[1:-1])
                result = json.loads(text)
                result["run_dir"] = str(self.run_dir)
                write_json_atomic(target, result)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), target)
        status = read_json(self.run_dir / STATUS_FILE, {})
        for key in ("seconds",):
            if key in remote_status:
                status[key] = remote_status[key]
        write_json_atomic(self.run_dir / STATUS_FILE, status)

    # -- waiting --------------------------------------------------------------------------------------------

    def wait(self, progress: bool = True, poll: float = DEFAULT_POLL, timeout: float | None = None, *,
             raise_on_failure: bool = True) -> TrainingResult:
        """Job.wait with SageMaker's pace (DescribeTrainingJob every `poll` seconds): prints each new secondary
        status (Starting, Downloading, Training, ...) as it appears, then the progress bar; a FAILED job raises
        JobFailed with SageMaker's FailureReason. A timeout or Ctrl-C leaves the job running on SageMaker."""
        if self.info.get("backend") == "hyperpod":
            from nbtoolkit.aws.hyperpod import as_shell, monitor_commands

            commands = monitor_commands(self.training_job_name or "JOB")
            raise JobError(f"{self.training_job_name} runs on a HyperPod cluster, not as a SageMaker training job: "
                           f"follow it with `{as_shell(commands['status'])}` and `{as_shell(commands['logs'])}`")
        self._announcing = threading.get_ident() if progress else None
        try:
            return super().wait(progress, poll, timeout, raise_on_failure=raise_on_failure)
        finally:
            self._announcing = None

    def _print_transitions(self, status: SageMakerJobStatus) -> None:
        for transition in status.transitions[self._seen_transitions:]:
            line = {"job": self.training_job_name, "secondary_status": transition.get("Status"),
                    "message": transition.get("StatusMessage")}
            if os.environ.get("TRAINING_JOB_NAME"):
                print(json.dumps(line), flush=True)
            else:
                print(f"{self.training_job_name}: {line['secondary_status']} - {line['message']}", flush=True)
        self._seen_transitions = len(status.transitions)

    # -- control --------------------------------------------------------------------------------------------

    def cancel(self, grace: float = 0.0) -> SageMakerJobStatus:
        """StopTrainingJob: SageMaker sends SIGTERM (the worker checkpoints to S3) and ends the job Stopped."""
        status = self.status()
        if status.done:
            return status
        if self.info.get("backend") == "hyperpod":
            raise JobError("stop a HyperPod job with `hyperpod cancel-job --job-name NAME` (see docs/sagemaker.md)")
        self.aws.call("sagemaker", "stop_training_job", TrainingJobName=self.training_job_name)
        RunLog(self.run_dir, echo=None).info(f"cancel requested: StopTrainingJob {self.training_job_name}")
        return self.status()

    def resume(self) -> SageMakerJob:
        """Relaunch this failed or stopped run as a new training job that restores its S3 checkpoints."""
        runtime = self._runtime
        if runtime is None:
            raise JobError("resume needs the SageMakerRuntime that launched the job: "
                           "runtime.launch(resume_from=job.run_dir)")
        job = runtime.launch(self.spec, resume_from=self.run_dir)
        self.info = job.info
        self._seen_transitions = 0
        return self

    # -- display --------------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        status = _status_from(read_json(self.run_dir / STATUS_FILE, {}))
        return f"SageMakerJob({self.name!r}, {status}, run_dir='{self.run_dir}')"

    def _repr_html_(self) -> str:
        try:
            self.status()
        except AwsError:
            pass  # show the last state seen
        status = _status_from(read_json(self.run_dir / STATUS_FILE, {}))
        snapshot = run_dir_snapshot(self.run_dir, status, self._clock)
        secondary = f" / {html.escape(status.secondary)}" if status.secondary else ""
        url = self.console_url()
        link = f' <a href="{html.escape(url)}" target="_blank">console</a>' if url else ""
        return (f'<div class="nbt-job" style="border:1px solid {COLOURS["border"]};border-radius:6px;'
                f'padding:6px 10px;display:inline-block;font-size:13px">'
                + state_html(self.name, snapshot, f"{self.spec.kind} on SageMaker") + progress_html(snapshot)
                + f'<br><span style="color:{MUTED}">{html.escape(str(status.sagemaker_status))}{secondary} · '
                f'{html.escape(str(self.training_job_name))}</span>{link}'
                f'<br><code>{html.escape(str(self.run_dir))}</code></div>')

    def _alive(self, pid: int) -> bool:  # no local process behind a SageMaker job
        return False


def _status_from(data: dict[str, Any]) -> SageMakerJobStatus:
    return SageMakerJobStatus(
        state=data.get("state", IN_PROGRESS), reason=data.get("reason"), started=data.get("started"),
        ended=data.get("ended"), stopped=bool(data.get("stopped")), attempt=int(data.get("attempt") or 1),
        sagemaker_status=data.get("sagemaker_status"), secondary=data.get("secondary"),
        transitions=tuple(data.get("transitions") or ()), training_job=data.get("training_job"))


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)


def _plain(transition: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if hasattr(v, "isoformat") else v for k, v in transition.items()}

"""Run jobs as SageMaker training jobs with the interface of LocalRuntime: launch, dry run, Job handles.

    runtime = SageMakerRuntime(role=role_arn, bucket="my-bucket", region="us-east-1", instance_type="ml.g5.2xlarge")
    print(runtime.launch(spec, dry_run=True))   # offline checks, then role/bucket access when credentials exist
    job = runtime.launch(spec)                   # uploads data + code, CreateTrainingJob, returns at once
    job.wait()                                   # secondary status, progress bar from the job's CloudWatch lines
    job.result()                                 # downloads model.tar.gz into the local run directory

Open models (the embedded one, Hugging Face ids, local directories) run the same worker as LocalRuntime
(`python -m nbtoolkit.runtime.worker RUN_DIR`, see entrypoint.py) on a Hugging Face PyTorch GPU image through the
SageMaker Python SDK v3 `ModelTrainer`. Amazon Nova models go through the SDK's Nova trainers (nova.py). Every run
also has a local run directory (job.json, status.json, log.txt, metrics.jsonl mirrored from CloudWatch, and
sagemaker.json naming the training jobs), so `SageMakerJob.attach(run_dir)` works from a fresh kernel and nothing
is lost when a call fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.aws.entrypoint import (
    LOG_PREFIX,
    METRIC_PREFIX,
    PROGRESS_PREFIX,
    STATUS_PREFIX,
    container_path,
)
from nbtoolkit.aws.errors import AwsError, MissingCredentials, translate
from nbtoolkit.aws.session import CREDENTIAL_VARIABLES, AwsSession
from nbtoolkit.aws.validation import (
    check_base_job_name,
    check_bucket,
    check_gpu_instance,
    check_prefix,
    check_region,
    check_role_arn,
    check_s3_uri,
    launch_base_name,
)
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    LOG_FILE,
    METRICS_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    STATUS_FILE,
    STDOUT_FILE,
    RunLog,
    read_json,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.local import (
    JOB_FORMAT,
    Check,
    DryRunReport,
    Job,
    JobError,
    JobSpec,
    JobStatus,
    LaunchError,
    _check_data,
    _check_rows,
    _versions,
    config_to_dict,
    progress_html,
)
from nbtoolkit.runtime.results import TrainingResult
from nbtoolkit.runtime.worker import BUILTIN_KINDS

SAGEMAKER_FILE = "sagemaker.json"
CLOUDWATCH_FILE = "cloudwatch.json"
CONTAINER_JOB_FILE = "job.container.json"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CONTAINER_RUN_DIR = "/opt/ml/model"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# The Hugging Face PyTorch training image (GPU) the open-model path runs on: sagemaker.core.image_uris coordinates.
HF_IMAGE = {"version": "5.3.0", "base_framework_version": "pytorch2.9.0", "py_version": "py312"}
# DescribeTrainingJob TrainingJobStatus -> nbtoolkit state (REFERENCE.md §1; Stopped is FAILED with stopped=True).
STATUS_MAP = {"InProgress": IN_PROGRESS, "Stopping": IN_PROGRESS, "Created": IN_PROGRESS, "Running": IN_PROGRESS,
              "Pending": IN_PROGRESS, "Completed": COMPLETED, "Succeeded": COMPLETED, "Failed": FAILED,
              "Stopped": FAILED}
# Lines SageMaker's metric definitions extract from the worker's NBT_METRIC lines (shown in the console).
METRIC_KEYS = ("loss", "lr", "eval_loss", "reward_mean", "kl", "tokens_per_second")
DEFAULT_POLL = 15.0
LOG_SYNC_INTERVAL = 5.0  # seconds between CloudWatch reads of one run directory
_SYNC_LOCKS: dict[str, threading.Lock] = {}
_LAST_SYNC: dict[str, float] = {}


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


@dataclass
class SageMakerDryRunReport(DryRunReport):
    """Every check a SageMaker launch runs, the container command and job.json, and `plan`: the training job
    request it would send (S3 locations, image, instances, hyperparameters) or the Nova trainer call."""

    plan: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return super().__str__() + "\nplan:\n" + json.dumps(self.plan, indent=2, default=str)

    def _repr_html_(self) -> str:
        plan = html.escape(json.dumps(self.plan, indent=2, default=str))
        return super()._repr_html_().replace(
            "</div>", f"<details open><summary>SageMaker plan</summary><pre>{plan}</pre></details></div>", 1)


# ---------------------------------------------------------------------------------------------------------------
# The runtime


class SageMakerRuntime:
    """Launch jobs as SageMaker training jobs; the same launch/check/Job interface as LocalRuntime.

    `role` is the ARN of the role SageMaker assumes; data, code, checkpoints and outputs go under
    s3://bucket/prefix/<run id>/. `env` adds environment variables in the training container (credential
    variables are refused: the container gets the role's). Nova models: `nova_compute` is "training_job"
    (instances of `instance_type`), "serverless" (SageMaker picks the hardware; needed for data mixing without
    HyperPod) or "hyperpod" (`hyperpod_cluster`). sagemaker_telemetry=False opts out of the SDK's telemetry.
    """

    def __init__(self, role: str, bucket: str, prefix: str = "nbtoolkit", region: str | None = None,
                 instance_type: str = "ml.g5.2xlarge", instance_count: int = 1, *, runs_dir: str | os.PathLike = "runs",
                 boto_session: Any = None, aws: AwsSession | None = None, image_uri: str | None = None,
                 volume_size_gb: int = 100, max_runtime_hours: float = 24.0, use_spot: bool = False,
                 env: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                 nova_compute: str = "training_job", hyperpod_cluster: str | None = None,
                 hyperpod_namespace: str = "kubeflow", model_package_group: str | None = None,
                 sagemaker_telemetry: bool = True) -> None:
        self.role = role
        self.bucket = bucket
        self.prefix = (prefix or "").strip()
        self.aws = aws or AwsSession(region=region, boto_session=boto_session)
        self.region = self.aws.region
        self.instance_type = instance_type
        self.instance_count = instance_count
        self.runs_dir = Path(runs_dir)
        self.image_uri = image_uri
        self.volume_size_gb = int(volume_size_gb)
        self.max_runtime_hours = float(max_runtime_hours)
        self.use_spot = bool(use_spot)
        self.env = dict(env or {})
        self.tags = dict(tags or {})
        self.nova_compute = nova_compute
        self.hyperpod_cluster = hyperpod_cluster
        self.hyperpod_namespace = hyperpod_namespace
        self.model_package_group = model_package_group
        self.sagemaker_telemetry = bool(sagemaker_telemetry)

    def __repr__(self) -> str:
        return (f"SageMakerRuntime(region={self.region!r}, bucket={self.bucket!r}, prefix={self.prefix!r}, "
                f"instance_type={self.instance_type!r}, instance_count={self.instance_count})")

    # -- locations --------------------------------------------------------------------------------------------

    def s3_uri(self, *parts: str) -> str:
        """s3://bucket/prefix/part/part..."""
        key = "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))
        return f"s3://{self.bucket}/{key}"

    def sagemaker_session(self) -> Any:
        """The SageMaker SDK Session the trainers use (default bucket and prefix set to this runtime's)."""
        return self.aws.sagemaker_session(self.bucket, self.prefix, telemetry=self.sagemaker_telemetry)

    def image(self) -> str:
        """The training image: `image_uri`, else the Hugging Face PyTorch GPU training image of this region."""
        return self.image_uri or hf_training_image(self.aws.require_region())

    def jobs(self) -> list[SageMakerJob]:
        """Every SageMaker run directory under runs_dir, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        return [SageMakerJob(p, runtime=self) for p in sorted(self.runs_dir.iterdir())
                if (p / SAGEMAKER_FILE).is_file() and (p / JOB_FILE).is_file()]

    # -- checks ---------------------------------------------------------------------------------------------------

    def _is_nova(self, spec: JobSpec) -> bool:
        if not spec.model:
            return False
        from nbtoolkit.errors import ModelError
        from nbtoolkit.models import resolve_model

        try:
            return resolve_model(spec.model).kind == "nova"
        except ModelError:
            return False

    def _location_checks(self) -> list[Check]:
        checks = []
        problem = check_role_arn(self.role)
        checks.append(Check("role", problem is None, problem or f"{self.role} (ARN shape ok)"))
        problem = check_region(self.region)
        checks.append(Check("region", problem is None, problem or str(self.region)))
        problem = check_bucket(self.bucket) or check_prefix(self.prefix)
        checks.append(Check("s3 location", problem is None, problem or f"s3://{self.bucket}/{self.prefix}"))
        leaked = sorted(k for k in self.env if k.upper() in CREDENTIAL_VARIABLES)
        checks.append(Check("environment", not leaked,
                            f"credentials must not be passed to the container ({', '.join(leaked)}): it runs as the "
                            "role" if leaked else f"{len(self.env)} variable(s) for the container"))
        return checks

    def check(self, spec: JobSpec, *, resume_from: str | os.PathLike | None = None,
              online: bool | None = None, run_dir: str | os.PathLike | None = None) -> SageMakerDryRunReport:
        """Every pre-launch check: offline first; then, when credentials exist (or online=True), role and bucket
        access. What launch(..., dry_run=True) returns; `run_dir` is the new run directory launch() made."""
        checks = self._location_checks()
        problem = check_base_job_name(spec.name)
        checks.append(Check("job name", problem is None, problem or f"{spec.name} (+ a 15-character timestamp)"))
        run_id, attempt = self._run_id(spec, resume_from, run_dir)
        if resume_from is not None:
            checks.append(self._check_resume(Path(resume_from), spec))
        if self._is_nova(spec):
            from nbtoolkit.aws.nova import plan_nova

            more, plan = plan_nova(self, spec, run_id)
            checks += more
            command: list[str] = []
            job_json = self._job_json(spec, {}, run_id, attempt, resume_from is not None, plan)
        else:
            more, plan, files = self._plan_open_model(spec, run_id)
            checks += more
            command = [sys.executable.rsplit("/", 1)[-1], "-m", "nbtoolkit.runtime.worker", CONTAINER_RUN_DIR]
            job_json = self._job_json(spec, files, run_id, attempt, resume_from is not None, plan)
            plan.setdefault("hyperparameters", hyperparameters_for(spec))
        uris = [u for u in _walk_strings(plan) if u.startswith("s3://")]
        bad = [p for p in (check_s3_uri(u) for u in uris) if p]
        checks.append(Check("s3 uris", not bad, "; ".join(bad[:3]) if bad else f"{len(uris)} S3 URIs well formed"))
        offline_ok = all(c.ok for c in checks)
        has_credentials = self.aws.has_credentials()
        if online is None:
            online = has_credentials
        if not offline_ok:
            checks.append(Check("aws access", True, "not checked: fix the offline checks first"))
        elif not online:
            checks.append(Check("aws access", True, "not checked: no AWS credentials found (offline checks only)"))
        else:
            checks += self._online_checks(plan)
        where = resume_from or run_dir or self.runs_dir / run_id.rsplit("-", 1)[0]
        return SageMakerDryRunReport(all(c.ok for c in checks), checks, command, job_json,
                                     str(Path(where).absolute()), plan=plan)

    def _run_id(self, spec: JobSpec, resume_from: str | os.PathLike | None,
                run_dir: str | os.PathLike | None) -> tuple[str, int]:
        """The run's S3 folder name (the run directory's name and a random suffix, so runs launched elsewhere in
        the same second never share data or checkpoints) and the attempt number."""
        if resume_from is not None:
            info = read_json(Path(resume_from) / SAGEMAKER_FILE, {})
            return info.get("run_id") or Path(resume_from).name, len(info.get("jobs", [])) + 1
        import secrets
        from datetime import datetime, timezone

        name = Path(run_dir).name if run_dir else f"{spec.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        return f"{name}-{secrets.token_hex(2)}", 1

    def _check_resume(self, run_dir: Path, spec: JobSpec) -> Check:
        info = read_json(run_dir / SAGEMAKER_FILE)
        job = read_json(run_dir / JOB_FILE)
        if info is None or job is None:
            return Check("resume", False, f"{run_dir} is not a SageMaker run directory (no {SAGEMAKER_FILE})")
        if job.get("kind") != spec.kind:
            return Check("resume", False, f"{run_dir} ran kind {job.get('kind')!r}, not {spec.kind!r}")
        status = read_json(run_dir / STATUS_FILE, {})
        if status.get("state") == COMPLETED:
            return Check("resume", False, f"{run_dir.name} is COMPLETED; launch a new run instead")
        if status.get("state") == IN_PROGRESS:
            return Check("resume", False, f"{run_dir.name} may still be running ({status.get('sagemaker_status')}); "
                         "check job.status() and cancel() it first")
        last = (info.get("jobs") or [{}])[-1].get("name")
        return Check("resume", True, f"attempt {len(info.get('jobs', [])) + 1} after {last} "
                     f"({status.get('sagemaker_status')}); checkpoints from {info.get('checkpoint_s3')}")

    def _plan_open_model(self, spec: JobSpec, run_id: str) -> tuple[list[Check], dict[str, Any], dict[str, str]]:
        """Checks and the training job plan for the worker on the Hugging Face image; files: job.json paths."""
        checks = []
        if spec.kind in BUILTIN_KINDS:
            checks.append(Check("job function", True, f"{spec.kind} (the local worker, in the container)"))
        else:
            checks.append(_check_custom_kind(spec.kind))
        config = spec.config
        if config is not None:
            checks.append(check_config_platform(config, "local", "an open model trains with the local trainer in the "
                                                "container (Nova configs are for Nova models)"))
        problem = check_gpu_instance(self.instance_type, self.instance_count)
        if problem is None and spec.kind in BUILTIN_KINDS and self.instance_count != 1:
            problem = (f"{spec.kind} runs in one process on one instance: use instance_count=1 (for multi-node "
                       "training use a Nova model, or a custom job function that coordinates instances)")
        checks.append(Check("instances", problem is None,
                            problem or f"{self.instance_count} x {self.instance_type}"))
        channels: dict[str, str] = {}
        uploads: dict[str, str] = {}
        files: dict[str, str] = {}
        model_check, model_value = self._plan_model(spec, run_id, channels, uploads)
        checks.append(model_check)
        files["model"] = model_value
        memory_check = _check_gpu_memory(spec, _model_parameters(spec, uploads), self.instance_type)
        if memory_check is not None:
            checks.append(memory_check)
        for what, channel in (("train_file", "train"), ("eval_file", "eval")):
            value = getattr(spec, what)
            if value is None:
                continue
            if value.startswith("s3://"):
                problem = check_s3_uri(value)
                checks.append(Check(what, problem is None, problem or f"{value} (read by the job from S3)"))
                bucket_key = value.rstrip("/")
                channels[channel] = bucket_key
                files[what] = container_path(channel, bucket_key.rsplit("/", 1)[-1])
                continue
            data_check, rows = _check_data(what, value, spec)
            checks.append(data_check)
            path = Path(value).expanduser().resolve()
            channels[channel] = self.s3_uri(run_id, "data", channel)
            uploads[str(path)] = self.s3_uri(run_id, "data", channel, path.name)
            files[what] = container_path(channel, path.name)
            if what == "train_file" and data_check.ok and spec.kind != "eval":
                rows_check = _check_rows(spec, rows)
                if rows_check is not None:
                    checks.append(rows_check)
        general = (spec.extra or {}).get("general_data")
        if isinstance(general, dict) and general:
            missing = [p for p in general.values() if not str(p).startswith("s3://") and not Path(p).is_file()]
            checks.append(Check("general data", not missing, f"missing files: {', '.join(map(str, missing))}"
                                if missing else f"{len(general)} general-data file(s) for mixing"))
            channels["general"] = self.s3_uri(run_id, "data", "general")
            for category, path in general.items():
                name = f"{category}.jsonl"
                uploads[str(Path(path).resolve())] = self.s3_uri(run_id, "data", "general", name)
                files[f"general:{category}"] = container_path("general", name)
        if spec.kind == "rft_lora" and not spec.labels and getattr(config, "reward", "") == "binary_label":
            checks.append(Check("labels", False, "the binary_label reward extracts a label from each reply: give "
                                "labels, e.g. labels=('HQ', 'LQ_EDIT', 'LQ_CLOSE')"))
        try:
            image = self.image()
            checks.append(Check("image", True, image))
        except Exception as error:  # noqa: BLE001 - an unknown region or image coordinates
            image = None
            checks.append(Check("image", False, f"no Hugging Face training image for region {self.region!r}: "
                                f"{error}; pass image_uri="))
        plan = {"backend": "training_job", "base_job_name": launch_base_name(spec.name), "run_id": run_id,
                "image": image, "role": self.role, "region": self.region, "instance_type": self.instance_type,
                "instance_count": self.instance_count, "volume_size_gb": self.volume_size_gb,
                "max_runtime_seconds": int(self.max_runtime_hours * 3600), "use_spot": self.use_spot,
                "channels": channels, "uploads": uploads, "output_s3": self.s3_uri(run_id, "output"),
                "checkpoint_s3": self.s3_uri(run_id, "checkpoints"), "code_s3_prefix": self.s3_uri(run_id),
                "environment": _redacted_env(self.env)}
        return checks, plan, files

    def _plan_model(self, spec: JobSpec, run_id: str, channels: dict[str, str],
                    uploads: dict[str, str]) -> tuple[Check, str | None]:
        """How the model reaches the container: by name (tiny, Hugging Face id) or as the `model` channel."""
        if spec.model is None:
            ok = spec.kind not in BUILTIN_KINDS
            return Check("model", ok, "none (the job function needs none)" if ok else "a model is required"), None
        if spec.model.startswith("s3://"):
            channels["model"] = spec.model.rstrip("/")
            return Check("model", check_s3_uri(spec.model) is None, f"{spec.model} (model channel)"), \
                container_path("model")
        from nbtoolkit.errors import ModelError
        from nbtoolkit.models import embedded_cache_dir, model_path, resolve_model

        try:
            model = resolve_model(spec.model)
        except ModelError as error:
            return Check("model", False, str(error)), spec.model
        if model.kind in ("huggingface", "tiny"):
            return Check("model", True, f"{model.name} ({model.kind}; the container downloads or builds it)"), \
                spec.model
        if model.kind == "embedded":
            directory = embedded_cache_dir()
            note = "" if (directory / "config.json").is_file() else " (converted from the GGUF at launch, ~20 s)"
        else:
            try:
                directory = model_path(model)
            except ModelError as error:
                return Check("model", False, str(error)), spec.model
            note = ""
            if not (directory / "config.json").is_file():
                return Check("model", False, f"{directory} has no config.json: not a model directory"), spec.model
        channels["model"] = self.s3_uri(run_id, "data", "model")
        uploads[str(directory)] = self.s3_uri(run_id, "data", "model")
        return Check("model", True, f"{model.name} ({model.kind}; uploaded from {directory}{note})"), \
            container_path("model")

    def _online_checks(self, plan: dict[str, Any]) -> list[Check]:
        """Credentials, the role (exists, trusts SageMaker), the bucket, and S3 inputs that must already exist."""
        checks = []
        try:
            identity = self.aws.call("sts", "get_caller_identity")
            checks.append(Check("credentials", True, f"account {identity['Account']}"))
        except AwsError as error:
            return [Check("credentials", False, str(error))]
        checks.append(self._check_role_access())
        try:
            self.aws.call("s3", "head_bucket", Bucket=self.bucket, context={"bucket": self.bucket})
            checks.append(Check("bucket", True, f"s3://{self.bucket} is reachable"))
        except AwsError as error:
            checks.append(Check("bucket", False, str(error)))
        uploads = set(plan.get("uploads", {}).values())
        for channel, uri in plan.get("channels", {}).items():
            if uri in uploads or any(u.startswith(uri + "/") for u in uploads):
                continue  # uploaded at launch
            from nbtoolkit.aws.validation import parse_s3_uri

            bucket, key = parse_s3_uri(uri)
            try:
                found = self.aws.call("s3", "list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1,
                                      context={"bucket": bucket}).get("KeyCount", 0)
                checks.append(Check(f"{channel} data", bool(found), f"{uri} exists" if found else f"nothing at {uri}"))
            except AwsError as error:
                checks.append(Check(f"{channel} data", False, str(error)))
        return checks

    def _check_role_access(self) -> Check:
        name = self.role.rsplit("/", 1)[-1]
        try:
            role = self.aws.call("iam", "get_role", RoleName=name, context={"role": self.role})["Role"]
        except AwsError as error:
            if error.code in ("AccessDenied", "AccessDeniedException"):
                return Check("role access", True, f"cannot read {name} (the caller lacks iam:GetRole); SageMaker "
                             "checks the role when the job is created")
            return Check("role access", False, str(error))
        if role.get("Arn") and role["Arn"] != self.role:
            return Check("role access", False, f"role {name} has ARN {role['Arn']}, not {self.role}")
        document = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(document, str):
            from urllib.parse import unquote

            document = json.loads(unquote(document))
        text = json.dumps(document)
        if "sagemaker.amazonaws.com" not in text:
            return Check("role access", False, f"role {name} does not trust sagemaker.amazonaws.com: add it to the "
                         "role's trust policy (Principal Service sagemaker.amazonaws.com, Action sts:AssumeRole)")
        return Check("role access", True, f"{name} exists and trusts SageMaker")

    def _job_json(self, spec: JobSpec, files: dict[str, str], run_id: str, attempt: int, resume: bool,
                  plan: dict[str, Any]) -> dict[str, Any]:
        """job.json as the container reads it: container paths, the worker's fields, no credentials."""
        spec_dict = spec.to_dict()
        general = {k.split(":", 1)[1]: v for k, v in files.items() if k.startswith("general:")}
        if general:
            spec_dict["extra"] = {**spec_dict["extra"], "general_data": general}
        return {"format": JOB_FORMAT, "kind": spec.kind, "spec": spec_dict, "config": config_to_dict(spec.config),
                "config_changed": spec.config.changed() if spec.config is not None else {},
                "model": files.get("model", spec.model), "train_file": files.get("train_file", spec.train_file),
                "eval_file": files.get("eval_file", spec.eval_file), "attempt": attempt, "resume": resume,
                "created": utc_now(), "command": ["python", "-m", "nbtoolkit.runtime.worker", CONTAINER_RUN_DIR],
                "cwd": CONTAINER_RUN_DIR,
                "runtime": {"backend": "sagemaker", "region": self.region, "bucket": self.bucket,
                            "prefix": self.prefix, "run_id": run_id, "instance_type": self.instance_type,
                            "instance_count": self.instance_count, "env": _redacted_env(self.env)},
                "versions": _versions()}

    # -- launch ---------------------------------------------------------------------------------------------------

    def launch(self, spec: JobSpec | None = None, *, resume_from: str | os.PathLike | None = None,
               dry_run: bool = False) -> SageMakerJob | SageMakerDryRunReport:
        """Start a SageMaker training job and return its SageMakerJob at once (or resume a failed/stopped run from
        its S3 checkpoints with resume_from=run_dir). dry_run=True returns the SageMakerDryRunReport, uploads
        nothing and creates nothing. Failed checks raise LaunchError; AWS failures raise AwsError subclasses."""
        if spec is None:
            if resume_from is None:
                raise TypeError("launch() needs a JobSpec (or resume_from=run_dir to relaunch a run)")
            spec = Job(resume_from).spec
        if dry_run:
            return self.check(spec, resume_from=resume_from)
        if not self.aws.has_credentials():
            from nbtoolkit.aws.errors import CREDENTIALS_HELP

            raise MissingCredentials(f"cannot launch on SageMaker without AWS credentials; {CREDENTIALS_HELP} "
                                     "(launch(spec, dry_run=True) runs the offline checks)")
        if resume_from is not None and (Path(resume_from) / SAGEMAKER_FILE).is_file():
            SageMakerJob(resume_from, runtime=self).status()  # the remote state, not the last one seen
        new_dir = None
        if resume_from is None:
            from nbtoolkit.runtime.events import new_run_dir

            new_dir = new_run_dir(self.runs_dir, spec.name).resolve()
        try:
            report = self.check(spec, resume_from=resume_from, online=True, run_dir=new_dir)
            if not report.ok:
                raise LaunchError(report)
        except BaseException:
            if new_dir is not None:
                new_dir.rmdir()  # still empty: nothing was launched
            raise
        plan = report.plan
        if new_dir is not None:
            run_dir = new_dir
            info: dict[str, Any] = {"format": "nbtoolkit.sagemaker/1", "run_id": plan["run_id"], "jobs": [],
                                    "region": self.region, "bucket": self.bucket, "prefix": self.prefix,
                                    "backend": plan.get("backend"), "output_s3": plan.get("output_s3"),
                                    "checkpoint_s3": plan.get("checkpoint_s3")}
            history: list[dict[str, Any]] = []
        else:
            run_dir = Path(resume_from).resolve()
            info = read_json(run_dir / SAGEMAKER_FILE)
            history = (read_json(run_dir / JOB_FILE) or {}).get("attempts", [])
        # The local job.json names the local files (what Job.attach and resume read); the container's is in S3.
        local_job = {**report.job_json, "spec": spec.to_dict(), "model": spec.model, "train_file": spec.train_file,
                     "eval_file": spec.eval_file, "attempts": history,
                     "container_files": {k: report.job_json.get(k) for k in ("model", "train_file", "eval_file")}}
        attempt = report.job_json["attempt"]
        local_job["attempts"] = [*local_job["attempts"], {"attempt": attempt, "launched": utc_now(),
                                                          "resume": resume_from is not None}]
        write_json_atomic(run_dir / JOB_FILE, local_job)
        mirror_sizes = {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0
                        for name in (METRICS_FILE, LOG_FILE)}
        write_json_atomic(run_dir / SAGEMAKER_FILE, info)  # a SageMaker run directory even if the launch fails
        write_json_atomic(run_dir / STATUS_FILE, {"state": IN_PROGRESS, "reason": "launching", "attempt": attempt,
                                                  "started": None, "ended": None, "stopped": False})
        log = RunLog(run_dir, echo=None)
        try:
            if plan.get("backend") in ("nova", "nova_serverless", "hyperpod"):
                from nbtoolkit.aws.nova import launch_nova

                launched = launch_nova(self, spec, plan, run_dir, log)
            else:
                launched = self._launch_open_model(spec, plan, report.job_json, log)
        except Exception as error:  # noqa: BLE001 - recorded, then raised as an actionable error
            failure = error if isinstance(error, AwsError) else (
                translate(error, "launch") if type(error).__module__.startswith(("botocore", "boto3")) else error)
            reason = self.aws.scrub(f"launch failed: {failure}")
            write_json_atomic(run_dir / STATUS_FILE, {"state": FAILED, "reason": reason, "attempt": attempt,
                                                      "stopped": False, "ended": utc_now()})
            log.info(f"FAILED: {reason}")
            if failure is error:
                raise
            raise failure from error
        info["jobs"] = [*info.get("jobs", []), {**launched, "attempt": attempt, "launched": utc_now(),
                                                "mirror_sizes": mirror_sizes}]
        write_json_atomic(run_dir / SAGEMAKER_FILE, info)
        write_json_atomic(run_dir / STATUS_FILE, {"state": IN_PROGRESS, "reason": None, "attempt": attempt,
                                                  "started": utc_now(), "ended": None, "stopped": False,
                                                  "training_job": launched.get("name"),
                                                  "sagemaker_status": "InProgress"})
        log.info(f"launched SageMaker training job {launched.get('name')} (attempt {attempt}) in {self.region}")
        return SageMakerJob(run_dir, spec, runtime=self)

    def _upload(self, uploads: dict[str, str], log: RunLog) -> None:
        from nbtoolkit.aws.validation import parse_s3_uri

        for local, uri in uploads.items():
            path = Path(local)
            bucket, key = parse_s3_uri(uri)
            files = [(path, key)] if path.is_file() else [
                (f, f"{key}/{f.relative_to(path).as_posix()}") for f in sorted(path.rglob("*")) if f.is_file()]
            for file, file_key in files:
                self.aws.call("s3", "upload_file", Filename=str(file), Bucket=bucket, Key=file_key,
                              context={"bucket": bucket})
            log.info(f"uploaded {path.name} ({len(files)} file(s)) to {uri}")

    def model_trainer(self, plan: dict[str, Any], source_dir: str | Path) -> Any:
        """The SageMaker SDK v3 ModelTrainer for a plan and a code directory (built by launch)."""
        from sagemaker.core.training.configs import (
            CheckpointConfig,
            Compute,
            MetricDefinition,
            OutputDataConfig,
            SourceCode,
            StoppingCondition,
            Tag,
        )
        from sagemaker.train.model_trainer import ModelTrainer

        from nbtoolkit.aws.packaging import ENTRY_SCRIPT, REQUIREMENTS_FILE

        max_runtime = plan["max_runtime_seconds"]
        stopping = StoppingCondition(max_runtime_in_seconds=max_runtime,
                                     **({"max_wait_time_in_seconds": max_runtime * 2} if plan["use_spot"] else {}))
        trainer = ModelTrainer(
            sagemaker_session=self.sagemaker_session(),
            role=plan["role"],
            base_job_name=plan["base_job_name"],
            input_s3_key_prefix=plan["run_id"],
            training_image=plan["image"],
            source_code=SourceCode(source_dir=str(source_dir), entry_script=ENTRY_SCRIPT,
                                   requirements=REQUIREMENTS_FILE),
            compute=Compute(instance_type=plan["instance_type"], instance_count=plan["instance_count"],
                            volume_size_in_gb=plan["volume_size_gb"], enable_managed_spot_training=plan["use_spot"]
                            or None),
            stopping_condition=stopping,
            output_data_config=OutputDataConfig(s3_output_path=plan["output_s3"]),
            checkpoint_config=CheckpointConfig(s3_uri=plan["checkpoint_s3"], local_path=CHECKPOINT_LOCAL_PATH),
            hyperparameters=dict(plan["hyperparameters"]),
            environment={**self.env, "NBT_RUN_ID": plan["run_id"]},
            tags=[Tag(key=k, value=v) for k, v in {"nbtoolkit:run": plan["run_id"], **self.tags}.items()],
        )
        definitions = [MetricDefinition(name=key, regex=METRIC_PREFIX + r'.*"' + key + r'": ([-+0-9.eE]+)')
                       for key in METRIC_KEYS]
        return trainer.with_metric_definitions(definitions)

    def _launch_open_model(self, spec: JobSpec, plan: dict[str, Any], job_json: dict[str, Any],
                           log: RunLog) -> dict[str, Any]:
        from sagemaker.core.training.configs import InputData

        from nbtoolkit.aws.packaging import build_source_dir

        if any(Path(p) == _embedded_dir() for p in plan["uploads"]):
            from nbtoolkit.models import ensure_embedded_cache

            ensure_embedded_cache()
        self._upload(plan["uploads"], log)
        with tempfile.TemporaryDirectory(prefix="nbtoolkit-code-") as tmp:
            source_dir = build_source_dir(Path(tmp) / "code", job_json, tracking="NBTOOLKIT_TRACKING_URI" in self.env)
            _ship_custom_kind(spec.kind, source_dir)
            trainer = self.model_trainer(plan, source_dir)
            inputs = [InputData(channel_name=name, data_source=uri) for name, uri in plan["channels"].items()]
            self.aws.retrying("CreateTrainingJob", lambda: trainer.train(input_data_config=inputs, wait=False,
                                                                         logs=False), role=self.role)
        job = trainer._latest_training_job
        return {"name": job.training_job_name, "arn": getattr(job, "training_job_arn", None)}


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the plan


# GPU bytes per parameter the worker needs, roughly: full fine-tuning keeps fp32 weights, gradients and two Adam
# states; LoRA, RFT with LoRA and evaluation keep the weights and small adapters. 20% more for activations.
BYTES_PER_PARAMETER = {"sft_full": 16, "sft_lora": 4, "rft_lora": 6, "eval": 4}
ACTIVATION_HEADROOM = 1.2


def _model_parameters(spec: JobSpec, uploads: dict[str, str]) -> int | None:
    """Parameters of a model uploaded from a directory (weights size / dtype size); None when unknown."""
    from nbtoolkit.models import resolve_model

    directory = next((Path(p) for p, uri in uploads.items() if uri.endswith("/data/model")), None)
    if directory is None:
        return None
    model = resolve_model(spec.model)
    if model.kind == "embedded" and model.parameters:
        return int(model.parameters)
    weights = [f for pattern in ("*.safetensors", "*.bin") for f in directory.glob(pattern)]
    if not weights:
        return None
    config = read_json(directory / "config.json", {}) or {}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return sum(f.stat().st_size for f in weights) // (2 if "16" in dtype else 4)


def _check_gpu_memory(spec: JobSpec, parameters: int | None, instance_type: str) -> Check | None:
    """Does the model fit one GPU of the instance for this kind of job (the worker uses one GPU)?"""
    from nbtoolkit.aws.validation import GPU_INSTANCES

    accelerator = GPU_INSTANCES.get(instance_type)
    per_parameter = BYTES_PER_PARAMETER.get(spec.kind)
    if parameters is None or accelerator is None or per_parameter is None:
        return None
    per_gpu = accelerator.gpu_memory_gb / accelerator.gpus
    need = parameters * per_parameter * ACTIVATION_HEADROOM / 1e9
    if need <= per_gpu:
        return Check("gpu memory", True, f"about {need:.1f} GB for {spec.kind} of {parameters / 1e6:,.0f}M "
                     f"parameters; {instance_type} has {per_gpu:.0f} GB per GPU")
    # The smallest instance (fewest GPUs, then least memory) whose GPUs are large enough.
    bigger = sorted((a.gpus, a.gpu_memory_gb / a.gpus, name) for name, a in GPU_INSTANCES.items()
                    if a.gpu_memory_gb / a.gpus >= need)
    hint = f", e.g. {bigger[0][2]} ({bigger[0][1]:.0f} GB per GPU)" if bigger else " (no single GPU is that large)"
    advice = ", or LoRA instead of full fine-tuning" if spec.kind == "sft_full" else ""
    return Check("gpu memory", False, f"{spec.kind} of {parameters / 1e9:.1f}B parameters needs about {need:.0f} GB "
                 f"on one GPU; {instance_type} has {per_gpu:.0f} GB ({accelerator.gpu}): pick a larger GPU{hint}"
                 f"{advice}")


def check_config_platform(config: Any, platform: str, why: str) -> Check:
    """The config's bounds hold and it was made for `platform` (local trainer or Nova recipe)."""
    try:
        type(config).from_dict(config.to_dict())  # re-runs the bounds
    except ValueError as error:
        return Check("config", False, str(error))
    if config.platform != platform:
        return Check("config", False, f"platform={config.platform!r}: {why}; use "
                     f"{type(config).__name__}.for_platform({platform!r}, ...)")
    changed = ", ".join(f"{k}={v}" for k, v in config.changed().items()) or "defaults"
    return Check("config", True, f"{config.METHOD} {platform} ({changed})")


def hf_training_image(region: str) -> str:
    """The Hugging Face PyTorch GPU training image URI of `region`, read from the SageMaker SDK's image table
    (the table sagemaker.core.image_uris.retrieve reads, without importing the SDK)."""
    import importlib.util

    found = importlib.util.find_spec("sagemaker")
    if found is None or not found.submodule_search_locations:
        raise ImportError("the SageMaker Python SDK is not installed: pip install -e '.[aws]'")
    table = Path(list(found.submodule_search_locations)[0]) / "core" / "image_uri_config" / "huggingface.json"
    versions = json.loads(table.read_text())["training"]["versions"][HF_IMAGE["version"]]
    entry = versions[HF_IMAGE["base_framework_version"]]
    account = entry["registries"].get(region)
    if account is None:
        raise ValueError(f"the Hugging Face training image is not published in {region}")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    pytorch = HF_IMAGE["base_framework_version"].removeprefix("pytorch")
    tag = (f"{pytorch}-transformers{HF_IMAGE['version']}-gpu-{HF_IMAGE['py_version']}-"
           f"{entry['container_version']['gpu']}")
    return f"{account}.dkr.ecr.{region}.{domain}/{entry['repository']}:{tag}"


def hyperparameters_for(spec: JobSpec) -> dict[str, str]:
    """The training job's hyperparameters: the config's fields as strings (the container applies them over
    job.json, so a job cloned in the console with other values trains with those) plus the job's kind and name."""
    values: dict[str, str] = {"nbt_kind": spec.kind, "nbt_job": spec.name or spec.kind}
    if spec.config is not None:
        for key, value in spec.config.to_dict().items():
            if key == "platform":
                continue
            values[key] = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return values


_SECRET_NAME = re.compile(r"(?i)(token|secret|passw(or)?d|api[_-]?key|credential)")


def _redacted_env(env: dict[str, str]) -> dict[str, str]:
    """Container variables as job.json records them: values of secret-looking names (HF_TOKEN, ...) redacted;
    the training job itself gets the values."""
    from nbtoolkit.aws.session import REDACTED

    return {k: REDACTED if _SECRET_NAME.search(k) else v for k, v in env.items()}


def _walk_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_strings(key)
            yield from _walk_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk_strings(item)


def _embedded_dir() -> Path:
    from nbtoolkit.models import embedded_cache_dir

    return Path(embedded_cache_dir())


def _custom_module_files(kind: str) -> list[tuple[Path, str]]:
    """(file, relative path in the code directory) for a custom kind's module and its packages' __init__ files."""
    import importlib.util

    module, _, _ = kind.rpartition(":")
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        return [(path, f"nbt_user/{path.name}")]
    if module.split(".")[0] == "nbtoolkit":
        return []
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise ImportError(f"cannot find module {module!r} of job kind {kind!r}")
    origin = Path(spec.origin).resolve()
    parts = module.split(".")
    root = origin.parents[len(parts) - 1] if origin.name != "__init__.py" else origin.parents[len(parts)]
    files = [(origin, origin.relative_to(root).as_posix())]
    for depth in range(1, len(parts)):
        init = root.joinpath(*parts[:depth], "__init__.py")
        if init.is_file():
            files.append((init, init.relative_to(root).as_posix()))
    return files


def _check_custom_kind(kind: str) -> Check:
    from nbtoolkit.runtime.worker import load_job_function

    try:
        function = load_job_function(kind)
        files = _custom_module_files(kind)
    except Exception as error:  # noqa: BLE001 - any import problem is the user's to see
        return Check("job function", False, f"cannot load {kind}: {type(error).__name__}: {error}")
    shipped = ", ".join(rel for _, rel in files) or "part of nbtoolkit"
    return Check("job function", True, f"{kind} ({function.__module__}.{function.__qualname__}; shipped: {shipped})")


def _ship_custom_kind(kind: str, source_dir: Path) -> None:
    """Copy a custom kind's module into the code directory and point job.json at the copy."""
    if kind in BUILTIN_KINDS:
        return
    files = _custom_module_files(kind)
    for path, relative in files:
        target = source_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    module, _, function = kind.rpartition(":")
    if module.endswith(".py"):
        job_file = source_dir / "job.json"
        job = json.loads(job_file.read_text())
        job["kind"] = f"nbt_user.{Path(module).stem}:{function}"
        (source_dir / "nbt_user" / "__init__.py").touch()
        job_file.write_text(json.dumps(job, indent=2))


# ---------------------------------------------------------------------------------------------------------------
# Jobs


class CloudWatchMirror:
    """Copies a training job's CloudWatch log events into the local run directory, incrementally.

    The first stream (algo-1, the leader) feeds log.txt (NBT_LOG lines), metrics.jsonl (NBT_METRIC lines) and
    progress.json; every line of every stream goes to stdout.log. Read positions live in cloudwatch.json.
    """

    def __init__(self, aws: AwsSession, run_dir: Path, job_name: str) -> None:
        self.aws = aws
        self.run_dir = run_dir
        self.job_name = job_name

    def sync(self) -> int:
        """Fetch new events; returns how many lines were added. No log group yet means no lines yet."""
        state = read_json(self.run_dir / CLOUDWATCH_FILE, {})
        tokens = state.setdefault(self.job_name, {})
        try:
            streams = self._streams()
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return 0
            raise
        added = 0
        for index, stream in enumerate(streams):
            token = tokens.get(stream)
            while True:
                params = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if token:
                    params["nextToken"] = token
                response = self.aws.call("logs", "get_log_events", **params)
                events = response.get("events", [])
                self._route([e.get("message", "") for e in events], leader=index == 0,
                            stream=stream if len(streams) > 1 else None)
                added += len(events)
                new_token = response.get("nextForwardToken")
                if not events or new_token == token:
                    token = new_token or token
                    break
                token = new_token
            tokens[stream] = token
        write_json_atomic(self.run_dir / CLOUDWATCH_FILE, state)
        return added

    def _streams(self) -> list[str]:
        names, token = [], None
        while True:
            params = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/"}
            if token:
                params["nextToken"] = token
            response = self.aws.call("logs", "describe_log_streams", **params)
            names += [s["logStreamName"] for s in response.get("logStreams", [])]
            token = response.get("nextToken")
            if not token:
                return sorted(names, key=_host_order)

    def _route(self, lines: list[str], *, leader: bool, stream: str | None) -> None:
        logs, metrics, other = [], [], []
        progress = None
        for raw in lines:
            for line in self.aws.scrub(raw).splitlines() or [""]:
                if leader and line.startswith(LOG_PREFIX):
                    logs.append(line[len(LOG_PREFIX):])
                elif leader and line.startswith(METRIC_PREFIX):
                    try:
                        metrics.append(json.dumps(json.loads(line[len(METRIC_PREFIX):])))
                    except ValueError:
                        other.append(line)
                elif leader and line.startswith(PROGRESS_PREFIX):
                    try:
                        progress = json.loads(line[len(PROGRESS_PREFIX):])
                    except ValueError:
                        other.append(line)
                elif line.startswith(STATUS_PREFIX):
                    continue  # the status comes from DescribeTrainingJob
                else:
                    other.append(f"[{stream}] {line}" if stream else line)
        for name, rows in ((LOG_FILE, logs), (METRICS_FILE, metrics), (STDOUT_FILE, other)):
            if rows:
                with open(self.run_dir / name, "a", encoding="utf-8") as handle:
                    handle.write("\n".join(rows) + "\n")
        if progress is not None:
            write_json_atomic(self.run_dir / PROGRESS_FILE, progress)


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
            reason = "cancelled"
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
        """Copy new CloudWatch lines of every attempt into the run directory; returns how many were added.
        Calls closer than LOG_SYNC_INTERVAL seconds apart (a monitor thread and wait() polling together) skip the
        fetch unless force=True; one lock per run directory keeps two threads from appending the same lines."""
        key = str(self.run_dir)
        with _SYNC_LOCKS.setdefault(key, threading.Lock()):
            now = time.monotonic()
            if not force and now - _LAST_SYNC.get(key, -1e9) < LOG_SYNC_INTERVAL:
                return 0
            _LAST_SYNC[key] = now
            added = 0
            for job in self.info.get("jobs") or []:
                if job.get("name") and self.info.get("backend") != "hyperpod":
                    try:
                        added += CloudWatchMirror(self.aws, self.run_dir, job["name"]).sync()
                    except AwsError as error:
                        RunLog(self.run_dir, echo=None).warning(f"could not read CloudWatch logs: {error}")
                        break
            return added

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
        from nbtoolkit.aws.validation import parse_s3_uri

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
        colour = {COMPLETED: "#1a7f37", FAILED: "#cf222e"}.get(status.state, "#9a6700")
        bar = progress_html(self.run_dir, self.progress())
        reason = f" - {html.escape(status.reason)}" if status.reason else ""
        secondary = f" / {html.escape(status.secondary)}" if status.secondary else ""
        url = self.console_url()
        link = f' <a href="{html.escape(url)}" target="_blank">console</a>' if url else ""
        return (f'<div class="nbt-job" style="border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;'
                f'display:inline-block;font-size:13px"><b>{html.escape(self.name)}</b> '
                f'<span style="color:#57606a">{html.escape(self.spec.kind)} on SageMaker</span> '
                f'<span style="color:{colour};font-weight:bold">{status.state}</span>{reason}{bar}'
                f'<br><span style="color:#57606a">{html.escape(str(status.sagemaker_status))}{secondary} · '
                f'{html.escape(str(self.training_job_name))}</span>{link}'
                f'<br><code>{html.escape(str(self.run_dir))}</code></div>')

    def _alive(self, pid: int) -> bool:  # no local process behind a SageMaker job
        return False


def _host_order(stream: str) -> tuple[int, str]:
    """Sort key of a log stream "<job>/algo-<n>-<timestamp>": algo-1 (the leader) first."""
    parts = stream.rsplit("/", 1)[-1].split("-")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1_000_000, stream)


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

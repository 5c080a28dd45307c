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
import secrets
import sys
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from nbtoolkit.aws.container import (
    CHECKPOINT_LOCAL_PATH,
    check_custom_kind,
    check_gpu_memory,
    embedded_dir,
    hf_training_image,
    hyperparameters_for,
    model_parameters,
    redacted_env,
    ship_custom_kind,
    walk_strings,
)
from nbtoolkit.aws.entrypoint import METRIC_PREFIX, container_path
from nbtoolkit.aws.errors import CREDENTIALS_HELP, AwsError, MissingCredentials, translate
from nbtoolkit.aws.job import CONTAINER_RUN_DIR, SAGEMAKER_FILE, SageMakerJob
from nbtoolkit.aws.packaging import ENTRY_SCRIPT, REQUIREMENTS_FILE, build_source_dir
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
    parse_s3_uri,
)
from nbtoolkit.errors import ModelError
from nbtoolkit.models import embedded_cache_dir, ensure_embedded_cache, model_path, resolve_model
from nbtoolkit.runtime.checks import (
    Check,
    DryRunReport,
    LaunchError,
    check_config,
    check_data,
    check_labels,
    check_rows,
)
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    LOG_FILE,
    METRICS_FILE,
    STATUS_FILE,
    RunLog,
    new_run_dir,
    read_json,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.local import Job
from nbtoolkit.runtime.progress import METRIC_KEYS
from nbtoolkit.runtime.spec import BUILTIN_KINDS, JobSpec, job_record, write_job_record
from nbtoolkit.runtime.status import WORKER_MODULE


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
            command = [sys.executable.rsplit("/", 1)[-1], "-m", WORKER_MODULE, CONTAINER_RUN_DIR]
            job_json = self._job_json(spec, files, run_id, attempt, resume_from is not None, plan)
            plan.setdefault("hyperparameters", hyperparameters_for(spec))
        uris = [u for u in walk_strings(plan) if u.startswith("s3://")]
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
            checks.append(check_custom_kind(spec.kind))
        config = spec.config
        if config is not None:
            checks.append(check_config(config, "local", "an open model trains with the local trainer in the "
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
        memory_check = check_gpu_memory(spec, model_parameters(spec, uploads), self.instance_type)
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
            data_check, rows = check_data(what, value, spec, platform="local")
            checks.append(data_check)
            path = Path(value).expanduser().resolve()
            channels[channel] = self.s3_uri(run_id, "data", channel)
            uploads[str(path)] = self.s3_uri(run_id, "data", channel, path.name)
            files[what] = container_path(channel, path.name)
            if what == "train_file" and data_check.ok and spec.kind != "eval":
                rows_check = check_rows(spec, rows)
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
        labels_check = check_labels(spec)
        if labels_check is not None:
            checks.append(labels_check)
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
                "environment": redacted_env(self.env)}
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
            document = json.loads(unquote(document))
        text = json.dumps(document)
        if "sagemaker.amazonaws.com" not in text:
            return Check("role access", False, f"role {name} does not trust sagemaker.amazonaws.com: add it to the "
                         "role's trust policy (Principal Service sagemaker.amazonaws.com, Action sts:AssumeRole)")
        return Check("role access", True, f"{name} exists and trusts SageMaker")

    def _job_json(self, spec: JobSpec, files: dict[str, str], run_id: str, attempt: int, resume: bool,
                  plan: dict[str, Any]) -> dict[str, Any]:
        """job.json as the container reads it: container paths, the worker's fields, no credentials."""
        container_spec = spec
        general = {k.split(":", 1)[1]: v for k, v in files.items() if k.startswith("general:")}
        if general:
            container_spec = replace(spec, extra={**spec.extra, "general_data": general})
        files = {"model": files.get("model", spec.model), "train_file": files.get("train_file", spec.train_file),
                 "eval_file": files.get("eval_file", spec.eval_file)}
        return job_record(container_spec, files=files, attempt=attempt, resume=resume,
                          command=["python", "-m", WORKER_MODULE, CONTAINER_RUN_DIR], cwd=CONTAINER_RUN_DIR,
                          runtime={"backend": "sagemaker", "region": self.region, "bucket": self.bucket,
                                   "prefix": self.prefix, "run_id": run_id, "instance_type": self.instance_type,
                                   "instance_count": self.instance_count, "env": redacted_env(self.env)})

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
            raise MissingCredentials(f"cannot launch on SageMaker without AWS credentials; {CREDENTIALS_HELP} "
                                     "(launch(spec, dry_run=True) runs the offline checks)")
        if resume_from is not None and (Path(resume_from) / SAGEMAKER_FILE).is_file():
            SageMakerJob(resume_from, runtime=self).status()  # the remote state, not the last one seen
        new_dir = None
        if resume_from is None:
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
        else:
            run_dir = Path(resume_from).resolve()
            info = read_json(run_dir / SAGEMAKER_FILE)
        # The local job.json names the local files (what Job.attach and resume read); the container's is in S3.
        write_job_record(run_dir, report.job_json, spec=spec.to_dict(), model=spec.model, train_file=spec.train_file,
                         eval_file=spec.eval_file,
                         container_files={k: report.job_json.get(k) for k in ("model", "train_file", "eval_file")})
        attempt = report.job_json["attempt"]
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

        if any(Path(p) == embedded_dir() for p in plan["uploads"]):
            ensure_embedded_cache()
        self._upload(plan["uploads"], log)
        with tempfile.TemporaryDirectory(prefix="nbtoolkit-code-") as tmp:
            source_dir = build_source_dir(Path(tmp) / "code", job_json, tracking="NBTOOLKIT_TRACKING_URI" in self.env)
            ship_custom_kind(spec.kind, source_dir)
            trainer = self.model_trainer(plan, source_dir)
            inputs = [InputData(channel_name=name, data_source=uri) for name, uri in plan["channels"].items()]
            self.aws.retrying("CreateTrainingJob", lambda: trainer.train(input_data_config=inputs, wait=False,
                                                                         logs=False), role=self.role)
        job = trainer._latest_training_job
        return {"name": job.training_job_name, "arn": getattr(job, "training_job_arn", None)}

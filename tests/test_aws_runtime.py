"""SageMakerRuntime and SageMakerJob offline: moto for S3, IAM, SageMaker and CloudWatch Logs, botocore Stubber for
the status transitions moto does not model, and the container entry script run for real in a subprocess."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.stub import Stubber
from moto import mock_aws

from aws_for_tests import (
    ACCOUNT,
    FAKE_KEY_ID,
    FAKE_SECRET,
    REGION,
    allow_policy_simulation,
    capture,
    create_role,
    error,
    files_containing,
    publish_container_output,
    fake_run_dir,
    remove_credentials,
    run_container,
    run_entry,
    set_fake_credentials,
)
from nbtoolkit.aws import (
    AccessDenied,
    AwsSession,
    BucketNotFound,
    MissingCredentials,
    SageMakerJob,
    SageMakerRuntime,
    Throttled,
    map_status,
    scrub,
)
from nbtoolkit.aws.errors import translate
from nbtoolkit.aws.packaging import build_source_dir
from nbtoolkit.aws.container import hf_training_image
from nbtoolkit.aws.container import ship_custom_kind as _ship_custom_kind
from nbtoolkit.aws.job import SAGEMAKER_FILE
from nbtoolkit.aws.validation import (
    check_base_job_name,
    check_bucket,
    check_gpu_instance,
    check_lambda_arn,
    check_prefix,
    check_region,
    check_role_arn,
    parse_s3_uri,
)
from nbtoolkit.runtime import COMPLETED, FAILED, IN_PROGRESS, JobFailed, JobSpec, LaunchError
from nbtoolkit.runtime.events import JOB_FILE, STATUS_FILE
from nbtoolkit.training.config import SFTFullConfig, SFTLoraConfig

BUCKET = "nbt-test-bucket"
HF_TOKEN = "hf_containerOnlySecret0123456789"  # a container variable: sent to SageMaker, never written here
TESTS = Path(__file__).resolve().parent


def write_chat(path: Path, rows: int = 10) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": "HQ"}]}) + "\n"
                            for i in range(rows)))
    return path


def count_spec(train_file: Path, steps: int = 5, name: str = "count") -> JobSpec:
    config = SFTLoraConfig.for_platform("local", max_steps=steps, warmup_steps=1, save_steps=1)
    return JobSpec("jobs_for_tests:count", config=config, train_file=str(train_file), name=name,
                   extra={"sleep": 0.01})


def checks_of(report) -> dict:
    return {c.name: c for c in report.checks}


@pytest.fixture
def aws(monkeypatch, tmp_path):
    set_fake_credentials(monkeypatch)
    with mock_aws():
        boto = boto3.Session(region_name=REGION)
        boto.client("s3").create_bucket(Bucket=BUCKET)
        allow_policy_simulation(boto)
        role = create_role(boto)
        runtime = SageMakerRuntime(role=role, bucket=BUCKET, prefix="exp", boto_session=boto,
                                   instance_type="ml.g5.2xlarge", runs_dir=tmp_path / "runs",
                                   env={"NBT_TEST": "1", "HF_TOKEN": HF_TOKEN}, max_runtime_hours=2)
        yield SimpleNamespace(boto=boto, role=role, runtime=runtime, train=write_chat(tmp_path / "train.jsonl"))


# ---------------------------------------------------------------------------------------------------------------
# Offline validation


def test_offline_checks_name_what_is_wrong():
    assert check_role_arn("arn:aws:iam::123456789012:role/service-role/SageMakerExecution") is None
    assert "role name" in check_role_arn("SageMakerExecution")
    assert "12-digit" in check_role_arn("arn:aws:iam::1234:role/x")
    assert check_bucket("my-bucket.data") is None
    assert "lowercase" in check_bucket("My_Bucket")
    assert "without s3://" in check_bucket("s3://bucket")
    assert check_prefix("a/b") is None and "slashes" in check_prefix("/a/")
    assert parse_s3_uri("s3://bucket/a/b.jsonl") == ("bucket", "a/b.jsonl")
    with pytest.raises(ValueError, match="not an S3 URI"):
        parse_s3_uri("bucket/a")
    assert check_region("eu-west-2") is None and "region" in check_region("Europe")
    assert check_base_job_name("sft-lora") is None
    assert "15-character timestamp" in check_base_job_name("x" * 44) and check_base_job_name("x" * 43) is None
    assert check_gpu_instance("ml.g5.2xlarge", 1) is None
    assert "did you mean 'ml.g5.2xlarge'" in check_gpu_instance("ml.g5.2xlarg", 1)
    assert "no NVIDIA GPU" in check_gpu_instance("ml.m5.xlarge", 1)
    assert "instance_count" in check_gpu_instance("ml.g5.2xlarge", 0)
    assert check_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:reward") is None
    assert "Lambda function ARN" in check_lambda_arn("reward")


def test_hf_image_matches_the_sdk():
    from sagemaker.core import image_uris

    expected = image_uris.retrieve("huggingface", region="eu-west-1", version="5.3.0",
                                   base_framework_version="pytorch2.9.0", py_version="py312",
                                   instance_type="ml.g5.2xlarge", image_scope="training")
    assert hf_training_image("eu-west-1") == expected


def test_dry_run_without_credentials_is_offline_and_creates_nothing(monkeypatch, tmp_path):
    remove_credentials(monkeypatch)
    train = write_chat(tmp_path / "train.jsonl")
    runs = tmp_path / "runs"
    bad = SageMakerRuntime(role="SageMakerRole", bucket="Bad_Bucket", region="us-east-1",
                           instance_type="ml.m5.xlarge", runs_dir=runs, env={"AWS_SECRET_ACCESS_KEY": "x"})
    report = bad.launch(count_spec(train, name="x" * 50), dry_run=True)
    checks = checks_of(report)
    assert not report.ok
    assert not checks["role"].ok and "role name" in checks["role"].detail
    assert not checks["s3 location"].ok and not checks["instances"].ok and not checks["job name"].ok
    assert not checks["environment"].ok and "AWS_SECRET_ACCESS_KEY" in checks["environment"].detail
    assert checks["aws access"].ok and "fix the offline checks first" in checks["aws access"].detail

    good = SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole", bucket="nbt-bucket",
                            region="us-east-1", runs_dir=runs)
    report = good.launch(count_spec(train), dry_run=True)
    assert report.ok, str(report)
    assert "no AWS credentials" in checks_of(report)["aws access"].detail
    plan = report.plan
    assert plan["image"].startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:")
    assert plan["channels"]["train"].startswith("s3://nbt-bucket/nbtoolkit/count-")
    assert report.job_json["train_file"] == "/opt/ml/input/data/train/train.jsonl"
    assert plan["hyperparameters"]["max_steps"] == "5" and plan["hyperparameters"]["nbt_kind"] == "jobs_for_tests:count"
    with pytest.raises(MissingCredentials, match="aws configure"):
        good.launch(count_spec(train))
    assert not runs.exists()


def test_a_model_too_big_for_the_gpu_is_refused_offline(monkeypatch, tmp_path):
    remove_credentials(monkeypatch)
    model = tmp_path / "big-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    with open(model / "model.safetensors", "wb") as handle:
        handle.truncate(14 * 10**9)  # sparse: 7B bf16 parameters by size, no disk used
    train = write_chat(tmp_path / "train.jsonl")
    runtime = SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/R", bucket="nbt-bucket", region="us-east-1",
                               instance_type="ml.g5.2xlarge", runs_dir=tmp_path / "runs")

    def memory(kind, config):
        spec = JobSpec(kind, config, model=str(model), train_file=str(train), name="big")
        return checks_of(runtime.launch(spec, dry_run=True))["gpu memory"]

    full = memory("sft_full", SFTFullConfig.for_platform("local"))
    assert not full.ok and "7.0B parameters needs about 134 GB" in full.detail
    assert "ml.g5.2xlarge has 24 GB" in full.detail
    assert "e.g. ml.p5e.48xlarge (141 GB per GPU), or LoRA instead" in full.detail
    lora = memory("sft_lora", SFTLoraConfig.for_platform("local"))
    assert not lora.ok and "e.g. ml.g6e" in lora.detail  # 34 GB: an L40S (48 GB) fits, an A10G does not


def test_builtin_kinds_need_one_instance_and_local_configs(monkeypatch, tmp_path):
    remove_credentials(monkeypatch)
    train = write_chat(tmp_path / "train.jsonl")
    runtime = SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/R", bucket="nbt-bucket", region="us-east-1",
                               instance_count=2, runs_dir=tmp_path / "runs")
    spec = JobSpec("sft_lora", SFTLoraConfig.for_platform("nova"), model="nbtoolkit-tiny-missing",
                   train_file=str(train), name="sft")
    checks = checks_of(runtime.launch(spec, dry_run=True))
    assert "one process on one instance" in checks["instances"].detail
    assert "for_platform('local'" in checks["config"].detail
    assert not checks["model"].ok


def test_dry_run_with_credentials_checks_role_and_bucket(aws):
    report = aws.runtime.launch(count_spec(aws.train), dry_run=True)
    checks = checks_of(report)
    assert report.ok, str(report)
    assert checks["credentials"].detail == f"account {ACCOUNT}"
    assert "trusts SageMaker" in checks["role access"].detail and checks["bucket"].ok

    lambda_role = create_role(aws.boto, "LambdaOnly", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "lambda.amazonaws.com"}}]})
    runtime = SageMakerRuntime(role=lambda_role, bucket="no-such-bucket-nbt", boto_session=aws.boto,
                               runs_dir=aws.runtime.runs_dir)
    checks = checks_of(runtime.launch(count_spec(aws.train), dry_run=True))
    assert "does not trust sagemaker.amazonaws.com" in checks["role access"].detail
    assert not checks["bucket"].ok and "does not exist" in checks["bucket"].detail
    missing = SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/Nobody", bucket=BUCKET, boto_session=aws.boto)
    assert "does not exist" in checks_of(missing.launch(count_spec(aws.train), dry_run=True))["role access"].detail
    with pytest.raises(LaunchError, match="role access"):
        missing.launch(count_spec(aws.train))


# ---------------------------------------------------------------------------------------------------------------
# Launch: the exact request, then the container, logs, metrics and artifacts


def test_launch_sends_the_exact_training_job_request(aws):
    sent = capture(aws.boto, "sagemaker", "CreateTrainingJob")
    job = aws.runtime.launch(count_spec(aws.train))
    assert len(sent) == 1
    request = sent[0]
    run_id = json.loads((job.run_dir / SAGEMAKER_FILE).read_text())["run_id"]
    base = f"s3://{BUCKET}/exp/{run_id}"
    name = request["TrainingJobName"]
    assert name.startswith("count-") and job.training_job_name == name
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == hf_training_image(REGION)
    assert spec["ContainerEntrypoint"] == ["/bin/bash"] and "sm_train.sh" in spec["ContainerArguments"][-1]
    assert {m["Name"] for m in spec["MetricDefinitions"]} >= {"loss", "lr", "reward_mean"}
    assert request["RoleArn"] == aws.role
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["train"] == f"{base}/data/train"
    assert channels["code"] == f"{base}/{name}/input/code"
    assert channels["sm_drivers"] == f"{base}/{name}/input/sm_drivers"
    assert request["OutputDataConfig"]["S3OutputPath"] == f"{base}/output"
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": f"{base}/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    hyperparameters = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert hyperparameters["max_steps"] == "5" and hyperparameters["lr"] == "0.0002"
    assert hyperparameters["target_modules"].startswith('["q_proj"')
    assert request["Environment"] == {"NBT_TEST": "1", "HF_TOKEN": HF_TOKEN, "NBT_RUN_ID": run_id}
    assert {"Key": "nbtoolkit:run", "Value": run_id} in request["Tags"]

    s3 = aws.boto.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"exp/{run_id}/")["Contents"]}
    code = f"exp/{run_id}/{name}/input/code/"
    assert f"exp/{run_id}/data/train/train.jsonl" in keys
    assert {code + p for p in ("nbt_entry.py", "job.json", "requirements.txt", "nbtoolkit/runtime/worker.py",
                               "jobs_for_tests.py")} <= keys
    container_job = json.loads(s3.get_object(Bucket=BUCKET, Key=code + "job.json")["Body"].read())
    assert container_job["train_file"] == "/opt/ml/input/data/train/train.jsonl"
    requirements = s3.get_object(Bucket=BUCKET, Key=code + "requirements.txt")["Body"].read().decode()
    assert "transformers==" in requirements and "torch" not in requirements
    local_job = json.loads((job.run_dir / JOB_FILE).read_text())
    assert local_job["train_file"] == str(aws.train) and local_job["runtime"]["backend"] == "sagemaker"
    assert local_job["runtime"]["env"] == {"NBT_TEST": "1", "HF_TOKEN": "[REDACTED]"}
    assert HF_TOKEN not in json.dumps(container_job) and files_containing(job.run_dir, HF_TOKEN) == []


def test_job_runs_the_worker_in_the_container_and_comes_home(aws, tmp_path):
    sent = capture(aws.boto, "sagemaker", "CreateTrainingJob")
    job = aws.runtime.launch(count_spec(aws.train, steps=5))
    request = sent[0]
    # The "container": the entry script with SageMaker's environment; a hyperparameter changed as in the console.
    code, lines, model_dir = run_container(aws.boto, request, tmp_path / "container",
                                           hyperparameters={**request["HyperParameters"], "max_steps": "3"})
    assert code == 0, "\n".join(lines[-30:])
    assert any(line.startswith("NBT_METRIC ") for line in lines)
    assert "hyperparameters max_steps=3" in "\n".join(lines)
    description = aws.boto.client("sagemaker").describe_training_job(TrainingJobName=request["TrainingJobName"])
    publish_container_output(aws.boto, request["TrainingJobName"],
                             lines + [f"debug: key {FAKE_KEY_ID} aws_secret_access_key={FAKE_SECRET}"], model_dir,
                             description["ModelArtifacts"]["S3ModelArtifacts"])

    attached = SageMakerJob.attach(job.run_dir, boto_session=aws.boto)
    result = attached.wait(progress=False, poll=0)
    assert result.ok and result.status == COMPLETED
    history = attached.metrics()
    assert list(history["step"]) == [1, 2, 3]  # the hyperparameter, not job.json's 5, ran
    assert result.metrics["steps_done"] == 3
    assert result.model_dir == job.run_dir / "model" and (result.model_dir / "weights.txt").read_text() == "3"
    assert "counting from 0 to 3" in attached.logs(50)
    assert (job.run_dir / "job.container.json").exists() and not (job.run_dir / "checkpoints").exists()
    assert json.loads((job.run_dir / JOB_FILE).read_text())["train_file"] == str(aws.train)
    status = attached.status()
    assert status.state == COMPLETED and status.sagemaker_status == "Completed" and status.transitions
    # No credential anywhere in the run directory, though the container log carried them.
    assert files_containing(job.run_dir, FAKE_KEY_ID, FAKE_SECRET, HF_TOKEN) == []
    assert "[REDACTED]" in (job.run_dir / "stdout.log").read_text()


def test_container_failure_reason_reaches_failure_file(monkeypatch, tmp_path):
    remove_credentials(monkeypatch)
    runtime = SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/R", bucket=BUCKET, region=REGION)
    spec = JobSpec("jobs_for_tests:crash", config=SFTLoraConfig.for_platform("local", max_steps=2, warmup_steps=1,
                                                                               save_steps=1),
                   train_file=str(write_chat(tmp_path / "train.jsonl")), name="crash")
    report = runtime.launch(spec, dry_run=True)
    code_dir = build_source_dir(tmp_path / "code", report.job_json)
    _ship_custom_kind(spec.kind, code_dir)
    code, lines, _ = run_entry({"code": code_dir, "train": tmp_path}, tmp_path / "container", "crash-1",
                               report.plan["hyperparameters"])
    assert code == 1
    assert (tmp_path / "container" / "output" / "failure").read_text() == \
        "nbtoolkit jobs_for_tests:crash job failed: ValueError: boom at step 2"


# ---------------------------------------------------------------------------------------------------------------
# Status transitions, failure, stop, resume (Stubber: moto completes every job at once)


def stub_job(job: SageMakerJob, responses: list[dict], *, stop: bool = False) -> Stubber:
    client = job.aws.client("sagemaker")
    stubber = Stubber(client)
    name = job.training_job_name
    for response in responses:
        stubber.add_response("describe_training_job", {
            "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {
                "InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
            "StoppingCondition": {"MaxRuntimeInSeconds": 7200}, "CreationTime": "2026-01-01T00:00:00Z",
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/missing/model.tar.gz"}, **response},
            {"TrainingJobName": name})
        if stop and response.get("TrainingJobStatus") == "InProgress":
            stubber.add_response("stop_training_job", {}, {"TrainingJobName": name})
            stop = False
    stubber.activate()
    return stubber


def transition(status: str, message: str) -> dict:
    return {"Status": status, "StartTime": "2026-01-01T00:00:00Z", "StatusMessage": message}


def test_status_follows_in_progress_to_completed(aws, capsys):
    job = SageMakerJob(fake_run_dir(aws.runtime, count_spec(aws.train)), runtime=aws.runtime)
    starting = [transition("Starting", "Preparing the instances for training")]
    training = starting + [transition("Training", "Training image download completed. Training in progress.")]
    stubber = stub_job(job, [
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting", "SecondaryStatusTransitions": starting},
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training", "SecondaryStatusTransitions": training},
        {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed",
         "SecondaryStatusTransitions": training + [transition("Completed", "Training job completed")]},
    ])
    first = job.status()
    assert (first.state, first.secondary, first.done) == (IN_PROGRESS, "Starting", False)
    result = job.wait(progress=True, poll=0, raise_on_failure=False)
    stubber.assert_no_pending_responses()
    printed = capsys.readouterr().out
    assert "Starting - Preparing the instances" in printed and "Training - Training image download" in printed
    assert result.status == COMPLETED
    saved = json.loads((job.run_dir / STATUS_FILE).read_text())
    assert saved["sagemaker_status"] == "Completed" and len(saved["transitions"]) == 3
    assert job.status().state == COMPLETED  # read from status.json: no more AWS calls (the stubber would fail)


def test_remote_failure_shows_failure_reason_and_keeps_local_state(aws):
    job = SageMakerJob(fake_run_dir(aws.runtime, count_spec(aws.train)), runtime=aws.runtime)
    stub_job(job, [{"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed",
                    "FailureReason": "AlgorithmError: CUDA out of memory, exit code 1"}])
    with pytest.raises(JobFailed, match="CUDA out of memory"):
        job.wait(progress=False, poll=0)
    status = json.loads((job.run_dir / STATUS_FILE).read_text())
    assert status["state"] == FAILED and "CUDA out of memory" in status["reason"]
    assert (job.run_dir / JOB_FILE).exists() and (job.run_dir / SAGEMAKER_FILE).exists()


def test_cancel_stops_the_training_job(aws):
    job = SageMakerJob(fake_run_dir(aws.runtime, count_spec(aws.train)), runtime=aws.runtime)
    stubber = stub_job(job, [{"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
                             {"TrainingJobStatus": "Stopping", "SecondaryStatus": "Stopping"}], stop=True)
    status = job.cancel()
    stubber.assert_no_pending_responses()
    assert status.state == IN_PROGRESS and status.reason == "stopping"
    assert map_status("Stopped") == (FAILED, True) and map_status("InProgress") == (IN_PROGRESS, False)
    assert map_status("Completed") == (COMPLETED, False) and map_status("Failed") == (FAILED, False)


def test_cli_checks_the_setup_and_follows_a_run(aws, capsys):
    from nbtoolkit.cli import main

    assert main(["sagemaker", "check", "--role", aws.role, "--bucket", BUCKET]) == 0
    assert "trusts SageMaker" in capsys.readouterr().out
    assert main(["sagemaker", "check", "--role", aws.role, "--bucket", "no-such-bucket-nbt"]) == 1
    assert "does not exist" in capsys.readouterr().out
    job = aws.runtime.launch(count_spec(aws.train))
    assert main(["sagemaker", "status", str(job.run_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"COMPLETED, {job.training_job_name}") and "Starting: Preparing" in printed


def test_resume_relaunches_with_the_same_checkpoints(aws):
    sent = capture(aws.boto, "sagemaker", "CreateTrainingJob")
    job = aws.runtime.launch(count_spec(aws.train))
    stubber = stub_job(job, [{"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"}])
    assert job.status().stopped
    stubber.deactivate()
    resumed = aws.runtime.launch(resume_from=job.run_dir)
    assert resumed.run_dir == job.run_dir and len(sent) == 2
    assert sent[1]["CheckpointConfig"] == sent[0]["CheckpointConfig"]
    assert sent[1]["TrainingJobName"] != sent[0]["TrainingJobName"]
    info = json.loads((job.run_dir / SAGEMAKER_FILE).read_text())
    assert [j["attempt"] for j in info["jobs"]] == [1, 2]
    code_key = sent[1]["InputDataConfig"]
    code_uri = next(c for c in code_key if c["ChannelName"] == "code")["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, key = parse_s3_uri(code_uri + "/job.json")
    container_job = json.loads(aws.boto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert container_job["attempt"] == 2 and container_job["resume"] is True
    with pytest.raises(LaunchError, match="resume"):
        aws.runtime.launch(resume_from=job.run_dir)  # attempt 2 is running (moto: completed)


# ---------------------------------------------------------------------------------------------------------------
# Faults


def test_throttling_is_retried_with_backoff_then_reported():
    waits = []
    session = AwsSession(region=REGION, boto_session=boto3.Session(
        region_name=REGION, aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET),
        sleep=waits.append, max_attempts=4, base_delay=1.0)
    client = session.client("sts")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_caller_identity", "ThrottlingException", "Rate exceeded", 400)
        stubber.add_client_error("get_caller_identity", "Throttling", "Rate exceeded", 400)
        stubber.add_response("get_caller_identity", {"Account": ACCOUNT, "Arn": "arn:aws:iam::1:user/x",
                                                     "UserId": "x"})
        assert session.account_id() == ACCOUNT
        assert len(waits) == 2 and 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 2.0
        for _ in range(4):
            stubber.add_client_error("get_caller_identity", "ThrottlingException", "Rate exceeded", 400)
        with pytest.raises(Throttled, match="throttling"):
            session.account_id()
    assert len(waits) == 5


def test_aws_errors_become_actionable_messages():
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "nope"}}, "PutObject")
    assert isinstance(translate(denied, "s3 upload", bucket="b"), AccessDenied)
    assert "s3:PutObject" in str(translate(denied, "s3 upload", bucket="b"))
    missing = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "HeadBucket")
    assert isinstance(translate(missing, "s3 head_bucket", bucket="b"), BucketNotFound)
    assert isinstance(translate(NoCredentialsError(), "sts"), MissingCredentials)
    assert scrub(f"id {FAKE_KEY_ID} secret={FAKE_SECRET}", [FAKE_SECRET]) == "id [REDACTED] secret=[REDACTED]"


def test_access_denied_at_launch_keeps_the_run_directory(aws):
    aws.boto.events.register("before-call.sagemaker.CreateTrainingJob", lambda **_: error(
        "AccessDeniedException", "User is not authorized to perform: iam:PassRole"))
    with pytest.raises(AccessDenied, match="iam:PassRole"):
        aws.runtime.launch(count_spec(aws.train))
    (run_dir,) = list(aws.runtime.runs_dir.iterdir())
    status = json.loads((run_dir / STATUS_FILE).read_text())
    assert status["state"] == FAILED and "iam:PassRole" in status["reason"]
    assert json.loads((run_dir / JOB_FILE).read_text())["spec"]["name"] == "count"
    assert files_containing(run_dir, FAKE_KEY_ID, FAKE_SECRET) == []
    status = SageMakerJob.attach(run_dir).status()  # read from the run directory, no AWS call
    assert status.state == FAILED and "iam:PassRole" in status.reason


def test_entrypoint_maps_channels_and_hyperparameters(tmp_path):
    from nbtoolkit.aws.entrypoint import apply_hyperparameters, localize

    env = {"SM_CHANNEL_TRAIN": str(tmp_path / "train")}
    assert localize("/opt/ml/input/data/train/a.jsonl", env) == str(tmp_path / "train" / "a.jsonl")
    assert localize("/opt/ml/input/data/eval/b.jsonl", env) == "/opt/ml/input/data/eval/b.jsonl"
    job = {"config": {"method": "sft_lora", **SFTLoraConfig.for_platform("local").to_dict()}}
    changed = apply_hyperparameters(job, {"lr": "0.0001", "max_steps": "50", "mixing": "false",
                                          "target_modules": '["q_proj"]', "nbt_kind": "sft_lora", "other": "1"})
    assert job["config"]["lr"] == 0.0001 and job["config"]["max_steps"] == 50
    assert job["config"]["target_modules"] == ["q_proj"] and "max_steps=50" in changed
    with pytest.raises(ValueError, match="save_steps"):
        apply_hyperparameters(job, {"max_steps": "5"})


def test_package_import_is_light():
    import subprocess

    code = ("import sys, nbtoolkit.aws, nbtoolkit.aws.entrypoint; "
            "print(sorted(m for m in ('boto3', 'sagemaker', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr

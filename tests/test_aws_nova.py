"""Nova jobs: offline plan checks, and the SDK's SFTTrainer / RLVRTrainer run against moto with SageMaker Hub's
Nova 2 Lite recipe content answered offline (aws_for_tests.install_nova_hub)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from aws_for_tests import (
    ACCOUNT,
    LAMBDA_TRUST,
    NOVA_RFT_IMAGE,
    NOVA_SFT_IMAGE,
    REGION,
    allow_policy_simulation,
    capture,
    create_role,
    emulate_lambda_invoke,
    install_nova_hub,
    remove_credentials,
    set_fake_credentials,
)
from nbtoolkit.aws import SageMakerJob, SageMakerRuntime, hyperpod_commands, monitor_commands, nova_hyperparameters
from nbtoolkit.aws.nova import data_mixing_kwargs, mix_from
from nbtoolkit.mixing import MIX_PRESETS, MixConfig
from nbtoolkit.runtime import JobSpec
from nbtoolkit.training.config import EvalConfig, RFTLoraConfig, SFTLoraConfig

BUCKET = "nbt-nova-bucket"
LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")
SYSTEM = "Classify the question as HQ, LQ_EDIT or LQ_CLOSE. Answer with the label only."
# The case study's overrides (docs/hyperparameters.md).
SFT_OVERRIDES = {"lr": 5e-6, "warmup_steps": 17, "max_steps": 100, "global_batch_size": 64, "max_length": 8192}
RFT_OVERRIDES = {"lr": 1e-5, "number_generation": 4, "max_new_tokens": 50, "kl_loss_coef": 0.02, "temperature": 1.0,
                 "ent_coeff": 0.01, "max_steps": 40, "save_steps": 30, "top_k": 5, "global_batch_size": 64}


def write_converse(path: Path, rows: int = 64) -> Path:
    path.write_text("".join(json.dumps({
        "schemaVersion": "bedrock-conversation-2024", "system": [{"text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"text": f"How do I sort a list in Python, case {i}?"}]},
                     {"role": "assistant", "content": [{"text": LABELS[i % 3]}]}]}) + "\n" for i in range(rows)))
    return path


def write_rft(path: Path, rows: int = 64) -> Path:
    path.write_text("".join(json.dumps({
        "id": f"q{i}", "messages": [{"role": "system", "content": SYSTEM},
                                    {"role": "user", "content": f"Why does my loop never end, case {i}?"}],
        "reference_answer": LABELS[i % 3]}) + "\n" for i in range(rows)))
    return path


def sft_spec(train: Path, **extra) -> JobSpec:
    return JobSpec("sft_lora", SFTLoraConfig.for_platform("nova", **SFT_OVERRIDES), model="nova-lite-2",
                   train_file=str(train), labels=LABELS, name="sft-nova", extra=extra)


def checks_of(report) -> dict:
    return {c.name: c for c in report.checks}


def offline_runtime(tmp_path, **kwargs) -> SageMakerRuntime:
    options = {"instance_type": "ml.p5.48xlarge", "instance_count": 4, **kwargs}
    return SageMakerRuntime(role=f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole", bucket=BUCKET, region=REGION,
                            runs_dir=tmp_path / "runs", **options)


def test_nova_hyperparameters_are_the_recipe_overrides(tmp_path):
    spec = sft_spec(write_converse(tmp_path / "c.jsonl"))
    assert nova_hyperparameters(spec) == {**SFT_OVERRIDES, "save_steps": 100, "alpha": 64, "lora_plus_lr_ratio": 1.0}
    rft = JobSpec("rft_lora", RFTLoraConfig.for_platform("nova", **RFT_OVERRIDES), model="nova-lite-2",
                  train_file=str(tmp_path / "r.jsonl"), labels=LABELS)
    hyperparameters = nova_hyperparameters(rft)
    assert {k: hyperparameters[k] for k in RFT_OVERRIDES} == RFT_OVERRIDES
    assert "reasoning_effort" not in hyperparameters  # null in the case study: left to the recipe


def test_nova_plan_checks_offline(monkeypatch, tmp_path):
    remove_credentials(monkeypatch)
    converse = write_converse(tmp_path / "converse.jsonl")
    report = offline_runtime(tmp_path).launch(sft_spec(converse), dry_run=True)
    assert report.ok, str(report)
    plan = report.plan
    assert plan["trainer"] == "SFTTrainer" and plan["model"] == "amazon.nova-2-lite-v1"
    assert plan["compute"] == {"mode": "training_job", "instance_type": "ml.p5.48xlarge", "instance_count": 4}
    assert plan["datasets"]["train"].endswith("/data/train/converse.jsonl")

    def failed(runtime, spec) -> dict:
        return {c.name: c.detail for c in runtime.launch(spec, dry_run=True).checks if not c.ok}

    assert "ml.p5.48xlarge, ml.p5en.48xlarge" in failed(offline_runtime(tmp_path, instance_type="ml.g5.2xlarge"),
                                                         sft_spec(converse))["compute"]
    assert "(1, 4, 8, 16, 32)" in failed(offline_runtime(tmp_path, instance_count=3), sft_spec(converse))["compute"]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "HQ"}]}) + "\n")
    assert "reads converse records" in failed(offline_runtime(tmp_path), sft_spec(chat))["train_file"]
    local = JobSpec("sft_lora", SFTLoraConfig.for_platform("local"), model="nova-lite-2", train_file=str(converse))
    assert "for_platform('nova'" in failed(offline_runtime(tmp_path), local)["config"]
    mixed = sft_spec(converse, mix=MixConfig(75, {"reasoning-instruction-following": 60, "rai": 40}).to_dict())
    assert "serverless or HyperPod" in failed(offline_runtime(tmp_path), mixed)["data mixing"]
    assert "model_package_group" in failed(offline_runtime(tmp_path, nova_compute="serverless"), mixed)["compute"]
    serverless = offline_runtime(tmp_path, nova_compute="serverless", model_package_group="nbt-models")
    report = serverless.launch(mixed, dry_run=True)
    assert report.ok and report.plan["backend"] == "nova_serverless"
    rft = JobSpec("rft_lora", RFTLoraConfig.for_platform("nova", **RFT_OVERRIDES), model="nova-pro",
                  train_file=str(write_rft(tmp_path / "rft.jsonl")), labels=LABELS, name="rft")
    problems = failed(offline_runtime(tmp_path), rft)
    assert "Nova 2 Lite only" in problems["model"] and "Lambda function ARN" in problems["reward lambda"]
    evaluation = JobSpec("eval", EvalConfig.for_platform("nova"), model="nova-lite-2", eval_file="s3://b/e.jsonl")
    assert "scorer" in failed(offline_runtime(tmp_path, instance_count=1), evaluation)


def test_mix_config_becomes_the_sdk_data_mixing_config():
    from sagemaker.train.data_mixing_config import DataMixingConfig

    mix = MIX_PRESETS["all-categories-50"]
    kwargs = data_mixing_kwargs(mix_from(mix.to_nova()))
    sdk = DataMixingConfig(**kwargs).to_hyperparameters()
    expected = {k: v for k, v in mix.to_nova().items() if v or k == "customer_data_percent"}
    assert {k: float(v) for k, v in sdk.items()} == expected
    assert data_mixing_kwargs(MixConfig.customer_only()) is None


@pytest.fixture
def nova(monkeypatch, tmp_path):
    set_fake_credentials(monkeypatch)
    with mock_aws():
        boto = boto3.Session(region_name=REGION)
        boto.client("s3").create_bucket(Bucket=BUCKET)
        allow_policy_simulation(boto)
        install_nova_hub(boto)
        role = create_role(boto)
        runtime = SageMakerRuntime(role=role, bucket=BUCKET, boto_session=boto, instance_type="ml.p5.48xlarge",
                                   instance_count=4, runs_dir=tmp_path / "runs")
        yield SimpleNamespace(boto=boto, role=role, runtime=runtime, tmp=tmp_path)


def channel(request: dict, name: str) -> dict:
    return next(c for c in request["InputDataConfig"] if c["ChannelName"] == name)["DataSource"]["S3DataSource"]


def test_nova_sft_runs_through_the_sdk_trainer(nova):
    sent = capture(nova.boto, "sagemaker", "CreateTrainingJob")
    job = nova.runtime.launch(sft_spec(write_converse(nova.tmp / "converse.jsonl")))
    assert isinstance(job, SageMakerJob) and len(sent) == 1
    request = sent[0]
    run_id = json.loads((job.run_dir / "sagemaker.json").read_text())["run_id"]
    assert request["TrainingJobName"].startswith("sft-nova-") and job.training_job_name == request["TrainingJobName"]
    assert request["AlgorithmSpecification"]["TrainingImage"] == NOVA_SFT_IMAGE
    assert request["RoleArn"] == nova.role
    assert channel(request, "train") == {"S3DataType": "Converse", "S3DataDistributionType": "FullyReplicated",
                                         "S3Uri": f"s3://{BUCKET}/nbtoolkit/{run_id}/data/train/converse.jsonl"}
    assert request["ResourceConfig"]["InstanceType"] == "ml.p5.48xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 4
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/nbtoolkit/{run_id}/output"
    hyperparameters = request["HyperParameters"]
    assert {k: hyperparameters[k] for k in SFT_OVERRIDES} == {k: str(v) for k, v in SFT_OVERRIDES.items()}
    assert hyperparameters["base_model"] == "nova-lite-2/prod" and hyperparameters["replicas"] == "4"
    recipe = channel(request, "recipe")["S3Uri"]
    bucket, key = recipe[5:].split("/", 1)
    rendered = nova.boto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert "global_batch_size: 64" in rendered and "warmup_steps: 17" in rendered
    # The job's output.tar.gz names the checkpoint in the Nova escrow bucket; result() reports it.
    checkpoint = "s3://customer-escrow-123456789012-smtj/sft-nova/step_100"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        manifest = json.dumps({"checkpoint_s3_bucket": checkpoint}).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    key = f"nbtoolkit/{run_id}/output/{request['TrainingJobName']}/output/output.tar.gz"
    nova.boto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=archive.getvalue())
    result = job.result()
    assert result.ok and result.paths["checkpoint_s3"] == checkpoint
    assert job.status().sagemaker_status == "Completed"


def test_nova_rft_verifies_the_reward_lambda_then_runs_rlvr(nova):
    from nbtoolkit.aws import deploy_reward_lambda

    invoked = emulate_lambda_invoke(nova.boto, nova.tmp)
    lambda_role = create_role(nova.boto, "RewardLambdaRole", LAMBDA_TRUST)
    arn = deploy_reward_lambda("nbt-reward", lambda_role, labels=LABELS, aws=nova.runtime.aws)
    sent = capture(nova.boto, "sagemaker", "CreateTrainingJob")
    spec = JobSpec("rft_lora", RFTLoraConfig.for_platform("nova", **RFT_OVERRIDES), model="nova-lite-2",
                   train_file=str(write_rft(nova.tmp / "rft.jsonl")), labels=LABELS, name="rft-nova",
                   extra={"reward_lambda_arn": arn})
    job = nova.runtime.launch(spec)
    assert invoked, "the reward Lambda was not invoked before the launch"
    assert all(len(event["samples"]) > 0 for event in invoked)
    request = sent[0]
    assert request["AlgorithmSpecification"]["TrainingImage"] == NOVA_RFT_IMAGE
    assert request["HyperParameters"]["reward_lambda_arn"] == arn
    assert request["HyperParameters"]["number_generation"] == "4" and request["HyperParameters"]["top_k"] == "5"
    assert channel(request, "train")["S3DataType"] == "S3Prefix"
    assert "verified on" in (job.run_dir / "log.txt").read_text()


def test_nova_rft_refuses_a_reward_lambda_that_fails_its_check(nova, tmp_path):
    from nbtoolkit.aws import deploy_reward_lambda

    emulate_lambda_invoke(nova.boto, nova.tmp)
    module = tmp_path / "flat_reward.py"
    module.write_text("def score(samples):\n    return [{'id': s['id'], 'aggregate_reward_score': 0.0} "
                      "for s in samples]\n")
    lambda_role = create_role(nova.boto, "RewardLambdaRole", LAMBDA_TRUST)
    arn = deploy_reward_lambda("nbt-flat", lambda_role, function=f"{module}:score", aws=nova.runtime.aws)
    sent = capture(nova.boto, "sagemaker", "CreateTrainingJob")
    spec = JobSpec("rft_lora", RFTLoraConfig.for_platform("nova", **RFT_OVERRIDES), model="nova-lite-2",
                   train_file=str(write_rft(nova.tmp / "rft.jsonl")), labels=LABELS, name="rft-flat",
                   extra={"reward_lambda_arn": arn})
    with pytest.raises(ValueError, match="not more than the wrong reply"):
        nova.runtime.launch(spec)
    assert sent == []
    (run_dir,) = list(nova.runtime.runs_dir.iterdir())
    assert "reward Lambda failed its check" in json.loads((run_dir / "status.json").read_text())["reason"]


def test_hyperpod_launch_runs_the_documented_cli_commands(nova, monkeypatch):
    """The HyperPod CLI and a cluster cannot run here: the SDK's own _train_hyperpod runs with its subprocess,
    cluster check and recipe writer replaced, and the commands it runs must be the ones we document."""
    import subprocess

    import sagemaker.train.base_trainer as base_trainer

    ran = []

    def fake_run(command, **kwargs):
        ran.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="NAME: sft-nova-hp-7f3a\n", stderr="")

    recipe = "fine-tuning/nova/sft-nova-abcd"
    monkeypatch.setattr(base_trainer.subprocess, "run", fake_run)
    monkeypatch.setattr(base_trainer, "validate_hyperpod_compute", lambda **_: None)
    monkeypatch.setattr(base_trainer.TrainDefaults, "verify_hyperpod_caller_permissions", lambda **_: None)
    monkeypatch.setattr(base_trainer, "get_hyperpod_recipe_path", lambda **_: recipe)
    monkeypatch.setattr(base_trainer, "get_hyperpod_training_image", lambda **_: NOVA_SFT_IMAGE.replace(
        "SM-TJ-", "SM-HP-"))
    runtime = SageMakerRuntime(role=nova.role, bucket=BUCKET, boto_session=nova.boto, instance_type="ml.p5.48xlarge",
                               instance_count=4, runs_dir=nova.tmp / "hp", nova_compute="hyperpod",
                               hyperpod_cluster="nova-cluster", hyperpod_namespace="kubeflow")
    job = runtime.launch(sft_spec(write_converse(nova.tmp / "converse.jsonl")))
    assert ran == hyperpod_commands("nova-cluster", "kubeflow", recipe, instance_type="ml.p5.48xlarge",
                                    image=NOVA_SFT_IMAGE.replace("SM-TJ-", "SM-HP-"))
    assert job.training_job_name == "sft-nova-hp-7f3a"
    assert "hyperpod get-job --job-name sft-nova-hp-7f3a" in (job.run_dir / "log.txt").read_text()
    assert monitor_commands("sft-nova-hp-7f3a")["cancel"] == [
        "hyperpod", "cancel-job", "--job-name", "sft-nova-hp-7f3a", "--namespace", "kubeflow"]

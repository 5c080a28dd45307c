"""Offline AWS for the nbtoolkit.aws tests: moto plus the few calls moto does not model, answered at the botocore
level (IAM policy simulation, SageMaker Hub content for Nova, Lambda invocation of the packaged zip), and a stand-in
for what a SageMaker training container does with a job (run the entry script, ship logs and model.tar.gz)."""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from botocore.awsrequest import AWSResponse

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
# Fake credentials with the shape of real ones, so a leak into any file is easy to find.
FAKE_KEY_ID = "AKIAZZZZFAKEKEY12345"
FAKE_SECRET = "fakeSecretAccessKeyThatMustNeverBeWritten01"
SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                           "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "lambda.amazonaws.com"}}]}
HUB_BUCKET = "jumpstart-cache-prod-us-east-1"
NOVA_2_LITE_HUB = "nova-textgeneration-lite-v2"
NOVA_SFT_IMAGE = "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest"
NOVA_RFT_IMAGE = "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest"


def set_fake_credentials(monkeypatch) -> None:
    """Credentials only from the environment (no profile, no instance metadata)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def remove_credentials(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def response(body: dict, status: int = 200):
    """What a botocore before-call handler returns to answer a call itself."""
    return AWSResponse("https://aws.test", status, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": status}}


def error(code: str, message: str, status: int = 400):
    return response({"Error": {"Code": code, "Message": message}}, status)


def allow_policy_simulation(boto_session) -> None:
    """iam:SimulatePrincipalPolicy (which the SDK uses to validate the role) answered 'allowed'."""

    def simulate(params, **_):
        actions = [v for k, v in params["body"].items() if k.startswith("ActionNames.member.")]
        return response({"IsTruncated": False, "EvaluationResults": [
            {"EvalActionName": a, "EvalDecision": "allowed", "EvalResourceName": "*"} for a in actions]})

    boto_session.events.register("before-call.iam.SimulatePrincipalPolicy", simulate)


def create_role(boto_session, name: str = "SageMakerRole", trust: dict = SAGEMAKER_TRUST) -> str:
    return boto_session.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
        "Role"]["Arn"]


def capture(boto_session, service: str, operation: str) -> list[dict]:
    """Every request `operation` sends, as the API parameters (after the SDK built them)."""
    sent: list[dict] = []
    boto_session.events.register(f"provide-client-params.{service}.{operation}",
                                 lambda params, **_: sent.append(json.loads(json.dumps(params, default=str))))
    return sent


# ---------------------------------------------------------------------------------------------------------------
# SageMaker Hub content for Nova 2 Lite: the recipe layout of the published recipes (sagemaker-hyperpod-recipes,
# nova_lite_2_0_p5_gpu_lora_sft.yaml and nova_lite_v2_smtj_p5_p5en_gpu_lora_rft.yaml) with {{placeholders}}.

SFT_TEMPLATE = """run:
  name: {{name}}
  model_type: amazon.nova-2-lite-v1:0:256k
  model_name_or_path: nova-lite-2/prod
  replicas: {{replicas}}
training_config:
  max_steps: {{max_steps}}
  save_steps: {{save_steps}}
  max_length: {{max_length}}
  global_batch_size: {{global_batch_size}}
  reasoning_enabled: false
  lr_scheduler:
    warmup_steps: {{warmup_steps}}
    min_lr: 1e-6
  optim_config:
    lr: {{lr}}
    weight_decay: 0.0
  peft:
    peft_scheme: "lora"
    lora_tuning:
      alpha: {{alpha}}
      lora_plus_lr_ratio: {{lora_plus_lr_ratio}}
"""
SFT_OVERRIDES = {
    "name": {"type": "string", "default": "my-lora-sft-run"},
    "replicas": {"type": "integer", "default": 4, "enum": [1, 4, 8, 16, 32]},
    "max_steps": {"type": "integer", "default": 100, "min": 4},
    "save_steps": {"type": "integer", "default": 100, "min": 1},
    "max_length": {"type": "integer", "default": 32768, "enum": [8192, 16384, 32768, 65536]},
    "global_batch_size": {"type": "integer", "default": 32, "enum": [32, 64, 128]},
    "warmup_steps": {"type": "integer", "default": 15, "min": 0},
    "lr": {"type": "float", "default": 1e-5, "min": 0.0, "max": 1.0},
    "alpha": {"type": "integer", "default": 64, "enum": [32, 64, 96, 128, 160, 192]},
    "lora_plus_lr_ratio": {"type": "float", "default": 64.0, "min": 1.0, "max": 70.0},
}
RFT_TEMPLATE = """run:
  name: {{name}}
  model_type: amazon.nova-2-lite-v1:0:256k
  model_name_or_path: nova-lite-2/prod
  replicas: {{replicas}}
  reward_lambda_arn: {{reward_lambda_arn}}
training_config:
  global_batch_size: {{global_batch_size}}
  max_length: {{max_length}}
  reasoning_effort: {{reasoning_effort}}
  rollout:
    advantage_strategy:
      number_generation: {{number_generation}}
    generator:
      max_new_tokens: {{max_new_tokens}}
      temperature: {{temperature}}
      top_k: {{top_k}}
    rewards:
      api_endpoint:
        lambda_arn: {{reward_lambda_arn}}
  trainer:
    ent_coeff: {{ent_coeff}}
    kl_loss_coef: {{kl_loss_coef}}
    max_steps: {{max_steps}}
    save_steps: {{save_steps}}
    optim_config:
      lr: {{lr}}
    peft:
      peft_scheme: lora
      lora_tuning:
        alpha: {{alpha}}
"""
RFT_OVERRIDES = {
    "name": {"type": "string", "default": "my-rft-run"},
    "replicas": {"type": "integer", "default": 4, "enum": [2, 4, 8, 16]},
    "reward_lambda_arn": {"type": "string", "default": ""},
    "global_batch_size": {"type": "integer", "default": 64, "enum": [16, 32, 64, 128, 256]},
    "max_length": {"type": "integer", "default": 8192},
    "reasoning_effort": {"type": "string", "default": "high", "enum": ["low", "medium", "high", "null"]},
    "number_generation": {"type": "integer", "default": 2, "min": 2, "max": 64},
    "max_new_tokens": {"type": "integer", "default": 6000, "min": 1},
    "temperature": {"type": "float", "default": 1.0, "min": 0.0, "max": 5.0},
    "top_k": {"type": "integer", "default": 1, "min": 0},
    "ent_coeff": {"type": "float", "default": 0.0, "min": 0.0, "max": 1.0},
    "kl_loss_coef": {"type": "float", "default": 0.001, "min": 0.0, "max": 10.0},
    "max_steps": {"type": "integer", "default": 5, "min": 1},
    "save_steps": {"type": "integer", "default": 5, "min": 1},
    "lr": {"type": "float", "default": 1e-4, "min": 0.0, "max": 1.0},
    "alpha": {"type": "integer", "default": 32, "enum": [32, 64, 96, 128, 160, 192]},
}
# The HyperPod (EKS) override spec: the same fields plus the instance types the recipe runs on.
SMHP_EXTRA = {"instance_type": {"type": "string", "default": "ml.p5.48xlarge",
                                "enum": ["ml.p5.48xlarge", "ml.p5en.48xlarge"]}}


def install_nova_hub(boto_session) -> None:
    """DescribeHubContent for Nova 2 Lite (other names: ResourceNotFound) and its recipe files in (moto) S3."""
    s3 = boto_session.client("s3")
    s3.create_bucket(Bucket=HUB_BUCKET)
    files = {"sft_lora.yaml": SFT_TEMPLATE, "sft_lora.json": json.dumps(SFT_OVERRIDES),
             "sft_lora_k8s.json": json.dumps({**SFT_OVERRIDES, **SMHP_EXTRA}),
             "rft_lora.yaml": RFT_TEMPLATE, "rft_lora.json": json.dumps(RFT_OVERRIDES),
             "rft_lora_k8s.json": json.dumps({**RFT_OVERRIDES, **SMHP_EXTRA})}
    for name, text in files.items():
        s3.put_object(Bucket=HUB_BUCKET, Key=f"recipes/{name}", Body=text.encode())

    def recipe(name, technique, template, image):
        return {"Name": name, "CustomizationTechnique": technique, "Type": "FineTuning", "Peft": "LORA",
                "Hardware": "GPU", "InstanceCount": 4, "SupportedInstanceTypes": ["ml.p5.48xlarge",
                                                                                   "ml.p5en.48xlarge"],
                "SmtjRecipeTemplateS3Uri": f"s3://{HUB_BUCKET}/recipes/{template}.yaml",
                "SmtjOverrideParamsS3Uri": f"s3://{HUB_BUCKET}/recipes/{template}.json",
                "HpEksPayloadTemplateS3Uri": f"s3://{HUB_BUCKET}/recipes/{template}_k8s.yaml",
                "HpEksOverrideParamsS3Uri": f"s3://{HUB_BUCKET}/recipes/{template}_k8s.json", "SmtjImageUri": image}

    document = {"RecipeCollection": [
        recipe("nova_lite_2_0_p5_gpu_lora_sft", "SFT", "sft_lora", NOVA_SFT_IMAGE),
        recipe("nova_lite_v2_smtj_p5_p5en_gpu_lora_rft", "RLVR", "rft_lora", NOVA_RFT_IMAGE)]}

    def describe(params, **_):
        body = params["body"]
        body = json.loads(body) if isinstance(body, (bytes, str)) else body
        name = body.get("HubContentName")
        if name != NOVA_2_LITE_HUB:
            return error("ResourceNotFound", f"Hub content {name} not found")
        return response({
            "HubContentName": name, "HubContentVersion": "1.0.0", "HubContentType": "Model",
            "HubContentArn": f"arn:aws:sagemaker:{REGION}:aws:hub-content/SageMakerPublicHub/Model/{name}/1.0.0",
            "DocumentSchemaVersion": "2.0.0", "HubName": "SageMakerPublicHub",
            "HubArn": f"arn:aws:sagemaker:{REGION}:aws:hub/SageMakerPublicHub", "HubContentStatus": "Available",
            "HubContentDocument": json.dumps(document), "CreationTime": datetime.datetime(2025, 1, 1)})

    boto_session.events.register("before-call.sagemaker.DescribeHubContent", describe)


# ---------------------------------------------------------------------------------------------------------------
# Lambda: run the deployed zip's handler in a separate `python -S` (standard library only), as the Lambda runtime
# would; moto stores the function and its code.

def run_lambda_zip(zip_bytes: bytes, handler: str, environment: dict, event: dict, tmp: Path) -> bytes:
    target = tmp / f"lambda-{abs(hash(zip_bytes)) % 10**8}"
    if not target.exists():
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            archive.extractall(target)
    module, _, function = handler.rpartition(".")
    code = (f"import json, sys; sys.path.insert(0, {str(target)!r}); import {module} as m; "
            f"print(json.dumps(m.{function}(json.loads(sys.stdin.read()))))")
    env = {"PATH": os.environ.get("PATH", ""), **environment}
    done = subprocess.run([sys.executable, "-S", "-c", code], input=json.dumps(event), capture_output=True,
                          text=True, env=env, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip().encode()


def emulate_lambda_invoke(boto_session, tmp: Path) -> list[dict]:
    """lambda:Invoke runs the function's latest zip (as sent by CreateFunction/UpdateFunctionCode) in a
    subprocess, with the function's handler and environment as moto stores them; returns the events received."""
    events: list[dict] = []
    code: dict[str, bytes] = {}

    def remember_code(params, **_):
        code[params["FunctionName"]] = params["Code"]["ZipFile"] if "Code" in params else params["ZipFile"]

    def remember_call(params, context, **_):
        context["nbt_function"] = params["FunctionName"]
        payload = params.get("Payload", b"")
        context["nbt_payload"] = payload.decode() if isinstance(payload, bytes) else payload

    def invoke(params, context, **_):
        name = context["nbt_function"].split(":function:")[-1].split(":")[0]
        config = boto_session.client("lambda").get_function_configuration(FunctionName=name)
        payload = json.loads(context["nbt_payload"])
        events.append(payload)
        body = run_lambda_zip(code[name], config["Handler"], config.get("Environment", {}).get("Variables", {}),
                              payload, tmp)
        return response({"StatusCode": 200, "Payload": _Body(body), "ExecutedVersion": "$LATEST"})

    boto_session.events.register("provide-client-params.lambda.CreateFunction", remember_code)
    boto_session.events.register("provide-client-params.lambda.UpdateFunctionCode", remember_code)
    boto_session.events.register("provide-client-params.lambda.Invoke", remember_call)
    boto_session.events.register("before-call.lambda.Invoke", invoke)
    return events


class _Body(io.BytesIO):
    """A streaming body stand-in (read())."""


# ---------------------------------------------------------------------------------------------------------------
# What a training container does: fetch the channels, run the entry script, ship logs and model.tar.gz.

def download_prefix(s3, uri: str, target: Path) -> Path:
    bucket, _, prefix = uri[5:].partition("/")
    target.mkdir(parents=True, exist_ok=True)
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        relative = item["Key"][len(prefix):].lstrip("/") or Path(item["Key"]).name
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    return target


def run_container(boto_session, request: dict, work: Path, *, hyperparameters: dict | None = None,
                  timeout: float = 120) -> tuple[int, list[str], Path]:
    """Run a CreateTrainingJob request's code channel the way the container would; (exit code, stdout lines,
    the model directory)."""
    s3 = boto_session.client("s3")
    channels = {}
    for channel in request["InputDataConfig"]:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        channels[channel["ChannelName"]] = download_prefix(s3, uri, work / "input" / channel["ChannelName"])
    return run_entry(channels, work, request["TrainingJobName"],
                     hyperparameters if hyperparameters is not None else request["HyperParameters"], timeout)


def run_entry(channels: dict[str, Path], work: Path, job_name: str, hyperparameters: dict,
              timeout: float = 120) -> tuple[int, list[str], Path]:
    """Run the code channel's nbt_entry.py with SageMaker's environment variables pointing into `work`."""
    model_dir = work / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (work / "checkpoints").mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "SM_MODEL_DIR": str(model_dir), "SM_HPS": json.dumps(hyperparameters),
           "SM_CURRENT_HOST": "algo-1", "SM_HOSTS": json.dumps(["algo-1"]), "TRAINING_JOB_NAME": job_name,
           "NBT_CHECKPOINT_DIR": str(work / "checkpoints"), "NBT_OUTPUT_DIR": str(work / "output"),
           # The image has no mlflow, so the container's jobs are not tracked; this Python has it: turn it off.
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NBTOOLKIT_TRACKING": "off",
           **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()}}
    done = subprocess.run([sys.executable, str(channels["code"] / "nbt_entry.py")], cwd=channels["code"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).splitlines(), model_dir


def fake_run_dir(runtime, spec, job_name: str = "count-20260101000000") -> Path:
    """A SageMaker run directory as launch() leaves it, without launching (for status/stop tests)."""
    from nbtoolkit.aws.job import SAGEMAKER_FILE

    run_dir = runtime.runs_dir / f"{spec.name}-fake"
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps({"kind": spec.kind, "spec": spec.to_dict(), "attempt": 1}))
    (run_dir / SAGEMAKER_FILE).write_text(json.dumps({
        "run_id": run_dir.name, "region": REGION, "backend": "training_job",
        "jobs": [{"name": job_name, "attempt": 1, "mirror_sizes": {}}]}))
    (run_dir / "status.json").write_text(json.dumps({"state": "IN_PROGRESS", "attempt": 1}))
    return run_dir


def publish_container_output(boto_session, job_name: str, lines: list[str], model_dir: Path,
                             artifacts_uri: str | None) -> None:
    """CloudWatch events of stream <job>/algo-1-<t>, and model_dir as model.tar.gz at the artifacts URI."""
    logs = boto_session.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(datetime.datetime.now().timestamp() * 1000)
    events = [{"timestamp": now + i, "message": line or " "} for i, line in enumerate(lines)]  # no empty events
    for start in range(0, len(events), 500):
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[start:start + 500])
    if artifacts_uri:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
        bucket, _, key = artifacts_uri[5:].partition("/")
        boto_session.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def files_containing(root: Path, *needles: str) -> list[str]:
    """Files under root whose bytes contain any needle."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n.encode() in data for n in needles):
                found.append(str(path.relative_to(root)))
    return found

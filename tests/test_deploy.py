"""SageMaker endpoints and Bedrock custom model import, offline: moto 5 for S3, IAM and SageMaker; botocore Stubber
for what moto does not model (endpoint status transitions, Bedrock import jobs, Converse); real AWS event-stream
bytes for the streaming calls, which the Stubber cannot return. Every request's parameters are asserted exactly.
"""

from __future__ import annotations

import binascii
import io
import json
import struct
from pathlib import Path

import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from moto import mock_aws

from nbtoolkit.aws.deploy import (
    BedrockImport,
    BedrockImportConfig,
    DeployConfig,
    DeployError,
    Deployment,
    check_bedrock_importable,
    container_environment,
    delete_bedrock_import,
    delete_deployment,
    deploy_model,
    endpoint_name_and_region,
    import_to_bedrock,
    model_files,
    serving_image_uri,
    upload_model,
)
from nbtoolkit.aws.errors import AccessDenied
from nbtoolkit.aws.session import AwsSession
from nbtoolkit.serve import InferenceError, StreamingUnsupported, invoke_inference

REGION = "us-east-1"
ACCOUNT = "123456789012"
SECRET = "wJalrXUtnFEMI-test-secret-value"
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.38.0-lmi29.0.0-cu130"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/MyEndpointRole"
NO_PROGRESS = None
MODEL_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/so-classifier-model"
CONFIG_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/so-classifier-config"
ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/so-classifier"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws():
    with mock_aws():
        yield AwsSession(REGION, sleep=lambda seconds: None)


def fake_model(root: Path) -> Path:
    """A training run directory: model/ with Hugging Face files, plus what must never be uploaded."""
    model = root / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    (model / "tokenizer.json").write_text("{}")
    (model / "tokenizer_config.json").write_text("{}")
    (model / "optimizer.pt").write_bytes(b"no")
    (root / "checkpoints" / "step-5").mkdir(parents=True)
    (root / "checkpoints" / "step-5" / "model.safetensors").write_bytes(b"no")
    return root


# ---------------------------------------------------------------- event streams (what AWS sends when streaming)


def _header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return struct.pack(">B", len(name_bytes)) + name_bytes + b"\x07" + struct.pack(">H", len(value_bytes)) + value_bytes


def event_message(event_type: str, payload: bytes, *, exception: bool = False,
                  content_type: str = "application/octet-stream") -> bytes:
    """One binary AWS event-stream message (prelude, headers, payload, CRCs)."""
    kind = "exception" if exception else "event"
    headers = (_header(":message-type", kind) + _header(":exception-type" if exception else ":event-type", event_type)
               + _header(":content-type", content_type))
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


class _Raw:
    def __init__(self, data: bytes, size: int = 11) -> None:
        self.data, self.size = data, size

    def stream(self, *args, **kwargs):
        for start in range(0, len(self.data), self.size):  # split across message boundaries on purpose
            yield self.data[start:start + self.size]

    def close(self) -> None:
        pass


def serve_event_stream(client, operation: str, data: bytes) -> dict:
    """Answer `operation` on `client` with event-stream bytes; returns the dict that receives the call's params."""
    seen: dict = {}
    service = client.meta.service_model.service_name

    def capture(params, **kwargs):
        seen.update(params)

    def send(request, **kwargs):
        return AWSResponse(request.url, 200, {"content-type": "application/vnd.amazon.eventstream"}, _Raw(data))

    client.meta.events.register(f"provide-client-params.{service}.{operation}", capture)
    client.meta.events.register(f"before-send.{service}.{operation}", send)
    return seen


def chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text else {}
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"


# ---------------------------------------------------------------- images, config, files


def test_image_uris_match_the_sagemaker_sdk():
    from sagemaker.core import image_uris

    assert serving_image_uri("lmi", REGION) == image_uris.retrieve(framework="djl-lmi", region=REGION) == LMI_IMAGE
    for region in ("eu-west-1", "cn-north-1"):
        assert serving_image_uri("tgi", region) == image_uris.retrieve(
            framework="huggingface-llm", region=region, version="3.3.6", image_scope="inference",
            instance_type="ml.g5.xlarge")
    with pytest.raises(ValueError, match="not an AWS region"):
        serving_image_uri("lmi", "mars-1")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"endpoint_name": "bad_name"}, "letters, digits and hyphens"),
    ({"endpoint_name": "ok", "instance_type": "ml.m5.xlarge"}, "has no NVIDIA GPU"),
    ({"endpoint_name": "ok", "instance_type": "ml.g5.xlarg"}, "did you mean 'ml.g5.xlarge'"),
    ({"endpoint_name": "ok", "instance_count": 0}, "instance_count"),
    ({"endpoint_name": "ok", "container": "vllm"}, "not one of lmi, tgi"),
    ({"endpoint_name": "ok", "role": "MyRole"}, "that is a role name; pass the full ARN"),
    ({"endpoint_name": "ok", "environment": {"HF_TOKEN": "x"}}, "looks like a credential"),
    ({"endpoint_name": "ok", "startup_timeout": 5}, "startup_timeout"),
])
def test_deploy_config_rejects_what_sagemaker_would(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeployConfig(**kwargs)


def test_container_environment_per_image():
    lmi = container_environment(DeployConfig("e", environment={"OPTION_MAX_MODEL_LEN": "4096"}))
    assert lmi == {"HF_MODEL_ID": "/opt/ml/model", "OPTION_TENSOR_PARALLEL_DEGREE": "max",
                   "OPTION_MAX_MODEL_LEN": "4096"}
    tgi = container_environment(DeployConfig("e", container="tgi", instance_type="ml.g5.12xlarge"))
    assert tgi == {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": "4", "MESSAGES_API_ENABLED": "true"}


def test_only_serving_files_are_uploaded(tmp_path):
    run = fake_model(tmp_path / "run")
    assert [f.name for f in model_files(run)] == ["config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json"]
    with pytest.raises(DeployError, match="not a model directory"):
        model_files(tmp_path)
    with pytest.raises(ValueError, match="pass upload_to"):
        deploy_model(run, DeployConfig("e"), session=AwsSession(REGION), progress=NO_PROGRESS)


# ---------------------------------------------------------------- the whole flow against moto


def test_upload_deploy_invoke_and_clean_up_with_moto(aws, tmp_path):
    aws.client("s3").create_bucket(Bucket="models")
    messages: list[str] = []
    uri = upload_model(fake_model(tmp_path / "run"), "s3://models/so/sft", session=aws, progress=messages.append)
    assert uri == "s3://models/so/sft/"
    keys = sorted(o["Key"] for o in aws.client("s3").list_objects_v2(Bucket="models")["Contents"])
    assert keys == ["so/sft/config.json", "so/sft/model.safetensors", "so/sft/tokenizer.json",
                    "so/sft/tokenizer_config.json"]

    config = DeployConfig("so-classifier", instance_type="ml.g4dn.xlarge", tags={"project": "so"})
    deployment = deploy_model(uri, config, session=aws, poll=0, progress=messages.append)
    assert deployment.status == "InService" and deployment.role_created
    assert deployment.endpoint_arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/so-classifier"
    sagemaker = aws.client("sagemaker")
    model = sagemaker.describe_model(ModelName=deployment.model_name)
    assert model["ExecutionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/nbtoolkit-endpoint"
    assert model["PrimaryContainer"] == {
        "Image": LMI_IMAGE,
        "ModelDataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix", "CompressionType": "None"}},
        "Environment": {"HF_MODEL_ID": "/opt/ml/model", "OPTION_TENSOR_PARALLEL_DEGREE": "max"}}
    variant = sagemaker.describe_endpoint_config(
        EndpointConfigName=deployment.endpoint_config_name)["ProductionVariants"][0]
    expected = {"VariantName": "AllTraffic", "ModelName": deployment.model_name, "InstanceType": "ml.g4dn.xlarge",
                "InitialInstanceCount": 1, "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                "ModelDataDownloadTimeoutInSeconds": 1200}
    assert {key: variant.get(key) for key in expected} == expected
    iam = aws.client("iam")
    trust = iam.get_role(RoleName="nbtoolkit-endpoint")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    policy = iam.get_role_policy(RoleName="nbtoolkit-endpoint", PolicyName="nbtoolkit-endpoint-access")
    read = policy["PolicyDocument"]["Statement"][0]
    assert read["Resource"] == ["arn:aws:s3:::models", "arn:aws:s3:::models/so/sft/*"]

    # The record is enough to clean up from a fresh kernel, and holds no credentials.
    saved = deployment.save(tmp_path / "deployment.json")
    assert SECRET not in saved.read_text() and "AKIA" not in saved.read_text()
    assert Deployment.load(saved) == deployment

    reply = {"id": "x", "object": "chat.completion", "model": "so", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "HQ"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 1, "total_tokens": 31}}
    requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
                  json={"results": [{"Body": json.dumps(reply), "ContentType": "application/json"}]}, timeout=10)
    result = invoke_inference(deployment, "Classify: how do I sort a list?", session=aws)
    assert result.text == "HQ" and result.finish_reason == "stop" and result.usage["completion_tokens"] == 1
    with pytest.raises(StreamingUnsupported, match="stream=False"):
        invoke_inference(deployment, "Classify", stream=True, session=aws)

    deleted = delete_deployment(Deployment.load(saved), session=aws, progress=messages.append)
    assert deleted == {"endpoint": ["so-classifier"], "endpoint_config": [deployment.endpoint_config_name],
                       "model": [deployment.model_name], "role": ["nbtoolkit-endpoint"]}
    assert sagemaker.list_endpoints()["Endpoints"] == [] and sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert iam.list_roles()["Roles"] == []
    assert delete_deployment("so-classifier", session=aws, progress=NO_PROGRESS) == {
        "endpoint": [], "endpoint_config": [], "model": [], "role": []}, "cleaning up twice is harmless"
    assert any("InService" in m for m in messages) and not any(SECRET in m for m in messages)


def test_cleanup_by_endpoint_name_detaches_and_deletes_the_role(aws):
    iam = aws.client("iam")
    iam.create_role(RoleName="blogpost-sagemaker", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    managed = iam.create_policy(PolicyName="endpoint-access", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName="blogpost-sagemaker", PolicyArn=managed["Policy"]["Arn"])
    iam.put_role_policy(RoleName="blogpost-sagemaker", PolicyName="inline", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    iam.create_instance_profile(InstanceProfileName="profile")
    iam.add_role_to_instance_profile(InstanceProfileName="profile", RoleName="blogpost-sagemaker")
    role = iam.get_role(RoleName="blogpost-sagemaker")["Role"]["Arn"]
    deployment = deploy_model("s3://models/so/model.tar.gz", DeployConfig("blogpost-sdkg6", role=role,
                              instance_type="ml.g4dn.xlarge", image_uri=LMI_IMAGE), session=aws, poll=0,
                              progress=NO_PROGRESS)
    assert not deployment.role_created
    model = aws.client("sagemaker").describe_model(ModelName=deployment.model_name)
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://models/so/model.tar.gz"
    kept = delete_deployment("blogpost-sdkg6", session=aws, progress=NO_PROGRESS)
    assert kept["role"] == [] and iam.get_role(RoleName="blogpost-sagemaker"), "a role we did not make stays"
    deployment = deploy_model("s3://models/so/model.tar.gz", DeployConfig("blogpost-sdkg6", role=role,
                              instance_type="ml.g4dn.xlarge", image_uri=LMI_IMAGE), session=aws, poll=0,
                              progress=NO_PROGRESS)
    deleted = delete_deployment("blogpost-sdkg6", session=aws, delete_role=True, progress=NO_PROGRESS)
    assert deleted["endpoint"] == ["blogpost-sdkg6"] and deleted["model"] == [deployment.model_name]
    assert deleted["role"] == ["blogpost-sagemaker"]
    assert iam.list_roles()["Roles"] == [] and iam.list_instance_profiles()["InstanceProfiles"][0]["Roles"] == []
    assert iam.list_entities_for_policy(PolicyArn=managed["Policy"]["Arn"])["PolicyRoles"] == []


# ---------------------------------------------------------------- exact requests and status transitions (Stubber)


def _stubbed(aws: AwsSession, service: str) -> Stubber:
    stubber = Stubber(aws.client(service))
    stubber.activate()
    return stubber


def test_exact_sagemaker_requests_and_waiting_through_creating(aws):
    sagemaker = _stubbed(aws, "sagemaker")
    config = DeployConfig("so-classifier", role=ROLE, container="tgi", instance_type="ml.g5.2xlarge",
                          image_uri="111.dkr.ecr.us-east-1.amazonaws.com/tgi:1", startup_timeout=600)
    tags = [{"Key": "created-by", "Value": "nbtoolkit"}]
    sagemaker.add_response("create_model", {"ModelArn": MODEL_ARN}, {
        "ModelName": ANY, "ExecutionRoleArn": ROLE, "Tags": tags,
        "PrimaryContainer": {"Image": "111.dkr.ecr.us-east-1.amazonaws.com/tgi:1",
                             "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://models/m/", "S3DataType": "S3Prefix",
                                                                  "CompressionType": "None"}},
                             "Environment": {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": "1",
                                             "MESSAGES_API_ENABLED": "true"}}})
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN}, {
        "EndpointConfigName": ANY, "Tags": tags, "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": ANY, "InstanceType": "ml.g5.2xlarge",
            "InitialInstanceCount": 1, "ContainerStartupHealthCheckTimeoutInSeconds": 600,
            "ModelDataDownloadTimeoutInSeconds": 1200}]})
    sagemaker.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN},
                           {"EndpointName": "so-classifier", "EndpointConfigName": ANY, "Tags": tags})
    for status in ("Creating", "Creating", "InService"):
        sagemaker.add_response("describe_endpoint", _described("so-classifier", status),
                               {"EndpointName": "so-classifier"})
    messages: list[str] = []
    deployment = deploy_model("s3://models/m", config, session=aws, poll=0, progress=messages.append)
    sagemaker.assert_no_pending_responses()
    assert deployment.status == "InService" and not deployment.role_created
    assert deployment.model_name.startswith("so-classifier-model-") and len(deployment.model_name) <= 63
    assert [m.split(" after")[0] for m in messages if m.startswith("endpoint ")] == [
        "endpoint so-classifier: Creating", "endpoint so-classifier: InService"]


def _described(name: str, status: str, reason: str | None = None) -> dict:
    import datetime

    now = datetime.datetime(2026, 1, 1)
    body = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
            "EndpointConfigName": f"{name}-config", "EndpointStatus": status, "CreationTime": now,
            "LastModifiedTime": now}
    if reason:
        body["FailureReason"] = reason
    return body


def test_a_failed_endpoint_reports_sagemakers_reason(aws):
    sagemaker = _stubbed(aws, "sagemaker")
    sagemaker.add_response("describe_endpoint", _described("e", "Creating"), {"EndpointName": "e"})
    sagemaker.add_response("describe_endpoint", _described("e", "Failed", "The primary container for production "
                                                           "variant AllTraffic did not pass the ping health check."),
                           {"EndpointName": "e"})
    from nbtoolkit.aws.deploy import wait_for_endpoint

    with pytest.raises(DeployError, match=r"did not pass the ping health check.*delete_deployment\('e'\)"):
        wait_for_endpoint("e", session=aws, poll=0, progress=NO_PROGRESS)


def test_a_failed_step_removes_what_was_created_before_it(aws):
    sagemaker = _stubbed(aws, "sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": MODEL_ARN}, None)
    sagemaker.add_client_error("create_endpoint_config", "AccessDeniedException", "not authorized to perform: "
                               "sagemaker:CreateEndpointConfig", 400)
    sagemaker.add_response("delete_model", {}, {"ModelName": ANY})
    with pytest.raises(AccessDenied, match="CreateEndpointConfig"):
        deploy_model("s3://models/m.tar.gz", DeployConfig("e", role=ROLE, image_uri=LMI_IMAGE), session=aws,
                     progress=NO_PROGRESS)
    sagemaker.assert_no_pending_responses()


def test_a_new_role_is_retried_until_sagemaker_can_assume_it(aws):
    sagemaker = _stubbed(aws, "sagemaker")
    for _ in range(2):
        sagemaker.add_client_error("create_model", "ValidationException",
                                   "Could not assume role arn:aws:iam::123456789012:role/nbtoolkit-endpoint", 400)
    sagemaker.add_response("create_model", {"ModelArn": MODEL_ARN}, None)
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN}, None)
    sagemaker.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN}, None)
    deployment = deploy_model("s3://models/m/", DeployConfig("e", image_uri=LMI_IMAGE), session=aws, wait=False,
                              progress=NO_PROGRESS)
    sagemaker.assert_no_pending_responses()
    assert deployment.role_created and deployment.status == "Creating"


def test_an_existing_endpoint_name_is_a_clear_error(aws):
    sagemaker = _stubbed(aws, "sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": MODEL_ARN}, None)
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN}, None)
    sagemaker.add_client_error("create_endpoint", "ValidationException",
                               'Cannot create already existing endpoint "arn:aws:sagemaker:...:endpoint/e".', 400)
    sagemaker.add_response("delete_endpoint_config", {}, None)
    sagemaker.add_response("delete_model", {}, None)
    with pytest.raises(DeployError, match="already exists.*delete_deployment"):
        deploy_model("s3://models/m/", DeployConfig("e", role=ROLE, image_uri=LMI_IMAGE), session=aws,
                     progress=NO_PROGRESS)
    sagemaker.assert_no_pending_responses()


# ---------------------------------------------------------------- invoking


def test_invoke_endpoint_sends_the_openai_body(aws):
    runtime = _stubbed(aws, "sagemaker-runtime")
    body = {"messages": [{"role": "user", "content": "Classify"}], "max_tokens": 5, "temperature": 0,
            "stream": False}
    reply = json.dumps({"choices": [{"message": {"content": "LQ_EDIT"}, "finish_reason": "stop"}]}).encode()
    runtime.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(reply), len(reply)),
                                             "ContentType": "application/json"},
                         {"EndpointName": "so", "Body": json.dumps(body).encode(),
                          "ContentType": "application/json", "Accept": "application/json"})
    result = invoke_inference("so", "Classify", max_tokens=5, temperature=0, session=aws)
    assert result.text == "LQ_EDIT" and result.target == "so"
    runtime.add_client_error("invoke_endpoint", "ModelError", "Received client error (400) from primary with "
                             "message \"max_tokens too large\"", 424)
    with pytest.raises(InferenceError, match="model container of endpoint so failed.*max_tokens too large"):
        invoke_inference("so", "Classify", session=aws)


def test_invoke_endpoint_with_response_stream_reads_payload_parts(aws):
    data = b"".join(event_message("PayloadPart", part) for part in (
        chunk("H")[:9], chunk("H")[9:] + chunk("Q"), chunk(None, "stop") + b"data: [DONE]\n\n"))
    seen = serve_event_stream(aws.client("sagemaker-runtime"), "InvokeEndpointWithResponseStream", data)
    stream = invoke_inference(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/so", "Classify", stream=True,
                              max_tokens=5, session=aws)
    assert list(stream) == ["H", "Q"]
    assert stream.result().text == "HQ" and stream.finish_reason == "stop"
    assert seen == {"EndpointName": "so", "ContentType": "application/json", "Body": json.dumps(
        {"messages": [{"role": "user", "content": "Classify"}], "max_tokens": 5, "stream": True}).encode()}


def test_a_stream_error_event_becomes_an_inference_error(aws):
    data = event_message("PayloadPart", chunk("H")) + event_message(
        "ModelStreamError", json.dumps({"Message": "CUDA out of memory", "ErrorCode": "500"}).encode(),
        exception=True, content_type="application/json")
    serve_event_stream(aws.client("sagemaker-runtime"), "InvokeEndpointWithResponseStream", data)
    stream = invoke_inference("so", "Classify", stream=True, session=aws)
    with pytest.raises(InferenceError, match="broke off the stream.*CUDA out of memory"):
        list(stream)
    assert stream.text == "H", "what arrived before the error is kept"


def test_endpoint_targets():
    assert endpoint_name_and_region("so-classifier") == ("so-classifier", None)
    assert endpoint_name_and_region(f"arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/so") == ("so", "eu-west-1")
    with pytest.raises(ValueError, match="neither a URL"):
        endpoint_name_and_region("so classifier")


# ---------------------------------------------------------------- Bedrock custom model import


def test_bedrock_importable_checks(tmp_path):
    run = fake_model(tmp_path / "run")
    assert check_bedrock_importable(run) == []
    (run / "model" / "config.json").write_text(json.dumps({"architectures": ["Phi3ForCausalLM"]}))
    (run / "model" / "tokenizer.json").unlink()
    problems = check_bedrock_importable(run)
    assert len(problems) == 2 and "Phi3ForCausalLM" in problems[0] and "tokenizer" in problems[1]
    with pytest.raises(DeployError, match="cannot be imported into Bedrock"):
        import_to_bedrock(run, BedrockImportConfig("so-model"), upload_to="s3://models/p/", session=AwsSession(REGION),
                          progress=NO_PROGRESS)


def test_bedrock_import_invoke_and_delete(aws, tmp_path):
    aws.client("s3").create_bucket(Bucket="models")
    bedrock = _stubbed(aws, "bedrock")
    job_arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-import-job/abc123"
    model_arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:imported-model/xyz789"
    tags = [{"key": "created-by", "value": "nbtoolkit"}, {"key": "project", "value": "so"}]
    bedrock.add_response("create_model_import_job", {"jobArn": job_arn}, {
        "jobName": "so-model-job", "importedModelName": "so-model",
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/nbtoolkit-bedrock-import",
        "modelDataSource": {"s3DataSource": {"s3Uri": "s3://models/so/hf/"}}, "jobTags": tags,
        "importedModelTags": tags})
    for status in ("InProgress", "Completed"):
        bedrock.add_response("get_model_import_job", {
            "jobArn": job_arn, "jobName": "so-model-job", "importedModelName": "so-model", "status": status,
            **({"importedModelArn": model_arn} if status == "Completed" else {})}, {"jobIdentifier": job_arn})
    record = import_to_bedrock(fake_model(tmp_path / "run"), BedrockImportConfig(
        "so-model", job_name="so-model-job", tags={"project": "so"}), upload_to="s3://models/so/hf",
        session=aws, poll=0, progress=NO_PROGRESS)
    bedrock.assert_no_pending_responses()
    assert record.status == "Completed" and record.model_arn == model_arn and record.role_created
    trust = aws.client("iam").get_role(RoleName="nbtoolkit-bedrock-import")["Role"]["AssumeRolePolicyDocument"]
    statement = trust["Statement"][0]
    assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    saved = record.save(tmp_path / "import.json")
    assert BedrockImport.load(saved) == record and SECRET not in saved.read_text()

    runtime = _stubbed(aws, "bedrock-runtime")
    runtime.add_response("converse", {
        "output": {"message": {"role": "assistant", "content": [{"text": "HQ"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 20, "outputTokens": 1, "totalTokens": 21}, "metrics": {"latencyMs": 80}}, {
        "modelId": model_arn, "system": [{"text": "Answer with the label."}],
        "messages": [{"role": "user", "content": [{"text": "Classify"}]}],
        "inferenceConfig": {"maxTokens": 5, "temperature": 0}})
    messages = [{"role": "system", "content": "Answer with the label."}, {"role": "user", "content": "Classify"}]
    result = invoke_inference(model_arn, messages, max_tokens=5, temperature=0, session=aws)
    assert result.text == "HQ" and result.finish_reason == "stop" and result.usage["completion_tokens"] == 1

    bedrock.add_response("delete_imported_model", {}, {"modelIdentifier": model_arn})
    deleted = delete_bedrock_import(record, session=aws, progress=NO_PROGRESS)
    bedrock.assert_no_pending_responses()
    assert deleted == {"imported_model": [model_arn], "role": ["nbtoolkit-bedrock-import"]}


def test_bedrock_converse_stream_reads_events():
    # Outside mock_aws: moto raises on ConverseStream even when another handler answers first.
    aws = AwsSession(REGION)
    model_arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:imported-model/xyz789"
    messages = [{"role": "system", "content": "Answer with the label."}, {"role": "user", "content": "Classify"}]
    events = b"".join(event_message(kind, json.dumps(payload).encode(), content_type="application/json")
                      for kind, payload in (
                          ("messageStart", {"role": "assistant"}),
                          ("contentBlockDelta", {"delta": {"text": "LQ_"}, "contentBlockIndex": 0}),
                          ("contentBlockDelta", {"delta": {"text": "EDIT"}, "contentBlockIndex": 0}),
                          ("messageStop", {"stopReason": "max_tokens"}),
                          ("metadata", {"usage": {"inputTokens": 20, "outputTokens": 2, "totalTokens": 22},
                                        "metrics": {"latencyMs": 90}})))
    seen = serve_event_stream(aws.client("bedrock-runtime"), "ConverseStream", events)
    streamed = invoke_inference(model_arn, messages, stream=True, max_tokens=2, session=aws).result()
    assert streamed.text == "LQ_EDIT" and streamed.finish_reason == "length"
    assert streamed.usage == {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}
    assert seen == {"modelId": model_arn, "system": [{"text": "Answer with the label."}],
                    "messages": [{"role": "user", "content": [{"text": "Classify"}]}],
                    "inferenceConfig": {"maxTokens": 2}}


def test_a_failed_import_job_says_why(aws):
    bedrock = _stubbed(aws, "bedrock")
    job_arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-import-job/abc"
    bedrock.add_response("create_model_import_job", {"jobArn": job_arn}, None)
    bedrock.add_response("get_model_import_job", {"jobArn": job_arn, "status": "Failed",
                                                  "failureMessage": "Unsupported model architecture"}, None)
    with pytest.raises(DeployError, match="failed: Unsupported model architecture"):
        import_to_bedrock("s3://models/so/hf/", BedrockImportConfig("so-model", role=ROLE), session=aws, poll=0,
                          progress=NO_PROGRESS)
    with pytest.raises(ValueError, match="not a model.tar.gz"):
        import_to_bedrock("s3://models/so/model.tar.gz", BedrockImportConfig("so-model", role=ROLE), session=aws,
                          progress=NO_PROGRESS)

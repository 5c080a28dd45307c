"""Deploy a fine-tuned model to a SageMaker real-time endpoint or import it into Bedrock; invoke it; clean up.

SageMaker (the case study's deploy, invoke and cleanup steps; docs/deploy.md):

    deployment = deploy_model("s3://bucket/models/sft/", DeployConfig("so-classifier"), session=AwsSession("us-east-1"))
    invoke_inference(deployment, "Classify ...", stream=True).show()
    delete_deployment(deployment)        # endpoint, endpoint config, model, and the role if deploy_model made it

The container is the LMI (vLLM) or Hugging Face TGI image, looked up in the image table shipped with the SageMaker
Python SDK (no SDK import, no network). Model data is an S3 prefix of Hugging Face files (served uncompressed) or a
model.tar.gz, e.g. a SageMaker training job's output. Bedrock custom model import (`import_to_bedrock`) takes the
same S3 prefix. Every call goes through AwsSession (throttling retried with backoff, errors that say what to do);
a Deployment or BedrockImport records names and ARNs only, never credentials, and round-trips through JSON so a
fresh kernel can clean up.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbtoolkit.aws.errors import AwsError, error_code, error_message
from nbtoolkit.aws.session import CREDENTIAL_VARIABLES, AwsSession
from nbtoolkit.aws.validation import GPU_INSTANCES, check_region, check_role_arn, parse_s3_uri
from nbtoolkit.serve.responses import (
    InferenceError,
    InferenceResult,
    InferenceStream,
    StreamingUnsupported,
    events_from_lines,
    result_from_body,
)

CONTAINERS = ("lmi", "tgi")
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_ENDPOINT_ROLE = "nbtoolkit-endpoint"
DEFAULT_IMPORT_ROLE = "nbtoolkit-bedrock-import"
ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
ENDPOINT_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):\d{12}:endpoint/(?P<name>[a-zA-Z0-9-]+)$")
BEDROCK_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]+):\d{12}:(?P<kind>[a-z-]+)/(?P<id>.+)$")
# Architectures Bedrock Custom Model Import documents (config.json "architectures").
BEDROCK_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "GPTBigCodeForCausalLM",
    "T5ForConditionalGeneration", "GptOssForCausalLM",
})
# What a served model directory needs; checkpoints, optimizer state and adapters stay behind.
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                       "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                       "vocab.json", "merges.txt", "chat_template.jinja", "added_tokens.json")
_ENDPOINT_TERMINAL = {"InService": True, "Failed": False, "OutOfService": False}
_STREAM_REFUSED = ("does not support streaming", "not yet implemented", "streaming is not supported")

Progress = Callable[[str], None]


class DeployError(AwsError):
    """A deployment or import could not be made, or ended Failed; the message says what SageMaker/Bedrock said."""


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _resource_name(base: str, suffix: str) -> str:
    """`base-suffix` cut to SageMaker's 63 characters, still starting and ending with a letter or digit."""
    return f"{base[:62 - len(suffix)].rstrip('-')}-{suffix}"


def _aws(session: AwsSession | Any | None, region: str | None) -> AwsSession:
    """An AwsSession from None, a boto3.Session or an AwsSession."""
    if isinstance(session, AwsSession):
        return session
    return AwsSession(region=region, boto_session=session)


# ---------------------------------------------------------------------------------------------------------------
# What to deploy


def _check_role(role: str | None, role_name: str) -> None:
    """ValueError for a malformed role ARN, or a role name IAM would refuse."""
    if role is not None:
        problem = check_role_arn(role)
        if problem:
            raise ValueError(problem)
    if not ROLE_NAME.match(role_name):
        raise ValueError(f"role_name {role_name!r}: 1-64 letters, digits and +=,.@_- only")


@dataclass(frozen=True)
class DeployConfig:
    """A SageMaker real-time endpoint for a chat model (Hugging Face files on S3)."""

    endpoint_name: str = field(metadata={"help": "endpoint name: letters, digits and hyphens, up to 63 characters"})
    instance_type: str = field(default=DEFAULT_INSTANCE_TYPE, metadata={
        "help": "GPU instance type; ml.g5.xlarge (1x A10G, 24 GB) serves models up to about 7B parameters"})
    instance_count: int = field(default=1, metadata={"help": "instances behind the endpoint (1-64)"})
    container: str = field(default="lmi", metadata={
        "help": "lmi: Large Model Inference (vLLM), OpenAI chat schema; tgi: Hugging Face Text Generation Inference"})
    image_uri: str | None = field(default=None, metadata={
        "help": "serving image; None: the container's current image in the endpoint's region"})
    role: str | None = field(default=None, metadata={
        "help": "execution role ARN; None: create (or reuse) the role named role_name"})
    role_name: str = field(default=DEFAULT_ENDPOINT_ROLE, metadata={
        "help": "name of the role to create when role is None (deleted again by delete_deployment)"})
    environment: dict[str, str] = field(default_factory=dict, metadata={
        "help": "extra container environment variables (e.g. OPTION_MAX_MODEL_LEN); never credentials"})
    startup_timeout: int = field(default=900, metadata={
        "help": "seconds SageMaker waits for the container's health check (60-3600)"})
    download_timeout: int = field(default=1200, metadata={
        "help": "seconds SageMaker allows to download the model data (60-3600)"})
    tags: dict[str, str] = field(default_factory=dict, metadata={"help": "tags on the model, config and endpoint"})

    def __post_init__(self) -> None:
        if not ENDPOINT_NAME.match(str(self.endpoint_name)):
            raise ValueError(f"endpoint name {self.endpoint_name!r} is not allowed: 1-63 letters, digits and hyphens, "
                             "starting and ending with a letter or digit (e.g. 'so-classifier')")
        if self.container not in CONTAINERS:
            raise ValueError(f"container {self.container!r} is not one of {', '.join(CONTAINERS)}")
        if self.image_uri is None and self.instance_type not in GPU_INSTANCES:
            from nbtoolkit.errors import closest_name

            near = closest_name(self.instance_type, GPU_INSTANCES)
            raise ValueError(f"instance type {self.instance_type!r} has no NVIDIA GPU, which the {self.container} "
                             f"image needs{f'; did you mean {near!r}?' if near else ''} (e.g. ml.g5.xlarge, "
                             "ml.g6.xlarge, ml.g4dn.xlarge); or pass image_uri for a CPU image of your own")
        if not isinstance(self.instance_count, int) or isinstance(self.instance_count, bool) \
                or not 1 <= self.instance_count <= 64:
            raise ValueError(f"instance_count must be an integer from 1 to 64, got {self.instance_count!r}")
        _check_role(self.role, self.role_name)
        for name, value in self.environment.items():
            if name.upper() in CREDENTIAL_VARIABLES or "SECRET" in name.upper() or "TOKEN" in name.upper():
                raise ValueError(f"environment variable {name!r} looks like a credential: endpoint environments are "
                                 "visible to anyone who can describe the model; use the execution role instead")
            if not isinstance(value, str):
                raise ValueError(f"environment[{name!r}] must be a string, got {type(value).__name__}")
        for name, low, high in (("startup_timeout", 60, 3600), ("download_timeout", 60, 3600)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer number of seconds in {low}..{high}, got {value!r}")


class _Record:
    """A dataclass of names and ARNs that round-trips through a JSON file (for cleanup from a fresh kernel)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path):
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class Deployment(_Record):
    """What deploy_model created: names, ARNs and settings (no credentials). save()/load() round-trip it."""

    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    region: str
    image_uri: str
    model_data: str
    instance_type: str
    instance_count: int
    role_arn: str
    role_created: bool = False
    status: str = "Creating"
    failure_reason: str | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def endpoint_arn(self) -> str | None:
        account = self.role_arn.split(":")[4] if self.role_arn.count(":") >= 5 else None
        partition = self.role_arn.split(":")[1] if account else "aws"
        return f"arn:{partition}:sagemaker:{self.region}:{account}:endpoint/{self.endpoint_name.lower()}" \
            if account else None


# ---------------------------------------------------------------------------------------------------------------
# Images and model data


def _image_table(name: str) -> dict[str, Any]:
    """One of the SageMaker Python SDK's image_uri_config JSON files, read without importing the SDK."""
    spec = importlib.util.find_spec("sagemaker")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "core" / "image_uri_config" / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
    raise DeployError(f"the SageMaker Python SDK's image table {name}.json is not installed here; install the aws "
                      "extra (pip install 'nbtoolkit[aws]') or pass image_uri explicitly")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.-]", version))


def serving_image_uri(container: str, region: str, version: str | None = None) -> str:
    """The LMI ('lmi') or TGI ('tgi') GPU serving image for `region` (latest version unless `version`)."""
    problem = check_region(region)
    if problem:
        raise ValueError(problem)
    if container == "lmi":
        table = _image_table("djl-lmi")
    elif container == "tgi":
        table = _image_table("huggingface-llm")["inference"]
    else:
        raise ValueError(f"container {container!r} is not one of {', '.join(CONTAINERS)}")
    versions = table["versions"]
    version = table.get("version_aliases", {}).get(version, version) if version else \
        max(versions, key=_version_key)
    if version not in versions:
        raise ValueError(f"{container} version {version!r} is not known; known: {', '.join(sorted(versions))}")
    entry = versions[version]
    account = entry["registries"].get(region)
    if account is None:
        raise DeployError(f"the {container} image is not published in {region}; pick another region or pass "
                          "image_uri")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    if container == "lmi":
        tag = entry.get("tag_prefix", version)
    else:
        tag = "-".join([entry["tag_prefix"], "gpu", entry["py_versions"][0], entry["container_version"]["gpu"]])
    return f"{account}.dkr.ecr.{region}.{domain}/{entry['repository']}:{tag}"


def container_environment(config: DeployConfig) -> dict[str, str]:
    """Environment for the serving container: the model from /opt/ml/model, the chat API on, GPUs used."""
    gpus = GPU_INSTANCES[config.instance_type].gpus if config.instance_type in GPU_INSTANCES else 1
    if config.container == "lmi":
        base = {"HF_MODEL_ID": "/opt/ml/model", "OPTION_TENSOR_PARALLEL_DEGREE": "max"}
    else:
        base = {"HF_MODEL_ID": "/opt/ml/model", "SM_NUM_GPUS": str(gpus), "MESSAGES_API_ENABLED": "true"}
    return {**base, **config.environment}


def model_data_source(model_data: str) -> dict[str, Any]:
    """The PrimaryContainer fields for model data: a model.tar.gz, or an S3 prefix served uncompressed."""
    parse_s3_uri(model_data)
    if model_data.endswith(".tar.gz"):
        return {"ModelDataUrl": model_data}
    prefix = model_data if model_data.endswith("/") else model_data + "/"
    return {"ModelDataSource": {"S3DataSource": {"S3Uri": prefix, "S3DataType": "S3Prefix",
                                                 "CompressionType": "None"}}}


def model_files(model: str | Path) -> list[Path]:
    """The files of a model directory (or a training run directory's model/) that serving needs."""
    path = Path(model).expanduser()
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"
    if not (path / "config.json").is_file():
        raise DeployError(f"{path} is not a model directory (no config.json); pass a training run directory or the "
                          "directory save_pretrained wrote")
    files = sorted({f for pattern in MODEL_FILE_PATTERNS for f in path.glob(pattern) if f.is_file()})
    if not any(f.suffix == ".safetensors" for f in files):
        raise DeployError(f"{path} has no .safetensors weights; save the model with save_pretrained "
                          "(safe_serialization=True)")
    return files


def upload_model(model: str | Path, s3_uri: str, *, session: AwsSession | Any | None = None,
                 region: str | None = None, progress: Progress | None = print) -> str:
    """Upload a model directory (or a run directory's model/) to the S3 prefix `s3_uri`, uncompressed.

    Returns the prefix (ending with '/'), usable by deploy_model and import_to_bedrock.
    """
    bucket, key = parse_s3_uri(s3_uri)
    prefix = key.strip("/")
    files = model_files(model)
    aws = _aws(session, region)
    client = aws.client("s3")
    total = sum(f.stat().st_size for f in files)
    for file in files:
        target = f"{prefix}/{file.name}" if prefix else file.name
        aws.retrying(f"s3 upload {file.name}", lambda f=file, t=target: client.upload_file(str(f), bucket, t),
                     bucket=bucket)
    uri = f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/"
    if progress:
        progress(f"uploaded {len(files)} files ({total / 1e6:.1f} MB) to {uri}")
    return uri


# ---------------------------------------------------------------------------------------------------------------
# Roles


def _trust_policy(service: str, conditions: dict[str, Any] | None = None) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if conditions:
        statement["Condition"] = conditions
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _s3_read_statement(model_data: str) -> dict[str, Any]:
    bucket, key = parse_s3_uri(model_data)
    prefix = key.rsplit("/", 1)[0] if key.endswith(".tar.gz") else key.rstrip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    return {"Sid": "ReadModelData", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}", objects]}


def endpoint_role_policy(model_data: str) -> dict[str, Any]:
    """Least privilege for a serving container: read the model data, pull the image, write logs and metrics."""
    return {"Version": "2012-10-17", "Statement": [
        _s3_read_statement(model_data),
        {"Sid": "PullImage", "Effect": "Allow", "Resource": "*",
         "Action": ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage"]},
        {"Sid": "Logs", "Effect": "Allow", "Resource": "arn:aws:logs:*:*:log-group:/aws/sagemaker/*",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]},
        {"Sid": "Metrics", "Effect": "Allow", "Resource": "*", "Action": ["cloudwatch:PutMetricData"]},
    ]}


def ensure_role(aws: AwsSession, role_name: str, *, service: str, policy: dict[str, Any],
                conditions: dict[str, Any] | None = None, progress: Progress | None = print) -> tuple[str, bool]:
    """(role ARN, created): create `role_name` trusted by `service` with an inline policy, or reuse it."""
    try:
        role = aws.call("iam", "create_role", RoleName=role_name,
                        AssumeRolePolicyDocument=_trust_policy(service, conditions),
                        Description=f"created by nbtoolkit for {service}",
                        Tags=[{"Key": "created-by", "Value": "nbtoolkit"}])["Role"]
        created = True
    except AwsError as error:
        if error.code != "EntityAlreadyExists":
            raise
        role = aws.call("iam", "get_role", RoleName=role_name)["Role"]
        created = False
    if created:
        aws.call("iam", "put_role_policy", RoleName=role_name, PolicyName=f"{role_name}-access",
                 PolicyDocument=json.dumps(policy))
    if progress:
        progress(f"{'created' if created else 'reusing existing'} IAM role {role['Arn']}")
    return role["Arn"], created


def delete_role(role: str, *, session: AwsSession | Any | None = None, region: str | None = None,
                progress: Progress | None = print) -> bool:
    """Delete an IAM role the way the case study's cleanup does: detach managed policies, delete inline ones, remove it
    from instance profiles, then delete it. Accepts a name or an ARN; False when it did not exist."""
    name = role.rsplit("/", 1)[-1]
    aws = _aws(session, region)
    try:
        attached = aws.call("iam", "list_attached_role_policies", RoleName=name)["AttachedPolicies"]
    except AwsError as error:
        if error.code == "NoSuchEntity":
            return False
        raise
    for policy in attached:
        aws.call("iam", "detach_role_policy", RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy_name in aws.call("iam", "list_role_policies", RoleName=name)["PolicyNames"]:
        aws.call("iam", "delete_role_policy", RoleName=name, PolicyName=policy_name)
    for profile in aws.call("iam", "list_instance_profiles_for_role", RoleName=name)["InstanceProfiles"]:
        aws.call("iam", "remove_role_from_instance_profile", InstanceProfileName=profile["InstanceProfileName"],
                 RoleName=name)
    aws.call("iam", "delete_role", RoleName=name)
    if progress:
        progress(f"deleted IAM role {name}")
    return True


_remove_role = delete_role  # the cleanup functions below take a `delete_role` flag that shadows the name


# ---------------------------------------------------------------------------------------------------------------
# SageMaker endpoints


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": "created-by", "Value": "nbtoolkit"}, *({"Key": k, "Value": v} for k, v in tags.items())]


def _create_model_retrying(aws: AwsSession, params: dict[str, Any], role_is_new: bool, attempts: int = 10,
                           delay: float = 6.0) -> None:
    """CreateModel; a role created seconds ago is not assumable yet (IAM is eventually consistent): retry."""
    for attempt in range(attempts):
        try:
            aws.call("sagemaker", "create_model", **params)
            return
        except AwsError as error:
            propagating = role_is_new and error.code == "ValidationException" and "assume" in str(error).lower()
            if not propagating or attempt + 1 == attempts:
                raise
            aws.sleep(delay)


def deploy_model(model_data: str | Path, config: DeployConfig, *, session: AwsSession | Any | None = None,
                 region: str | None = None, upload_to: str | None = None, wait: bool = True, poll: float = 30.0,
                 timeout: float = 3600.0, progress: Progress | None = print) -> Deployment:
    """Create the model, endpoint config and endpoint serving `model_data`, and (wait=True) wait until InService.

    model_data: an S3 prefix of Hugging Face files, an s3://.../model.tar.gz, or a local model / run directory
    (uploaded first to `upload_to`). With config.role None the execution role config.role_name is created (or
    reused). When creating a resource fails, the ones made before it are deleted again. An endpoint that ends
    Failed raises DeployError with SageMaker's reason; its resources stay for inspection (delete_deployment).
    """
    aws = _aws(session, region)
    region = aws.require_region()
    if not str(model_data).startswith("s3://"):
        if not upload_to:
            raise ValueError(f"{model_data} is local: pass upload_to='s3://bucket/prefix/' to upload it first")
        model_data = upload_model(model_data, upload_to, session=aws, progress=progress)
    model_data = str(model_data)
    container = {"Image": config.image_uri or serving_image_uri(config.container, region),
                 **model_data_source(model_data), "Environment": container_environment(config)}
    stamp = _stamp()
    model_name = _resource_name(config.endpoint_name, f"model-{stamp}")
    config_name = _resource_name(config.endpoint_name, f"config-{stamp}")
    made: list[tuple[str, str]] = []
    role_arn, role_created = config.role, False
    try:
        if role_arn is None:
            role_arn, role_created = ensure_role(aws, config.role_name, service="sagemaker.amazonaws.com",
                                                 policy=endpoint_role_policy(model_data), progress=progress)
            if role_created:
                made.append(("role", config.role_name))
        _create_model_retrying(aws, {"ModelName": model_name, "ExecutionRoleArn": role_arn,
                                     "PrimaryContainer": container, "Tags": _tags(config.tags)}, role_created)
        made.append(("model", model_name))
        aws.call("sagemaker", "create_endpoint_config", EndpointConfigName=config_name, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model_name, "InstanceType": config.instance_type,
            "InitialInstanceCount": config.instance_count,
            "ContainerStartupHealthCheckTimeoutInSeconds": config.startup_timeout,
            "ModelDataDownloadTimeoutInSeconds": config.download_timeout}], Tags=_tags(config.tags))
        made.append(("endpoint_config", config_name))
        aws.call("sagemaker", "create_endpoint", EndpointName=config.endpoint_name, EndpointConfigName=config_name,
                 Tags=_tags(config.tags))
    except AwsError as error:
        _roll_back(aws, made, progress)
        if error.code == "ValidationException" and "already exist" in str(error).lower():
            raise DeployError(f"endpoint {config.endpoint_name!r} already exists in {region}: delete it "
                              f"(delete_deployment({config.endpoint_name!r})) or choose another endpoint_name",
                              code=error.code) from error
        raise
    deployment = Deployment(config.endpoint_name, config_name, model_name, region, container["Image"], model_data,
                            config.instance_type, config.instance_count, role_arn, role_created)
    if progress:
        progress(f"creating endpoint {config.endpoint_name} ({config.instance_count} x {config.instance_type}, "
                 f"{config.container} image {container['Image']})")
    if wait:
        wait_for_endpoint(deployment, session=aws, poll=poll, timeout=timeout, progress=progress)
    return deployment


def _roll_back(aws: AwsSession, made: list[tuple[str, str]], progress: Progress | None) -> None:
    for kind, name in reversed(made):
        try:
            if kind == "role":
                delete_role(name, session=aws, progress=None)
            elif kind == "model":
                aws.call("sagemaker", "delete_model", ModelName=name)
            elif kind == "endpoint_config":
                aws.call("sagemaker", "delete_endpoint_config", EndpointConfigName=name)
        except AwsError as error:
            if progress:
                progress(f"could not remove {kind} {name} after the failure: {error}")


def wait_for_endpoint(deployment: Deployment | str, *, session: AwsSession | Any | None = None,
                      region: str | None = None, poll: float = 30.0, timeout: float = 3600.0,
                      progress: Progress | None = print) -> str:
    """Poll DescribeEndpoint until InService (returned) or Failed/OutOfService (DeployError with the reason)."""
    name = deployment.endpoint_name if isinstance(deployment, Deployment) else deployment
    aws = _aws(session, region or getattr(deployment, "region", None))
    started = time.monotonic()
    last = None
    while True:
        described = aws.call("sagemaker", "describe_endpoint", EndpointName=name)
        status = described["EndpointStatus"]
        if status != last and progress:
            progress(f"endpoint {name}: {status} after {time.monotonic() - started:.0f} s")
        last = status
        if isinstance(deployment, Deployment):
            deployment.status = status
            deployment.failure_reason = described.get("FailureReason")
        if status in _ENDPOINT_TERMINAL:
            if _ENDPOINT_TERMINAL[status]:
                return status
            raise DeployError(f"endpoint {name} is {status}: {described.get('FailureReason') or 'no reason given'}. "
                              f"Its logs are in CloudWatch (/aws/sagemaker/Endpoints/{name}); delete it with "
                              f"delete_deployment({name!r})", code=status)
        if time.monotonic() - started > timeout:
            raise DeployError(f"endpoint {name} still {status} after {timeout:g} s; it keeps deploying (check it "
                              "with wait_for_endpoint, remove it with delete_deployment)", code="Timeout")
        aws.sleep(poll)


def delete_deployment(deployment: Deployment | str, *, session: AwsSession | Any | None = None,
                      region: str | None = None, delete_role: bool | None = None,
                      progress: Progress | None = print) -> dict[str, list[str]]:
    """Delete the endpoint, its endpoint config and model(s), and the execution role (the case study's cleanup).

    A Deployment names everything; an endpoint name is looked up (DescribeEndpoint, DescribeEndpointConfig).
    The role is deleted when deploy_model created it (delete_role=None), or as delete_role says. Resources already
    gone are skipped. Returns what was deleted, by kind.
    """
    aws = _aws(session, region or getattr(deployment, "region", None))
    deleted: dict[str, list[str]] = {"endpoint": [], "endpoint_config": [], "model": [], "role": []}
    if isinstance(deployment, Deployment):
        endpoint, configs, models = deployment.endpoint_name, [deployment.endpoint_config_name], \
            [deployment.model_name]
        role = deployment.role_arn if (deployment.role_created if delete_role is None else delete_role) else None
    else:
        endpoint, configs, models, role = str(deployment), [], [], None
        described = _describe_or_none(aws, "describe_endpoint", EndpointName=endpoint)
        if described is not None:
            configs.append(described["EndpointConfigName"])
        for config_name in configs:
            config = _describe_or_none(aws, "describe_endpoint_config", EndpointConfigName=config_name)
            models += [variant["ModelName"] for variant in (config or {}).get("ProductionVariants", [])]
        if delete_role:
            for model in models:
                described_model = _describe_or_none(aws, "describe_model", ModelName=model)
                role = (described_model or {}).get("ExecutionRoleArn") or role
    steps = [("endpoint", "delete_endpoint", "EndpointName", [endpoint]),
             ("endpoint_config", "delete_endpoint_config", "EndpointConfigName", configs),
             ("model", "delete_model", "ModelName", models)]
    for kind, operation, key, names in steps:
        for name in names:
            if _delete_if_present(aws, operation, **{key: name}):
                deleted[kind].append(name)
                if progress:
                    progress(f"deleted {kind.replace('_', ' ')} {name}")
    if role and _remove_role(role, session=aws, progress=progress):
        deleted["role"].append(role.rsplit("/", 1)[-1])
    return deleted


def _is_missing(error: AwsError) -> bool:
    text = str(error).lower()
    return error.code in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException") and (
        "could not find" in text or "does not exist" in text or "not found" in text)


def _describe_or_none(aws: AwsSession, operation: str, **params: Any) -> dict[str, Any] | None:
    try:
        return aws.call("sagemaker", operation, **params)
    except AwsError as error:
        if _is_missing(error):
            return None
        raise


def _delete_if_present(aws: AwsSession, operation: str, **params: Any) -> bool:
    try:
        aws.call("sagemaker", operation, **params)
        return True
    except AwsError as error:
        if _is_missing(error):
            return False
        raise


# ---------------------------------------------------------------------------------------------------------------
# Invoking endpoints


def endpoint_name_and_region(target: str) -> tuple[str, str | None]:
    """(endpoint name, region or None) from an endpoint name or a SageMaker endpoint ARN."""
    match = ENDPOINT_ARN.match(target)
    if match:
        return match.group("name"), match.group("region")
    if not ENDPOINT_NAME.match(target):
        raise ValueError(f"{target!r} is neither a URL (http://...), a SageMaker endpoint name or ARN, nor a Bedrock "
                         "model ARN")
    return target, None


def is_bedrock_arn(target: str) -> bool:
    return bool(BEDROCK_ARN.match(target))


def _inference_error(error: AwsError, name: str, streaming: bool):
    text = str(error)
    # A 404 on the streaming route: a region, VPC endpoint or emulator without InvokeEndpointWithResponseStream.
    if streaming and (error.code in ("404", "NotImplemented") or any(m in text.lower() for m in _STREAM_REFUSED)):
        text = text.split("<", 1)[0].strip() if "<html" in text.lower() else text
        return StreamingUnsupported(f"endpoint {name} does not stream responses ({text}); call invoke_inference "
                                    "with stream=False", code=error.code)
    if error.code == "ModelError":
        return InferenceError(f"the model container of endpoint {name} failed the request: {text}", code=error.code)
    if error.code == "ValidationError" and "not found" in text.lower():
        return InferenceError(f"endpoint {name} does not exist in this region (deployed elsewhere, or deleted?)",
                              code=error.code)
    return error


def invoke_endpoint(name: str, body: dict[str, Any], *, stream: bool = False,
                    session: AwsSession | Any | None = None, region: str | None = None,
                    started: float | None = None):
    """Send an OpenAI chat body to a SageMaker endpoint: InvokeEndpoint, or with stream=True
    InvokeEndpointWithResponseStream. Returns an InferenceResult or an InferenceStream."""
    aws = _aws(session, region)
    started = time.perf_counter() if started is None else started
    payload = json.dumps({**body, "stream": stream}).encode()
    try:
        if not stream:
            response = aws.call("sagemaker-runtime", "invoke_endpoint", EndpointName=name, Body=payload,
                                ContentType="application/json", Accept="application/json")
            return result_from_body(response["Body"].read(), name, time.perf_counter() - started)
        response = aws.call("sagemaker-runtime", "invoke_endpoint_with_response_stream", EndpointName=name,
                            Body=payload, ContentType="application/json")
    except AwsError as error:
        raise _inference_error(error, name, stream) from error
    return InferenceStream(events_from_lines(_payload_parts(response["Body"], name)), name, started)


def _payload_parts(event_stream, name: str) -> Iterator[bytes]:
    from botocore.exceptions import EventStreamError

    try:
        for event in event_stream:
            if "PayloadPart" in event:
                yield event["PayloadPart"].get("Bytes", b"")
            else:
                kind, detail = next(iter(event.items()))
                raise InferenceError(f"endpoint {name} broke off the stream ({kind}): {detail.get('Message')}",
                                     code=kind)
    except EventStreamError as error:
        raise InferenceError(f"endpoint {name} broke off the stream ({error_code(error)}): {error_message(error)}",
                             code=error_code(error)) from error
    finally:
        close = getattr(event_stream, "close", None)
        if close:
            close()


# ---------------------------------------------------------------------------------------------------------------
# Bedrock custom model import


_BEDROCK_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9+\-.]){0,62}$")


@dataclass(frozen=True)
class BedrockImportConfig:
    """A Bedrock Custom Model Import job (CreateModelImportJob) for Hugging Face files on S3."""

    imported_model_name: str = field(metadata={"help": "name of the model in Bedrock (1-63 characters)"})
    job_name: str | None = field(default=None, metadata={"help": "import job name; None: <model name>-<time>"})
    role: str | None = field(default=None, metadata={
        "help": "service role ARN Bedrock assumes to read the files; None: create (or reuse) role_name"})
    role_name: str = field(default=DEFAULT_IMPORT_ROLE, metadata={"help": "role to create when role is None"})
    kms_key_id: str | None = field(default=None, metadata={"help": "KMS key to encrypt the imported model"})
    tags: dict[str, str] = field(default_factory=dict, metadata={"help": "tags on the job and the imported model"})

    def __post_init__(self) -> None:
        for name in ("imported_model_name", "job_name"):
            value = getattr(self, name)
            if value is not None and not _BEDROCK_NAME.match(value):
                raise ValueError(f"{name} {value!r}: 1-63 letters, digits, hyphens, dots and plus signs, starting "
                                 "with a letter or digit")
        _check_role(self.role, self.role_name)


@dataclass
class BedrockImport(_Record):
    """What import_to_bedrock started: the job, the imported model's ARN once Completed, the role."""

    job_arn: str
    job_name: str
    imported_model_name: str
    region: str
    model_data: str
    role_arn: str
    role_created: bool = False
    status: str = "InProgress"
    model_arn: str | None = None
    failure_message: str | None = None


def check_bedrock_importable(model: str | Path) -> list[str]:
    """Offline checks of a local model directory against Custom Model Import: problems, empty when fine."""
    try:
        files = model_files(model)
    except DeployError as error:
        return [str(error)]
    names = {f.name for f in files}
    directory = files[0].parent
    problems = []
    config = json.loads((directory / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not set(architectures) & BEDROCK_ARCHITECTURES:
        problems.append(f"{directory / 'config.json'}: architecture {architectures or 'unknown'} is not one Bedrock "
                        f"Custom Model Import supports ({', '.join(sorted(BEDROCK_ARCHITECTURES))})")
    if not names & {"tokenizer.json", "tokenizer.model"} or "tokenizer_config.json" not in names:
        problems.append(f"{directory}: the tokenizer files are missing (tokenizer.json or tokenizer.model, and "
                        "tokenizer_config.json); save the tokenizer next to the model")
    return problems


def import_to_bedrock(model_data: str | Path, config: BedrockImportConfig, *,
                      session: AwsSession | Any | None = None, region: str | None = None,
                      upload_to: str | None = None, wait: bool = True, poll: float = 60.0,
                      timeout: float = 7200.0, progress: Progress | None = print) -> BedrockImport:
    """Start CreateModelImportJob for the Hugging Face files at `model_data` (an S3 prefix, or a local model / run
    directory uploaded to `upload_to` after the offline checks) and (wait=True) wait until it ends."""
    aws = _aws(session, region)
    region = aws.require_region()
    if not str(model_data).startswith("s3://"):
        problems = check_bedrock_importable(model_data)
        if problems:
            raise DeployError("the model cannot be imported into Bedrock:\n  - " + "\n  - ".join(problems))
        if not upload_to:
            raise ValueError(f"{model_data} is local: pass upload_to='s3://bucket/prefix/' to upload it first")
        model_data = upload_model(model_data, upload_to, session=aws, progress=progress)
    model_data = str(model_data)
    if model_data.endswith(".tar.gz"):
        raise ValueError("Bedrock imports uncompressed Hugging Face files: pass the S3 prefix that holds them, not "
                         "a model.tar.gz")
    bucket, _ = parse_s3_uri(model_data)
    prefix = model_data if model_data.endswith("/") else model_data + "/"
    role_arn, role_created = config.role, False
    if role_arn is None:
        account = aws.account_id()
        conditions = {"StringEquals": {"aws:SourceAccount": account},
                      "ArnEquals": {"aws:SourceArn": f"arn:aws:bedrock:{region}:{account}:model-import-job/*"}}
        policy = {"Version": "2012-10-17", "Statement": [{
            **_s3_read_statement(prefix), "Condition": {"StringEquals": {"aws:ResourceAccount": account}}}]}
        role_arn, role_created = ensure_role(aws, config.role_name, service="bedrock.amazonaws.com", policy=policy,
                                             conditions=conditions, progress=progress)
    job_name = config.job_name or _resource_name(config.imported_model_name, _stamp())
    tags = [{"key": "created-by", "value": "nbtoolkit"}, *({"key": k, "value": v} for k, v in config.tags.items())]
    params: dict[str, Any] = {"jobName": job_name, "importedModelName": config.imported_model_name,
                              "roleArn": role_arn, "modelDataSource": {"s3DataSource": {"s3Uri": prefix}},
                              "jobTags": tags, "importedModelTags": tags}
    if config.kms_key_id:
        params["importedModelKmsKeyId"] = config.kms_key_id
    try:
        job_arn = aws.call("bedrock", "create_model_import_job", context={"bucket": bucket}, **params)["jobArn"]
    except AwsError:
        if role_created:
            delete_role(config.role_name, session=aws, progress=None)
        raise
    record = BedrockImport(job_arn, job_name, config.imported_model_name, region, prefix, role_arn, role_created)
    if progress:
        progress(f"Bedrock import job {job_name} started ({job_arn})")
    if wait:
        wait_for_import(record, session=aws, poll=poll, timeout=timeout, progress=progress)
    return record


def wait_for_import(record: BedrockImport, *, session: AwsSession | Any | None = None, poll: float = 60.0,
                    timeout: float = 7200.0, progress: Progress | None = print) -> BedrockImport:
    """Poll GetModelImportJob until Completed (the record gets model_arn) or Failed (DeployError)."""
    aws = _aws(session, record.region)
    started = time.monotonic()
    last = None
    while True:
        job = aws.call("bedrock", "get_model_import_job", jobIdentifier=record.job_arn)
        record.status = job["status"]
        record.model_arn = job.get("importedModelArn") or record.model_arn
        record.failure_message = job.get("failureMessage")
        if record.status != last and progress:
            progress(f"import job {record.job_name}: {record.status} after {time.monotonic() - started:.0f} s")
        last = record.status
        if record.status == "Completed":
            return record
        if record.status == "Failed":
            raise DeployError(f"Bedrock import job {record.job_name} failed: {record.failure_message or 'no reason'}",
                              code="Failed")
        if time.monotonic() - started > timeout:
            raise DeployError(f"import job {record.job_name} still {record.status} after {timeout:g} s",
                              code="Timeout")
        aws.sleep(poll)


def delete_bedrock_import(record: BedrockImport, *, session: AwsSession | Any | None = None,
                          delete_role: bool | None = None, progress: Progress | None = print) -> dict[str, list[str]]:
    """Delete the imported model (DeleteImportedModel) and the role import_to_bedrock created."""
    aws = _aws(session, record.region)
    deleted: dict[str, list[str]] = {"imported_model": [], "role": []}
    if record.model_arn:
        try:
            aws.call("bedrock", "delete_imported_model", modelIdentifier=record.model_arn)
            deleted["imported_model"].append(record.model_arn)
            if progress:
                progress(f"deleted imported model {record.imported_model_name}")
        except AwsError as error:
            if error.code not in ("ResourceNotFoundException", "ResourceNotFound"):
                raise
    if (record.role_created if delete_role is None else delete_role) and \
            _remove_role(record.role_arn, session=aws, progress=progress):
        deleted["role"].append(record.role_arn.rsplit("/", 1)[-1])
    return deleted


def _converse_messages(messages: Sequence[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    system, turns = [], []
    for message in messages:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        if message["role"] in ("system", "developer"):
            system.append({"text": text})
        else:
            turns.append({"role": message["role"], "content": [{"text": text}]})
    return system, turns


_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def invoke_bedrock(model_arn: str, messages: Sequence[dict[str, Any]], *, stream: bool = False,
                   max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                   stop: str | Sequence[str] | None = None, session: AwsSession | Any | None = None,
                   region: str | None = None, started: float | None = None):
    """Ask a Bedrock model (e.g. an imported one) through Converse / ConverseStream."""
    match = BEDROCK_ARN.match(model_arn)
    aws = _aws(session, region or (match.group("region") if match else None))
    started = time.perf_counter() if started is None else started
    system, turns = _converse_messages(messages)
    inference = {"maxTokens": max_tokens, "temperature": temperature, "topP": top_p,
                 "stopSequences": [stop] if isinstance(stop, str) else (list(stop) if stop else None)}
    params: dict[str, Any] = {"modelId": model_arn, "messages": turns}
    if system:
        params["system"] = system
    if any(v is not None for v in inference.values()):
        params["inferenceConfig"] = {k: v for k, v in inference.items() if v is not None}
    if not stream:
        response = aws.call("bedrock-runtime", "converse", **params)
        text = "".join(block.get("text", "") for block in response["output"]["message"]["content"])
        usage = response.get("usage", {})
        return InferenceResult(text, _STOP_REASONS.get(response.get("stopReason"), response.get("stopReason")),
                               {"prompt_tokens": usage.get("inputTokens"),
                                "completion_tokens": usage.get("outputTokens"),
                                "total_tokens": usage.get("totalTokens")} if usage else {},
                               model_arn, time.perf_counter() - started, model_arn, raw=response)
    response = aws.call("bedrock-runtime", "converse_stream", **params)
    return InferenceStream(_converse_events(response["stream"]), model_arn, started)


def _converse_events(event_stream) -> Iterator[tuple[str, Any]]:
    for event in event_stream:
        if "contentBlockDelta" in event:
            yield "text", event["contentBlockDelta"].get("delta", {}).get("text", "")
        elif "messageStop" in event:
            reason = event["messageStop"].get("stopReason")
            yield "finish", _STOP_REASONS.get(reason, reason)
        elif "metadata" in event and "usage" in event["metadata"]:
            usage = event["metadata"]["usage"]
            yield "usage", {"prompt_tokens": usage.get("inputTokens"), "completion_tokens": usage.get("outputTokens"),
                            "total_tokens": usage.get("totalTokens")}

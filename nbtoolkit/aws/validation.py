"""Offline checks of AWS names and shapes: role ARNs, buckets, S3 URIs, regions, instance types, job names.

Each check returns None when the value is fine, else a message that says what is wrong and what a valid value
looks like. Nothing here talks to AWS.
"""

from __future__ import annotations

import re
import uuid
from typing import NamedTuple

ROLE_ARN = re.compile(r"^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:iam::(?P<account>\d{12}):role/(?P<path>[\w+=,.@/-]*/)?"
                      r"(?P<name>[\w+=,.@-]{1,64})$")
LAMBDA_ARN = re.compile(r"^arn:aws(?:-cn|-us-gov)?:lambda:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d):(?P<account>\d{12}):"
                        r"function:(?P<name>[a-zA-Z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$")
REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso|-isob)?-[a-z]+-\d$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
# SageMaker training job names; ModelTrainer appends "-YYYYmmddHHMMSS" (15 characters) to the base name, to
# which we add a 5-character launch id first: two launches within one second must not share a name.
JOB_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
JOB_NAME_MAX = 63
TIMESTAMP_SUFFIX = 15
LAUNCH_ID_SUFFIX = 5
BASE_NAME_MAX = JOB_NAME_MAX - TIMESTAMP_SUFFIX - LAUNCH_ID_SUFFIX


def launch_base_name(name: str) -> str:
    """`name` plus a fresh 4-hex launch id (LAUNCH_ID_SUFFIX characters with the dash)."""
    return f"{name}-{uuid.uuid4().hex[:LAUNCH_ID_SUFFIX - 1]}"


class Accelerator(NamedTuple):
    gpus: int
    gpu_memory_gb: int
    gpu: str
    bf16: bool


# SageMaker training instance types with NVIDIA GPUs (what the Hugging Face PyTorch GPU image runs on).
GPU_INSTANCES: dict[str, Accelerator] = {
    **{f"ml.g4dn.{s}": Accelerator(1, 16, "T4", False) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge",
                                                                 "16xlarge")},
    "ml.g4dn.12xlarge": Accelerator(4, 64, "T4", False),
    **{f"ml.g5.{s}": Accelerator(1, 24, "A10G", True) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge",
                                                                "16xlarge")},
    "ml.g5.12xlarge": Accelerator(4, 96, "A10G", True), "ml.g5.24xlarge": Accelerator(4, 96, "A10G", True),
    "ml.g5.48xlarge": Accelerator(8, 192, "A10G", True),
    **{f"ml.g6.{s}": Accelerator(1, 24, "L4", True) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge",
                                                              "16xlarge")},
    "ml.g6.12xlarge": Accelerator(4, 96, "L4", True), "ml.g6.24xlarge": Accelerator(4, 96, "L4", True),
    "ml.g6.48xlarge": Accelerator(8, 192, "L4", True),
    **{f"ml.g6e.{s}": Accelerator(1, 48, "L40S", True) for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge",
                                                                 "16xlarge")},
    "ml.g6e.12xlarge": Accelerator(4, 192, "L40S", True), "ml.g6e.24xlarge": Accelerator(4, 192, "L40S", True),
    "ml.g6e.48xlarge": Accelerator(8, 384, "L40S", True),
    "ml.p3.2xlarge": Accelerator(1, 16, "V100", False), "ml.p3.8xlarge": Accelerator(4, 64, "V100", False),
    "ml.p3.16xlarge": Accelerator(8, 128, "V100", False), "ml.p3dn.24xlarge": Accelerator(8, 256, "V100", False),
    "ml.p4d.24xlarge": Accelerator(8, 320, "A100", True), "ml.p4de.24xlarge": Accelerator(8, 640, "A100", True),
    "ml.p5.48xlarge": Accelerator(8, 640, "H100", True), "ml.p5e.48xlarge": Accelerator(8, 1128, "H200", True),
    "ml.p5en.48xlarge": Accelerator(8, 1128, "H200", True),
}
MAX_INSTANCE_COUNT = 64


def check_role_arn(role: str | None) -> str | None:
    if not role:
        return "a role is required: the ARN of an IAM role SageMaker can assume, e.g. " \
               "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
    if not ROLE_ARN.match(role):
        hint = " (that is a role name; pass the full ARN)" if "/" not in role and ":" not in role else ""
        return (f"{role!r} is not an IAM role ARN{hint}: expected arn:aws:iam::<12-digit account>:role/<name>, "
                "e.g. arn:aws:iam::123456789012:role/SageMakerExecutionRole")
    return None


def check_lambda_arn(arn: str | None) -> str | None:
    if not arn or not LAMBDA_ARN.match(arn):
        return (f"{arn!r} is not a Lambda function ARN: expected arn:aws:lambda:<region>:<account>:function:<name>"
                " (deploy one with nbtoolkit.aws.deploy_reward_lambda)")
    return None


def check_region(region: str | None) -> str | None:
    if not region:
        return "no region: pass region='us-east-1' (or set AWS_DEFAULT_REGION)"
    if not REGION.match(region):
        return f"{region!r} is not an AWS region name (e.g. us-east-1, eu-west-2)"
    return None


def check_bucket(bucket: str | None) -> str | None:
    """S3 bucket naming rules (general purpose buckets)."""
    if not bucket:
        return "a bucket is required (the S3 bucket that holds data, code, checkpoints and outputs)"
    if bucket.startswith("s3://"):
        return f"pass the bucket name without s3:// (got {bucket!r})"
    if not BUCKET.match(bucket) or ".." in bucket or _IP.match(bucket) or bucket.startswith("xn--") \
            or bucket.endswith(("-s3alias", "--ol-s3")):
        return (f"{bucket!r} is not a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, "
                "starting and ending with a letter or digit")
    return None


def check_prefix(prefix: str) -> str | None:
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return f"prefix {prefix!r}: no leading, trailing or double slashes (e.g. 'nbtoolkit/experiments')"
    if not PREFIX.match(prefix):
        return f"prefix {prefix!r} has characters S3 keys should avoid; use letters, digits and !_.*'()/-"
    if len(prefix) > 512:
        return f"prefix is {len(prefix)} characters; keep it under 512"
    return None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'key') of s3://bucket/key; ValueError with the reason otherwise."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an S3 URI (s3://bucket/key)")
    bucket, _, key = uri[5:].partition("/")
    problem = check_bucket(bucket)
    if problem:
        raise ValueError(f"{uri}: {problem}")
    if "//" in key:
        raise ValueError(f"{uri}: the key has an empty path segment ('//')")
    return bucket, key


def check_s3_uri(uri: str) -> str | None:
    try:
        parse_s3_uri(uri)
    except ValueError as error:
        return str(error)
    return None


def check_base_job_name(name: str) -> str | None:
    """A base name ModelTrainer can turn into a unique SageMaker job name ("<name>-<timestamp>")."""
    if not JOB_NAME.match(name):
        return (f"job name {name!r} is not allowed: letters, digits and hyphens, starting and ending with a letter "
                "or digit")
    if len(name) > BASE_NAME_MAX:
        return (f"job name {name!r} has {len(name)} characters; SageMaker adds a 15-character timestamp (and "
                f"nbtoolkit a 5-character launch id) and allows 63, so keep it to {BASE_NAME_MAX}")
    return None


def check_gpu_instance(instance_type: str, count: int) -> str | None:
    """The Hugging Face GPU image needs an NVIDIA GPU instance."""
    if not isinstance(instance_type, str) or not instance_type.startswith("ml."):
        return f"instance type {instance_type!r} must be a SageMaker type such as 'ml.g5.2xlarge'"
    if instance_type not in GPU_INSTANCES:
        from nbtoolkit.errors import closest_name

        near = closest_name(instance_type, GPU_INSTANCES)
        hint = f"; did you mean {near!r}?" if near else ""
        return (f"{instance_type} has no NVIDIA GPU the Hugging Face PyTorch GPU image can use{hint} (GPU training "
                f"types: {', '.join(sorted(GPU_INSTANCES)[:8])}, ...)")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_INSTANCE_COUNT:
        return f"instance_count must be an integer from 1 to {MAX_INSTANCE_COUNT}, got {count!r}"
    return None

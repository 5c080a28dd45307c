"""Reward functions as AWS Lambda functions for Nova RFT: package, deploy or update, and verify before a launch.

    zip_path = build_reward_zip("reward.zip", reward="binary_label", labels=("HQ", "LQ_EDIT", "LQ_CLOSE"))
    arn = deploy_reward_lambda("nbtoolkit-reward", lambda_role_arn, zip_path=zip_path, region="us-east-1")
    allow_role_to_invoke(sagemaker_role_arn, arn)        # the training role calls the Lambda during RFT
    print(verify_reward_lambda(arn, "prepared/rft/rft.jsonl"))   # RewardCheck: contract + correct > wrong

The zip holds nbtoolkit's rewards and labels modules (standard library only, no pandas or torch) and, for a
reward function of your own (`function="my_rewards.py:score"`), that module; the handler is
`nbtoolkit.aws.reward_handler.lambda_handler`. The check invokes the deployed function on sample rows with
nbtoolkit.rewards.verify_reward_function: the Lambda contract of docs/metrics.md and "replying with the reference
scores higher than a wrong reply".
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbtoolkit.aws.errors import AwsError
from nbtoolkit.aws.session import AwsSession

HANDLER = "nbtoolkit.aws.reward_handler.lambda_handler"
LAMBDA_RUNTIME = "python3.12"
# nbtoolkit files a reward Lambda needs (the package __init__ files import only _lazy: exports load on first use).
PACKAGED_MODULES = ("__init__.py", "_lazy.py", "rewards.py", "labels.py", "errors.py", "aws/__init__.py",
                    "aws/reward_handler.py")
SAMPLE_ROWS = 8
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # zip entries get a fixed timestamp: the same code gives the same zip


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def build_reward_zip(path: str | Path | None = None, *, function: str | None = None) -> bytes:
    """The deployment package (bytes; also written to `path` when given). `function` is "file.py:name" or
    "module:name" of your own reward (Lambda contract); without it the shipped rewards are used."""
    from nbtoolkit.aws.packaging import package_source

    source = package_source()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for relative in PACKAGED_MODULES:
            _add(archive, f"nbtoolkit/{relative}", (source / relative).read_bytes())
        if function is not None:
            module_file, _ = _function_file(function)
            _add(archive, module_file.name, module_file.read_bytes())
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _function_file(function: str) -> tuple[Path, str]:
    """(the module file, "module:function" as the Lambda imports it) of a reward function reference."""
    import importlib.util

    module, sep, name = function.rpartition(":")
    if not sep or not name.isidentifier():
        raise ValueError(f"reward function {function!r}: write it as 'my_rewards.py:score' or 'my_rewards:score'")
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no reward module at {path}")
    else:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or "." in module:
            raise ValueError(f"reward module {module!r}: pass a top-level module or a .py file (it is packaged at "
                             "the root of the zip)")
        path = Path(spec.origin)
    return path, f"{path.stem}:{name}"


def reward_environment(reward: str = "binary_label", labels: Sequence[str] | None = None,
                       function: str | None = None) -> dict[str, str]:
    """The Lambda's environment variables choosing its reward."""
    if function is not None:
        return {"NBT_REWARD_FUNCTION": _function_file(function)[1]}
    from nbtoolkit.rewards import get_reward

    get_reward(reward, labels)  # unknown names fail here, not in the Lambda
    env = {"REWARD_NAME": reward}
    if labels:
        env["REWARD_LABELS"] = ",".join(labels)
    return env


def deploy_reward_lambda(name: str, role_arn: str, *, reward: str = "binary_label",
                         labels: Sequence[str] | None = None, function: str | None = None,
                         zip_path: str | Path | None = None, aws: AwsSession | None = None, region: str | None = None,
                         timeout: int = 60, memory_mb: int = 256, wait: bool = True) -> str:
    """Create the Lambda function, or update its code and configuration when it exists; returns its ARN.
    `role_arn` is the Lambda's execution role (trusted by lambda.amazonaws.com)."""
    from nbtoolkit.aws.validation import check_role_arn

    problem = check_role_arn(role_arn)
    if problem:
        raise ValueError(f"Lambda execution role: {problem}")
    aws = aws or AwsSession(region=region)
    code = Path(zip_path).read_bytes() if zip_path is not None else build_reward_zip(function=function)
    environment = {"Variables": reward_environment(reward, labels, function)}
    settings = {"Runtime": LAMBDA_RUNTIME, "Role": role_arn, "Handler": HANDLER, "Timeout": int(timeout),
                "MemorySize": int(memory_mb), "Environment": environment,
                "Description": "nbtoolkit reward function (RFT reward Lambda contract)"}
    try:
        current = aws.call("lambda", "get_function", FunctionName=name)
    except AwsError as error:
        if error.code != "ResourceNotFoundException":
            raise
        current = None
    if current is None:
        arn = _create_function(aws, name, code, settings)
    else:
        aws.call("lambda", "update_function_code", FunctionName=name, ZipFile=code, Publish=True)
        _wait_updated(aws, name, wait)
        arn = aws.call("lambda", "update_function_configuration", FunctionName=name, **settings)["FunctionArn"]
    _wait_updated(aws, name, wait)
    return arn.rsplit(":", 1)[0] if arn.count(":") > 6 else arn


ROLE_PROPAGATION_TRIES = 8  # a new IAM role takes a few seconds before Lambda can assume it


def _create_function(aws: AwsSession, name: str, code: bytes, settings: dict[str, Any]) -> str:
    for attempt in range(ROLE_PROPAGATION_TRIES):
        try:
            return aws.call("lambda", "create_function", FunctionName=name, Code={"ZipFile": code}, Publish=True,
                            **settings)["FunctionArn"]
        except AwsError as error:
            if error.code != "InvalidParameterValueException" or "assume" not in str(error) \
                    or attempt + 1 == ROLE_PROPAGATION_TRIES:
                raise
            aws.sleep(5.0)
    raise AssertionError("unreachable")


def _wait_updated(aws: AwsSession, name: str, wait: bool, timeout: float = 120.0) -> None:
    """Lambda refuses a second update while one is in progress: wait for State Active and a finished update."""
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while True:
        config = aws.call("lambda", "get_function_configuration", FunctionName=name)
        if config.get("State", "Active") != "Pending" and config.get("LastUpdateStatus", "Successful") \
                != "InProgress":
            if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
                reason = config.get("StateReason") or config.get("LastUpdateStatusReason")
                raise AwsError(f"Lambda {name} failed to update: {reason}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Lambda {name} still updating after {timeout:g} s")
        aws.sleep(1.0)


def allow_role_to_invoke(role_arn: str, lambda_arn: str, *, aws: AwsSession | None = None,
                         policy_name: str = "nbtoolkit-invoke-reward") -> None:
    """Let the SageMaker training role invoke the reward Lambda (an inline policy on the role)."""
    aws = aws or AwsSession()
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                                                         "Resource": [lambda_arn, f"{lambda_arn}:*"]}]}
    aws.call("iam", "put_role_policy", RoleName=role_arn.rsplit("/", 1)[-1], PolicyName=policy_name,
             PolicyDocument=json.dumps(document), context={"role": role_arn})


def invoke_reward_lambda(function: str, samples: list[dict[str, Any]], *, aws: AwsSession) -> Any:
    """Invoke the Lambda with {"samples": [...]}; raises AwsError with the function's own error when it fails."""
    response = aws.call("lambda", "invoke", FunctionName=function, InvocationType="RequestResponse",
                        Payload=json.dumps({"samples": samples}).encode())
    payload = response["Payload"].read()
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)
    if response.get("FunctionError"):
        raise AwsError(f"Lambda {function} raised: {text[:500]}", code=response["FunctionError"])
    return json.loads(text) if text else None


def sample_rows(source: str | Path | Sequence[dict[str, Any]] | None, n: int = SAMPLE_ROWS,
                labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Reward samples: the first `n` rows of an RFT JSONL (or given samples), each with a reply to score."""
    if source is None:
        from nbtoolkit.rewards import STACKOVERFLOW_LABELS

        labels = tuple(labels or STACKOVERFLOW_LABELS)
        return [{"id": f"probe-{i}", "messages": [{"role": "user", "content": "Classify this question."},
                                                   {"role": "assistant", "content": label}],
                 "reference_answer": label} for i, label in enumerate(labels)]
    if isinstance(source, (str, Path)):
        from nbtoolkit.data import read_jsonl

        rows = []
        for row in read_jsonl(Path(source)):
            rows.append(row)
            if len(rows) >= n:
                break
    else:
        rows = list(source)[:n]
    samples = []
    for index, row in enumerate(rows):
        messages = [dict(m) for m in row.get("messages") or []]
        if not messages or messages[-1].get("role") != "assistant":
            messages.append({"role": "assistant", "content": str(row.get("reference_answer", ""))})
        samples.append({"id": str(row.get("id", f"row-{index + 1}")), "messages": messages,
                        "reference_answer": row.get("reference_answer")})
    return samples


def verify_reward_lambda(function: str, samples: str | Path | Sequence[dict[str, Any]] | None = None, *,
                         aws: AwsSession | None = None, region: str | None = None, n: int = SAMPLE_ROWS,
                         labels: Sequence[str] | None = None):
    """Invoke the deployed reward on sample rows and check it like verify_reward_function (a RewardCheck; its
    problems name what is wrong: a Lambda error, a contract violation, a reference not beating a wrong reply).
    Without samples, one probe per label (`labels`, default the Stack Overflow ones) is used."""
    from nbtoolkit.rewards import verify_reward_function

    aws = aws or AwsSession(region=region)
    rows = sample_rows(samples, n, labels)

    def remote(batch: list[dict[str, Any]]) -> Any:
        return invoke_reward_lambda(function, batch, aws=aws)

    remote.__name__ = f"lambda:{function.rsplit(':', 1)[-1]}"
    return verify_reward_function(remote, rows)

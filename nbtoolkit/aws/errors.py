"""AWS failures as errors a notebook user can act on: what went wrong, and what to do about it."""

from __future__ import annotations

from typing import Any

from nbtoolkit.errors import NbtoolkitError

THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "SlowDown", "ProvisionedThroughputExceededException", "RequestThrottled", "RequestThrottledException",
    "PriorRequestNotComplete", "LimitExceededException",
})
ACCESS_DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "Forbidden", "403",
})
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NoSuchEntity", "ResourceNotFound",
                             "ResourceNotFoundException", "404", "NotFound", "ValidationException"})


class AwsError(NbtoolkitError, RuntimeError):
    """A call to AWS failed; `.code` is the service's error code when there is one."""

    def __init__(self, message: str, *, code: str | None = None, action: str | None = None) -> None:
        self.code = code
        self.action = action
        super().__init__(message)


class MissingCredentials(AwsError):
    """No AWS credentials (or no region) are configured in this environment."""


class AccessDenied(AwsError):
    """AWS refused the call: the caller or the training role lacks a permission."""


class Throttled(AwsError):
    """AWS kept throttling the call after every retry."""


class BucketNotFound(AwsError):
    """The S3 bucket does not exist (or is in another account)."""


class RoleError(AwsError):
    """The IAM role ARN is malformed, does not exist, or SageMaker cannot assume it."""


class RemoteJobFailed(AwsError):
    """The SageMaker job ended Failed; `.failure_reason` is what SageMaker reported."""

    def __init__(self, message: str, *, failure_reason: str | None = None, job_name: str | None = None) -> None:
        self.failure_reason = failure_reason
        self.job_name = job_name
        super().__init__(message, code="Failed")


CREDENTIALS_HELP = ("configure credentials first: `aws configure` or `aws sso login`, the AWS_PROFILE or "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment variables, or run where an IAM role is "
                    "attached (SageMaker Studio, EC2)")


def error_code(error: BaseException) -> str | None:
    """The service error code of a botocore ClientError (or None)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status) if status else None
    return None


def error_message(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)
    return str(error)


def is_throttling(error: BaseException) -> bool:
    return error_code(error) in THROTTLING_CODES


def translate(error: BaseException, action: str, **context: Any) -> AwsError:
    """A botocore/boto3 exception as the AwsError subclass that says what to do; `action` names the call."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(error, AwsError):
        return error
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return MissingCredentials(f"{action}: no AWS credentials found; {CREDENTIALS_HELP}", action=action)
    if isinstance(error, NoRegionError):
        return MissingCredentials(f"{action}: no AWS region configured; pass region='us-east-1' (or set "
                                  "AWS_DEFAULT_REGION)", action=action)
    if isinstance(error, EndpointConnectionError):
        return AwsError(f"{action}: cannot reach AWS ({error}); check the network and the region", action=action)
    if not isinstance(error, ClientError):
        return AwsError(f"{action}: {type(error).__name__}: {error}", action=action)
    code = error_code(error) or "Unknown"
    message = error_message(error)
    bucket = context.get("bucket")
    role = context.get("role")
    if code in THROTTLING_CODES:
        return Throttled(f"{action}: AWS is throttling the calls ({code}) and every retry was refused; wait a "
                         "minute and try again, or ask for a higher quota", code=code, action=action)
    if code in ACCESS_DENIED_CODES:
        hint = ""
        if code in ("InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"):
            hint = "; the credentials are not valid: " + CREDENTIALS_HELP
        elif code in ("ExpiredToken", "ExpiredTokenException"):
            hint = "; the session credentials expired: refresh them (e.g. `aws sso login`)"
        elif bucket:
            hint = f"; the caller needs s3:GetObject/s3:PutObject/s3:ListBucket on bucket {bucket!r}"
        elif role:
            hint = f"; the caller needs iam:PassRole on {role} and the sagemaker:* actions for training jobs"
        return AccessDenied(f"{action}: access denied ({code}: {message}){hint}", code=code, action=action)
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and bucket):
        which = f"bucket {bucket!r}" if bucket else f"the S3 bucket ({message})"
        return BucketNotFound(f"{action}: {which} does not exist in this account; create it "
                              "(`aws s3 mb s3://NAME --region REGION`) or pass another bucket", code=code,
                              action=action)
    if code == "NoSuchEntity" and role:
        return RoleError(f"{action}: the IAM role {role} does not exist in this account ({message})", code=code,
                         action=action)
    if code == "ValidationException" and "role" in message.lower():
        return RoleError(f"{action}: SageMaker rejected the role: {message}", code=code, action=action)
    if code == "ResourceLimitExceeded":
        return AwsError(f"{action}: a SageMaker quota is too low ({message}); request an increase in the Service "
                        "Quotas console, or use another instance type or a lower instance count", code=code,
                        action=action)
    return AwsError(f"{action}: {code}: {message}", code=code, action=action)

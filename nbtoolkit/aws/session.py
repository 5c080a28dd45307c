"""One boto3 session for everything nbtoolkit does on AWS: cached clients, retries with backoff, clear errors.

    aws = AwsSession(region="us-east-1")              # or AwsSession(boto_session=boto3.Session(profile_name=...))
    aws.call("s3", "head_bucket", Bucket="my-bucket")  # throttling retried with exponential backoff and jitter

Credentials are read by boto3 from its usual chain and never copied anywhere: `scrub(text)` removes them (and
anything shaped like an access key) from text before nbtoolkit writes it to a run directory.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from nbtoolkit.aws.errors import MissingCredentials, is_throttling, translate

USER_AGENT = "nbtoolkit"
# Bounded exponential backoff with full jitter: attempt n waits uniform(0, min(MAX_DELAY, BASE * 2**n)) seconds.
MAX_ATTEMPTS = 6
BASE_DELAY = 1.0
MAX_DELAY = 20.0
REDACTED = "[REDACTED]"
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}\b")
_ASSIGNED_SECRET = re.compile(r"(?i)(aws_secret_access_key|aws_session_token|secretaccesskey|sessiontoken)"
                              r"(\s*[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]+)")
# Environment variables that carry credentials: never passed to a training container nor saved in job.json.
CREDENTIAL_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                  "AWS_SECURITY_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"})


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values, access key ids, or `aws_secret_access_key = ...` assignments."""
    for secret in sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _KEY_ID.sub(REDACTED, text)
    return _ASSIGNED_SECRET.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class AwsSession:
    """A boto3 session with a region, cached clients and a `call` that retries throttling with backoff."""

    def __init__(self, region: str | None = None, boto_session: Any = None, *, max_attempts: int = MAX_ATTEMPTS,
                 base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import boto3

        if boto_session is None:
            boto_session = boto3.Session(region_name=region) if region else boto3.Session()
        elif region and boto_session.region_name and boto_session.region_name != region:
            raise ValueError(f"region={region!r} but the boto session is for {boto_session.region_name!r}; "
                             "pass one of them")
        elif region and not boto_session.region_name:
            boto_session = boto3.Session(botocore_session=boto_session._session, region_name=region)
        self.boto = boto_session
        self.region = region or boto_session.region_name
        self.max_attempts = max(1, int(max_attempts))
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self._clients: dict[str, Any] = {}
        self._sagemaker_sessions: dict[tuple[str, str], Any] = {}

    def __repr__(self) -> str:
        return f"AwsSession(region={self.region!r})"

    # -- credentials ----------------------------------------------------------------------------------------------

    def has_credentials(self) -> bool:
        """True when boto3 finds credentials (nothing is sent to AWS)."""
        try:
            return self.boto.get_credentials() is not None
        except Exception:  # noqa: BLE001 - a broken profile means "no usable credentials" here
            return False

    def require_region(self) -> str:
        if not self.region:
            raise MissingCredentials("no AWS region configured: pass region='us-east-1' (or set AWS_DEFAULT_REGION)")
        return self.region

    def secret_values(self) -> list[str]:
        """The current access key id, secret key and session token (for scrubbing text; never stored)."""
        try:
            credentials = self.boto.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except Exception:  # noqa: BLE001
            return []
        if frozen is None:
            return []
        return [v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v]

    def scrub(self, text: str) -> str:
        return scrub(text, self.secret_values())

    # -- calls ----------------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A cached client for `service` in this session's region."""
        if service not in self._clients:
            from botocore.config import Config

            self.require_region()
            config = Config(retries={"mode": "standard", "max_attempts": 3}, user_agent_extra=USER_AGENT)
            self._clients[service] = self.boto.client(service, region_name=self.region, config=config)
        return self._clients[service]

    def call(self, service: str, operation: str, *, context: dict[str, Any] | None = None, **params: Any) -> Any:
        """client(service).operation(**params), retrying throttling with exponential backoff and full jitter;
        any failure becomes an AwsError that says what to do (`context` adds bucket=/role= for the message)."""
        action = f"{service} {operation}"
        for attempt in range(self.max_attempts):
            try:
                return getattr(self.client(service), operation)(**params)
            except Exception as error:  # noqa: BLE001 - translated below
                if is_throttling(error) and attempt + 1 < self.max_attempts:
                    self.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt)))
                    continue
                raise translate(error, action, **(context or {})) from error
        raise AssertionError("unreachable")

    def retrying(self, action: str, function: Callable[[], Any], **context: Any) -> Any:
        """Run `function` (e.g. an SDK call that makes several AWS calls) with the same throttling retries."""
        for attempt in range(self.max_attempts):
            try:
                return function()
            except Exception as error:  # noqa: BLE001
                if is_throttling(error) and attempt + 1 < self.max_attempts:
                    self.sleep(random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt)))
                    continue
                if type(error).__module__.startswith(("botocore", "boto3")):
                    raise translate(error, action, **context) from error
                raise
        raise AssertionError("unreachable")

    def account_id(self) -> str:
        return self.call("sts", "get_caller_identity")["Account"]

    def sagemaker_session(self, bucket: str, prefix: str = "", *, telemetry: bool = True) -> Any:
        """A SageMaker Python SDK v3 Session on this boto session, with `bucket`/`prefix` as its default location.
        telemetry=False sets the SDK's TelemetryOptOut; the SDK then validates that config with jsonschema on
        every lookup, which adds about a second per SDK call, so it is not the default."""
        key = (bucket, prefix, telemetry)
        if key not in self._sagemaker_sessions:
            from sagemaker.core.helper.session_helper import Session

            config = None if telemetry else {"SchemaVersion": "1.0",
                                             "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
            self._sagemaker_sessions[key] = Session(boto_session=self.boto, default_bucket=bucket,
                                                    default_bucket_prefix=prefix or None, sagemaker_config=config)
        return self._sagemaker_sessions[key]

"""Ask a chat model for a reply, wherever it runs: `invoke_inference(target, messages, stream=False)`.

The target is a `LocalServer`, the URL of any OpenAI-compatible server (`nbtoolkit serve`, vLLM, TGI), a SageMaker
endpoint name or ARN, or a Bedrock imported-model ARN. Non-streaming calls return an `InferenceResult`; streaming
calls return an `InferenceStream` that yields text pieces as they arrive. Only the standard library is used here
(boto3 for the AWS targets), so this module loads fast in any kernel.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from nbtoolkit.serve.responses import (
    Event,
    InferenceError,
    InferenceResult,
    InferenceStream,
    events_from_lines,
    result_from_body,
)

_ROLES = ("system", "developer", "user", "assistant")


def normalize_messages(messages: str | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A string becomes one user message; a list is checked for role and content, naming the bad item."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} or a string")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {message!r:.80}")
        if message["role"] not in _ROLES:
            raise ValueError(f"messages[{i}]: role {message['role']!r} is not one of {', '.join(_ROLES)}")
        out.append(dict(message))
    return out


def chat_payload(messages: Sequence[dict[str, Any]], *, stream: bool, model: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 stop: str | Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAI chat completions request body (fields left None are not sent)."""
    body: dict[str, Any] = {"messages": list(messages)}
    optional = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                "stop": stop if stop is None or isinstance(stop, str) else list(stop)}
    body.update({key: value for key, value in optional.items() if value is not None})
    body.update(extra or {})
    body["stream"] = bool(stream)
    return body


# ---------------------------------------------------------------------------------------------------------------
# Reading replies in the formats servers use


def chat_url(url: str) -> str:
    """The chat completions URL of a server given by its base URL, its /v1 URL or the full route."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


def _http_error(error: urllib.error.HTTPError, url: str) -> InferenceError:
    try:
        detail = json.loads(error.read().decode("utf-8", errors="replace"))
        message = detail.get("error", {}).get("message") or json.dumps(detail)
        code = detail.get("error", {}).get("code")
    except (ValueError, AttributeError, OSError):
        message, code = error.reason, None
    return InferenceError(f"{url} answered HTTP {error.code}: {message}", status=error.code, code=code)


def _post(url: str, body: dict[str, Any], api_key: str | None, timeout: float):
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs only, checked above
    except urllib.error.HTTPError as error:
        raise _http_error(error, url) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InferenceError(f"cannot reach {url}: {reason} (is the server running? `nbtoolkit serve` starts one)"
                             ) from None


def _http_events(response) -> Iterator[Event]:
    with response:
        yield from events_from_lines(iter(lambda: response.readline(), b""))


def invoke_inference(
    target: Any,
    messages: str | Sequence[dict[str, Any]],
    stream: bool = False,
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
    api_key: str | None = None,
    timeout: float = 300.0,
    region: str | None = None,
    session: Any = None,
    extra: dict[str, Any] | None = None,
) -> InferenceResult | InferenceStream:
    """Ask `target` to answer `messages` (a string is one user message).

    target: a LocalServer, an http(s) URL of an OpenAI-compatible server, a SageMaker endpoint name or ARN (or a
    deployment returned by nbtoolkit.aws.deploy_model), or a Bedrock imported-model ARN. api_key defaults to the
    LocalServer's key, else $NBTOOLKIT_SERVE_API_KEY. region/session (a boto3.Session) apply to AWS targets.
    Returns an InferenceResult, or with stream=True an InferenceStream to iterate (or `.show()`).
    """
    messages = normalize_messages(messages)
    settings = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "stop": stop}
    started = time.perf_counter()
    url = getattr(target, "url", None) if not isinstance(target, str) else None
    if url is not None and hasattr(target, "port"):  # a LocalServer
        api_key = api_key or target.api_key
        target = url
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        endpoint = chat_url(target)
        api_key = api_key or os.environ.get("NBTOOLKIT_SERVE_API_KEY") or None
        body = chat_payload(messages, stream=stream, extra=extra, **settings)
        if stream:
            body.setdefault("stream_options", {"include_usage": True})
        response = _post(endpoint, body, api_key, timeout)
        if stream:
            return InferenceStream(_http_events(response), endpoint, started)
        with response:
            data = response.read()
        return result_from_body(data, endpoint, time.perf_counter() - started)

    from nbtoolkit.aws import deploy  # on use: boto3 loads only for AWS targets

    endpoint_name = getattr(target, "endpoint_name", None)
    if endpoint_name is not None:  # a Deployment
        region = region or getattr(target, "region", None)
        target = endpoint_name
    if not isinstance(target, str):
        raise TypeError(f"cannot invoke a {type(target).__name__}: pass a LocalServer, a URL, a SageMaker endpoint "
                        "name or ARN, or a Bedrock model ARN")
    if deploy.is_bedrock_arn(target):
        return deploy.invoke_bedrock(target, messages, stream=stream, max_tokens=max_tokens,
                                     temperature=temperature, top_p=top_p, stop=stop, region=region,
                                     session=session, started=started)
    name, arn_region = deploy.endpoint_name_and_region(target)
    body = chat_payload(messages, stream=stream, extra=extra, **settings)
    return deploy.invoke_endpoint(name, body, stream=stream, region=region or arn_region, session=session,
                                  started=started)

"""Ask a chat model for a reply, wherever it runs: `invoke_inference(target, messages, stream=False)`.

The target is a `LocalServer`, the URL of any OpenAI-compatible server (`nbtoolkit serve`, vLLM, TGI), a SageMaker
endpoint name or ARN, or a Bedrock imported-model ARN. Non-streaming calls return an `InferenceResult`; streaming
calls return an `InferenceStream` that yields text pieces as they arrive. Only the standard library is used here
(boto3 for the AWS targets), so this module loads fast in any kernel.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from nbtoolkit.errors import NbtoolkitError

Event = tuple[str, Any]  # ("text", str) | ("finish", str) | ("usage", dict) | ("model", str)
_ROLES = ("system", "developer", "user", "assistant")
# TGI names finish reasons its own way.
_FINISH_NAMES = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "stop": "stop"}


class InferenceError(NbtoolkitError):
    """The model could not be asked or refused the request; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class StreamingUnsupported(InferenceError):
    """The target answers, but not with a response stream: ask again with stream=False."""


@dataclass
class InferenceResult:
    """One reply: its text, why it ended, token usage when the server reports it, and how long it took."""

    text: str
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    seconds: float = 0.0
    target: str = ""
    time_to_first_token: float | None = None
    raw: Any = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.text

    def show(self, file: TextIO | None = None) -> InferenceResult:
        """Print the reply and a one-line summary."""
        out = file or sys.stdout
        print(self.text, file=out)
        print(f"[{self.summary()}]", file=out)
        return self

    def summary(self) -> str:
        parts = [f"{self.seconds:.2f} s"]
        if self.time_to_first_token is not None:
            parts.append(f"first text after {self.time_to_first_token:.2f} s")
        if self.usage.get("completion_tokens") is not None:
            parts.append(f"{self.usage['completion_tokens']} tokens")
        if self.finish_reason:
            parts.append(f"finish_reason={self.finish_reason}")
        return ", ".join(parts)


class InferenceStream:
    """Text pieces of a streamed reply, in order, as they arrive. `result()` (or `show()`) drains the rest."""

    def __init__(self, events: Iterator[Event], target: str, started: float) -> None:
        self._events = events
        self.target = target
        self.started = started
        self.pieces: list[tuple[float, str]] = []  # (seconds since the request, text)
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.model: str | None = None
        self.done = False
        self.seconds = 0.0

    def __iter__(self) -> Iterator[str]:
        for kind, value in self._events:
            if kind == "text" and value:
                self.pieces.append((time.perf_counter() - self.started, value))
                yield value
            elif kind == "finish":
                self.finish_reason = value
            elif kind == "usage":
                self.usage = dict(value)
            elif kind == "model":
                self.model = value
        self.done = True
        self.seconds = time.perf_counter() - self.started

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in self.pieces)

    def result(self) -> InferenceResult:
        """Read what is left of the stream and return the whole reply."""
        for _ in self:
            pass
        return self._result()

    def show(self, file: TextIO | None = None) -> InferenceResult:
        """Print pieces as they arrive, then a one-line summary; returns the whole reply."""
        out = file or sys.stdout
        for piece in self:
            print(piece, end="", file=out, flush=True)
        result = self._result()
        print(f"\n[{result.summary()}]", file=out)
        return result

    def _result(self) -> InferenceResult:
        first = self.pieces[0][0] if self.pieces else None
        return InferenceResult(self.text, self.finish_reason, self.usage, self.model, self.seconds, self.target,
                               first, raw=self.pieces)

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        state = "done" if self.done else "streaming"
        return f"InferenceStream({self.target}, {state}, {len(self.pieces)} pieces)"


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


def events_from_json(data: Any) -> Iterator[Event]:
    """Events in one decoded chunk or response: OpenAI (chat.completion[.chunk]) or TGI/LMI token formats."""
    if isinstance(data, list):
        for item in data:
            yield from events_from_json(item)
        return
    if not isinstance(data, dict):
        yield "text", str(data)
        return
    if isinstance(data.get("error"), (dict, str)):
        error = data["error"]
        message = error.get("message", json.dumps(error)) if isinstance(error, dict) else error
        raise InferenceError(f"the server reported an error: {message}",
                             code=error.get("code") if isinstance(error, dict) else None)
    if data.get("model"):
        yield "model", data["model"]
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or choice.get("message") or {}
        content = delta.get("content")
        if content is None and "text" in choice:
            content = choice["text"]
        if content:
            yield "text", content
        if choice.get("finish_reason"):
            yield "finish", choice["finish_reason"]
    if isinstance(data.get("token"), dict):
        token = data["token"]
        if not token.get("special") and token.get("text"):
            yield "text", token["text"]
    elif "generated_text" in data and "choices" not in data:
        yield "text", data["generated_text"]
    details = data.get("details")
    if isinstance(details, dict) and details.get("finish_reason"):
        yield "finish", _FINISH_NAMES.get(details["finish_reason"], details["finish_reason"])
    if isinstance(data.get("usage"), dict):
        yield "usage", data["usage"]


def events_from_lines(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Events in a byte stream of server-sent events (`data: {...}`) or JSON lines, split anywhere."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if _line_done(line):
                return
            yield from _line_events(line)
    if buffer.strip() and not _line_done(buffer):
        yield from _line_events(buffer)


def _line_payload(line: bytes) -> str | None:
    text = line.decode("utf-8").strip()
    if not text or text.startswith((":", "event:", "id:", "retry:")):
        return None
    return text[5:].strip() if text.startswith("data:") else text


def _line_done(line: bytes) -> bool:
    return _line_payload(line) == "[DONE]"


def _line_events(line: bytes) -> Iterator[Event]:
    payload = _line_payload(line)
    if payload is None:
        return
    try:
        data = json.loads(payload)
    except ValueError:
        raise InferenceError(f"the stream sent a line that is not JSON: {payload[:200]!r}") from None
    yield from events_from_json(data)


def result_from_body(body: bytes, target: str, seconds: float) -> InferenceResult:
    """A whole (non-streamed) reply: OpenAI JSON, TGI/LMI JSON, or plain text."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return InferenceResult(text, None, {}, None, seconds, target, raw=text)
    pieces, finish, usage, model = [], None, {}, None
    for kind, value in events_from_json(data):
        if kind == "text":
            pieces.append(value)
        elif kind == "finish":
            finish = value
        elif kind == "usage":
            usage = dict(value)
        elif kind == "model":
            model = value
    return InferenceResult("".join(pieces), finish, usage, model, seconds, target, raw=data)


# ---------------------------------------------------------------------------------------------------------------
# Targets


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

    from nbtoolkit.aws import deploy

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

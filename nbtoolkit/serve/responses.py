"""What a chat model answers, whichever server it runs on: InferenceResult, InferenceStream, and the parsers that
turn an OpenAI-compatible (or TGI) JSON body or server-sent-event stream into them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from nbtoolkit.errors import NbtoolkitError

Event = tuple[str, Any]  # ("text", str) | ("finish", str) | ("usage", dict) | ("model", str)
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

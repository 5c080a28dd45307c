"""The HTTP side of the server: OpenAI-compatible routes, request validation, API key check, error bodies.

Routes: POST /v1/chat/completions (JSON, or server-sent events with `"stream": true`), GET /v1/models,
GET /v1/models/{id}, and GET /health (no key needed; says only that the server is up).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi import HTTPException as RouteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from starlette.exceptions import HTTPException

from nbtoolkit.serve.engine import ChatEngine, Completion, RequestError

logger = logging.getLogger(__name__)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


# torch.manual_seed takes any 64-bit value, signed or not.
SEED_RANGE = (-(2**63), 2**64 - 1)
DEFAULT_MAX_REQUEST_BYTES = 1_048_576
_NUMBERS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n")


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat completions request fields this server honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = 1
    logprobs: StrictBool | None = None
    tools: list[Any] | None = None

    @field_validator(*_NUMBERS, mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        # Pydantic's lax mode would read true as 1 and "8" as 8; the OpenAI API takes JSON numbers only.
        if value is not None and (isinstance(value, (bool, str)) or not isinstance(value, (int, float))):
            raise ValueError(f"must be a number, got {json.dumps(value) if _is_json(value) else type(value).__name__}")
        return value


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class _BodyLimit:
    """ASGI middleware: a request body above `limit` bytes gets 413 before it is read whole, parsed or
    tokenized (checked on Content-Length, and while reading a body sent without one)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.limit):
            response = _error(413, f"the request body has {length.decode(errors='replace')} bytes; this server "
                                   f"takes at most {self.limit:,}", code="request_too_large")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise RouteHTTPException(413, f"the request body is larger than {self.limit:,} bytes")
            return message

        await self.app(scope, limited_receive, send)


def _error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(_error_body(message, **kwargs), status_code=status)


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(engine: ChatEngine, *, api_key: str | None = None, default_max_tokens: int = 256,
               max_tokens_limit: int = 2048, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """A FastAPI app serving `engine`; with `api_key`, every /v1 route needs `Authorization: Bearer <key>`.

    Bodies above `max_request_bytes` get 413 before they are parsed.
    """
    app = FastAPI(title="nbtoolkit chat server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=max_request_bytes)
    expected = api_key.encode() if api_key else None

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        if expected is not None and request.url.path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), expected):
                what = "a wrong API key" if given else "no API key"
                return _error(401, f"this server needs an API key (Authorization: Bearer <key>); the request had "
                                   f"{what}", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = error.errors()
        first = problems[0] if problems else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', message)})"
        elif where:
            message = f"{'.'.join(where)}: {message}"
        return _error(400, message, param=".".join(where) or None)

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, error: RequestError):
        return _error(error.status, error.message, param=error.param, code=error.code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        code = "request_too_large" if error.status_code == 413 else None
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}", kind=kind, code=code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        logger.exception("request failed")
        return _error(500, f"the server failed: {type(error).__name__}: {error}", kind="server_error")

    def model_card() -> dict[str, Any]:
        return {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "nbtoolkit",
                "sampling_defaults": engine.sampling}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str):
        if model_id != engine.name:
            return _error(404, f"model {model_id!r} is not served here; this server serves {engine.name!r}",
                          param="model", code="model_not_found", kind="not_found_error")
        return model_card()

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatCompletionRequest):
        if body.model not in (None, "", engine.name):
            return _error(404, f"model {body.model!r} is not served here; this server serves {engine.name!r} "
                               "(GET /v1/models)", param="model", code="model_not_found", kind="not_found_error")
        if body.n != 1:
            raise RequestError("n must be 1: this server returns one choice per request", param="n")
        if body.logprobs:
            raise RequestError("logprobs are not supported by this server", param="logprobs")
        if body.tools:
            raise RequestError("tools (function calling) are not supported by this server", param="tools")
        if body.messages[-1].role == "assistant":
            raise RequestError("the last message must not be the assistant's: nothing would be asked",
                               param="messages")
        max_tokens = body.max_completion_tokens or body.max_tokens or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise RequestError(f"max_tokens {max_tokens} is above this server's limit of {max_tokens_limit}",
                               param="max_tokens")
        settings = engine.settings(
            max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
            stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
            seed=body.seed)
        messages = [message.as_template_message() for message in body.messages]
        prompt = engine.encode(messages)
        settings = engine.check(prompt, settings)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        completion = Completion()
        pieces = engine.stream(prompt, settings, completion)
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_chunks(pieces, completion, ident, created, engine.name, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        for _ in pieces:
            pass
        return {"id": ident, "object": "chat.completion", "created": created, "model": engine.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                             "logprobs": None, "finish_reason": completion.finish_reason}],
                "usage": completion.usage}

    return app


def _chunks(pieces: Iterator[str], completion: Completion, ident: str, created: int, model: str,
            include_usage: bool) -> Iterator[str]:
    """Server-sent events: a role chunk, one chunk per text piece, a finish chunk, optional usage, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        return _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **more})

    try:
        yield chunk({"role": "assistant", "content": ""})
        for piece in pieces:
            yield chunk({"content": piece})
        yield chunk({}, completion.finish_reason)
        if include_usage:
            yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": completion.usage})
    except Exception as error:  # noqa: BLE001 - the status line is sent already: report in the stream
        logger.exception("streaming failed")
        yield _sse(_error_body(f"generation failed: {error}", kind="server_error"))
    finally:
        pieces.close()  # stops the generation when the client went away
    yield _sse("[DONE]")

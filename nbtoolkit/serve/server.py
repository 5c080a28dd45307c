"""Start the chat server: in the foreground (`nbtoolkit serve`) or in a background thread (`LocalServer`).

The server binds 127.0.0.1 unless told otherwise; binding another address without an API key logs a warning.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.errors import NbtoolkitError

logger = logging.getLogger(__name__)

API_KEY_ENV = "NBTOOLKIT_SERVE_API_KEY"
DEFAULT_PORT = 8000
SMALL_MODEL_PARAMETERS = 10_000_000


class ServeError(NbtoolkitError):
    """The server cannot start (port in use, bad address, model failed to load) or did not start in time."""


@dataclass(frozen=True)
class ServeConfig:
    """What to serve and where. The API key is never shown in the repr, logs or error messages."""

    model: str = field(default="embedded", metadata={
        "help": "'embedded', a training run directory, a model or LoRA adapter directory, or a model name"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to bind; 127.0.0.1 keeps the server private to this machine"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port; 0 picks a free one"})
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "when set, requests need 'Authorization: Bearer <key>' (401 otherwise)"})
    served_name: str | None = field(default=None, metadata={
        "help": "model id shown by /v1/models and expected in requests; default: the run directory's name"})
    default_max_tokens: int = field(default=256, metadata={"help": "max_tokens when a request sets none"})
    max_tokens_limit: int = field(default=2048, metadata={"help": "largest max_tokens a request may ask for"})
    max_request_bytes: int = field(default=1_048_576, metadata={
        "help": "largest request body in bytes; larger ones get 413 before they are parsed or tokenized"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or None (auto)"})
    dtype: str | None = field(default=None, metadata={"help": "float32, bfloat16, float16 or None (auto)"})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads for generation (process-wide); None: torch's default, or 1 for models under 10M "
                "parameters, which only lose time to thread start-up, badly so on a busy machine"})

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise ValueError("model is empty: pass 'embedded', a run directory or a model directory")
        if not str(self.host).strip():
            raise ValueError("host is empty: use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535 (0: a free port), got {self.port!r}")
        if self.api_key is not None and not str(self.api_key).strip():
            raise ValueError("api_key is empty: pass a non-empty key or None for no key")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if isinstance(self.max_request_bytes, bool) or not isinstance(self.max_request_bytes, int) \
                or self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be a positive integer, got {self.max_request_bytes!r}")
        if not 1 <= self.default_max_tokens <= self.max_tokens_limit:
            raise ValueError(f"default_max_tokens must be in 1..max_tokens_limit ({self.max_tokens_limit}), got "
                             f"{self.default_max_tokens}")

    @property
    def is_private(self) -> bool:
        """True when only this machine can connect (a loopback address)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def served_name(target: str) -> str:
    """The model id a target is served under: a directory's name, else the name itself."""
    path = Path(str(target)).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        return resolved.parent.name if resolved.name in ("model", "adapter") else resolved.name
    return str(target)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free port), with a clear error when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is in use; pick another with --port, or --port 0 for a free "
                             "one") from error
        raise ServeError(f"cannot bind {host}:{port}: {error.strerror or error}") from error
    sock.listen(2048)  # early connections wait in the backlog until the server accepts them
    return sock


def build_app(config: ServeConfig):
    """Load the model and return the FastAPI app serving it (what both ways of starting run)."""
    from nbtoolkit.serve.app import create_app
    from nbtoolkit.serve.engine import ChatEngine, load_serving_model

    loaded = load_serving_model(config.model, device=config.device, dtype=config.dtype)
    threads = config.threads or (1 if loaded.parameters < SMALL_MODEL_PARAMETERS else None)
    if threads and loaded.plan.device_type == "cpu":
        import torch

        torch.set_num_threads(threads)
    engine = ChatEngine(loaded, config.served_name or served_name(config.model))
    return create_app(engine, api_key=config.api_key, default_max_tokens=config.default_max_tokens,
                      max_tokens_limit=config.max_tokens_limit, max_request_bytes=config.max_request_bytes), engine


def _uvicorn_server(app, config: ServeConfig, port: int):
    import uvicorn

    settings = uvicorn.Config(app, host=config.host, port=port, log_level="warning", access_log=False,
                              lifespan="off", timeout_graceful_shutdown=5)
    return uvicorn.Server(settings)


def _warn_if_public(config: ServeConfig, echo: Callable[[str], None]) -> None:
    if not config.is_private and not config.api_key:
        echo(f"WARNING: {config.host} is reachable from other machines and no API key is set: anyone who can "
             f"reach this port can use the model (set --api-key or {API_KEY_ENV})")


def run_server(config: ServeConfig, *, echo: Callable[[str], None] = print) -> None:
    """Serve in the foreground until Ctrl-C (what `nbtoolkit serve` runs)."""
    sock = bind_socket(config.host, config.port)
    try:
        started = time.perf_counter()
        app, engine = build_app(config)
        port = sock.getsockname()[1]
        _warn_if_public(config, echo)
        echo(f"serving {engine.name!r} at http://{config.host}:{port}/v1 (loaded in "
             f"{time.perf_counter() - started:.1f} s; {'API key required' if config.api_key else 'no API key'}); "
             "Ctrl-C stops")
        _uvicorn_server(app, config, port).run(sockets=[sock])
    finally:
        sock.close()


class LocalServer:
    """The chat server in a background thread of this process, so a notebook kernel stays free.

        server = LocalServer.start("runs/sft-...", port=0)   # returns once the model answers
        invoke_inference(server, "Hello")
        server.stop()                                         # or: with LocalServer.start(...) as server:
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._socket = bind_socket(config.host, config.port)
        self.port: int = self._socket.getsockname()[1]
        self.name: str | None = None
        self._server: Any = None
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"nbtoolkit-serve-{self.port}", daemon=True)

    @classmethod
    def start(cls, model: str = "embedded", *, port: int = 0, api_key: str | None = None, host: str = "127.0.0.1",
              wait: bool = True, timeout: float = 300.0, **options: Any) -> LocalServer:
        """Bind, load the model and serve in a thread; with wait=True return once requests are answered."""
        server = cls(ServeConfig(model=str(model), host=host, port=port, api_key=api_key, **options))
        server._thread.start()
        if wait:
            server.wait_ready(timeout)
        return server

    def _run(self) -> None:
        try:
            app, engine = build_app(self.config)
            self.name = engine.name
            if self._stopping:
                return  # stop() was called while the model loaded
            self._server = _uvicorn_server(app, self.config, self.port)
            self._server.run(sockets=[self._socket])
        except BaseException as error:  # noqa: BLE001 - reported by wait_ready / stop
            self._error = error
        finally:
            self._socket.close()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8000 (the OpenAI base URL is url + '/v1')."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str | None:
        return self.config.api_key

    @property
    def ready(self) -> bool:
        return bool(self._server is not None and self._server.started and self._thread.is_alive())

    def wait_ready(self, timeout: float = 300.0) -> LocalServer:
        """Block until the server answers (loading a model takes seconds); raise ServeError if it failed."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self._error is not None or (self._thread.ident is not None and not self._thread.is_alive()):
                raise ServeError(f"the server did not start: {self._error}") from self._error
            if time.monotonic() > deadline:
                raise ServeError(f"the server did not start within {timeout:g} s (still loading "
                                 f"{self.config.model!r}?)")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end (in-flight requests get up to 5 s)."""
        self._stopping = True
        if self._thread.ident is None:
            self._socket.close()
            return
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self._server is not None:
                self._server.should_exit = True
            self._thread.join(0.05)
        if self._thread.is_alive():
            raise ServeError(f"the server thread on port {self.port} did not stop within {timeout:g} s")

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("stopped" if self._thread.ident and not self._thread.is_alive()
                                            else "starting")
        return (f"LocalServer({self.name or self.config.model!r} at {self.url}/v1, {state}, "
                f"{'API key required' if self.config.api_key else 'no API key'})")


def api_key_from_env() -> str | None:
    """The API key in $NBTOOLKIT_SERVE_API_KEY, or None."""
    return os.environ.get(API_KEY_ENV) or None

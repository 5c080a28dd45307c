"""Serve a trained model behind an OpenAI-compatible chat API, and ask any chat endpoint for a reply.

    server = LocalServer.start("runs/sft-...", port=0)     # background thread: the kernel stays free
    invoke_inference(server, "Classify this question ...")  # or stream=True, then .show()
    server.stop()

`nbtoolkit serve RUN_DIR` runs the same server in the foreground. Names load on first use: the client side
(`invoke_inference`) imports neither torch nor FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtoolkit._lazy import lazy_exports

_EXPORTS = {
    "nbtoolkit.serve.client": ("invoke_inference",),
    "nbtoolkit.serve.responses": ("InferenceError", "InferenceResult", "InferenceStream", "StreamingUnsupported"),
    "nbtoolkit.serve.server": ("LocalServer", "ServeConfig", "ServeError", "run_server"),
    "nbtoolkit.serve.engine": ("ChatEngine", "load_serving_model", "resolve_serving_target"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from nbtoolkit.serve.client import invoke_inference
    from nbtoolkit.serve.responses import InferenceError, InferenceResult, InferenceStream, StreamingUnsupported
    from nbtoolkit.serve.engine import ChatEngine, load_serving_model, resolve_serving_target
    from nbtoolkit.serve.server import LocalServer, ServeConfig, ServeError, run_server

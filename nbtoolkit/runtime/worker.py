"""The process a LocalRuntime job runs in: `python -m nbtoolkit.runtime.worker RUN_DIR`.

It reads RUN_DIR/job.json, records IN_PROGRESS in status.json, runs the job function with a RunLog, and ends with
result.json then status.json (COMPLETED or FAILED). SIGTERM/SIGINT set the `stop_event` handed to the job function
so it checkpoints and returns; the run then ends FAILED with reason "cancelled" and stopped=true. A job function
that takes no stop_event (and any function on a second signal) is interrupted by JobCancelled instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbtoolkit.errors import os_error_message
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    RESULT_FILE,
    STATUS_FILE,
    RunLog,
    peak_rss_mb,
    read_json,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.spec import BUILTIN_KINDS
from nbtoolkit.runtime.status import CANCELLED, WORKER_FAILED
from nbtoolkit.training.config import config_from_dict

TRACEBACK_LINES = 15


class JobCancelled(BaseException):
    """Raised inside the job when it must stop now (BaseException, so `except Exception` in a job does not eat it)."""


def load_job_function(kind: str) -> Callable[..., Any]:
    """The function a kind runs: a built-in method, `package.module:function`, or `path/to/file.py:function`."""
    if kind in ("sft_lora", "sft_full"):
        from nbtoolkit.training.sft import run_sft

        return run_sft
    if kind == "rft_lora":
        from nbtoolkit.training.rft import run_rft

        return run_rft
    if kind == "eval":
        return run_eval
    module_name, sep, function_name = kind.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"job kind {kind!r} is neither one of {BUILTIN_KINDS} nor 'package.module:function'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        spec = importlib.util.spec_from_file_location(f"_nbtoolkit_job_{path.stem}", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise ImportError(f"no Python file at {path} (job kind {kind!r})")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(f"{module_name} has no function {function_name!r} (job kind {kind!r})")
    return function


def run_eval(config, *, model, train_file=None, eval_file=None, labels=None, run_dir, log=None, **_: Any) -> dict:
    """The `eval` kind: score `eval_file` (or `train_file`); EvalResult.save writes RUN_DIR/eval/."""
    from nbtoolkit.evaluation import evaluate

    out_dir = Path(run_dir) / "eval"
    result = evaluate(model, eval_file or train_file, config, labels=labels, run_dir=out_dir, log=log,
                      progress=False)
    predictions = out_dir / "predictions.jsonl"
    return {"metrics": dict(result.metrics), "eval_dir": str(out_dir),
            "predictions": str(predictions) if predictions.exists() else None}


def _accepts(function: Callable[..., Any]) -> tuple[set[str], bool]:
    """Keyword names the function takes, and whether it takes **kwargs."""
    parameters = inspect.signature(function).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _as_dict(output: Any) -> dict[str, Any]:
    if output is None:
        return {}
    if isinstance(output, dict):
        return output
    if hasattr(output, "metrics"):
        return {"metrics": dict(output.metrics)}
    return {"value": repr(output)}


class _Stopper:
    """Signal handling: the first signal asks the job to stop (stop_event), a second one interrupts it."""

    def __init__(self, log: RunLog, cooperative: bool) -> None:
        self.event = threading.Event()
        self.log = log
        self.cooperative = cooperative
        self.signals = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.cooperative and self.signals == 1:
            self.log.info(f"{name} received: asking the job to checkpoint and stop")
            self.event.set()
            return
        self.event.set()
        self.log.info(f"{name} received: interrupting the job")
        raise JobCancelled(name)


def run(run_dir: str | os.PathLike) -> int:
    """Run the job described by RUN_DIR/job.json; returns the process exit code (0 only for COMPLETED)."""
    run_dir = Path(run_dir).resolve()
    job = read_json(run_dir / JOB_FILE)
    if job is None:
        print(f"nbtoolkit worker: {run_dir} has no {JOB_FILE}", file=sys.stderr)
        return 2
    previous = read_json(run_dir / STATUS_FILE, {})
    if previous.get("state") == COMPLETED:
        # A completed run directory is never written again (LocalRuntime refuses too; this guards races).
        print(f"nbtoolkit worker: {run_dir} already COMPLETED; refusing to run it again", file=sys.stderr)
        return 2

    attempt = int(job.get("attempt", 1))
    started_wall = utc_now()
    started = time.perf_counter()
    status = {"state": IN_PROGRESS, "reason": None, "stopped": False, "pid": os.getpid(),
              "host": socket.gethostname(), "attempt": attempt, "started": started_wall, "ended": None}
    log = RunLog(run_dir, echo=None)
    # Handlers before status.json says "started" (what cancel() waits for): until the job function runs, a stop
    # request only sets the flag, and the job then ends as a stop instead of the worker dying mid-start.
    stopper = _Stopper(log, cooperative=True)
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    write_json_atomic(run_dir / STATUS_FILE, status)
    kind = job["kind"]
    log.info(f"worker pid {os.getpid()}: {kind} job {job['spec'].get('name')!r}, attempt {attempt}"
             + (" (resuming from checkpoints)" if job.get("resume") else ""))
    output: dict[str, Any] = {}
    reason = None
    tracker = None
    try:
        from nbtoolkit.tracking import start_tracking

        tracker = start_tracking(run_dir, job, log)  # MLflow, on a background thread; a no-op when off
        function = load_job_function(kind)
        names, takes_any = _accepts(function)
        spec = job["spec"]
        offered = {"model": job.get("model"), "train_file": job.get("train_file"), "eval_file": job.get("eval_file"),
                   "labels": list(spec["labels"]) if spec.get("labels") is not None else None,
                   "run_dir": str(run_dir), "resume": bool(job.get("resume")), "log": log,
                   "stop_event": stopper.event}
        kwargs = {k: v for k, v in offered.items() if takes_any or k in names}
        for key, value in (spec.get("extra") or {}).items():
            if key == "reward_fn" and isinstance(value, str):
                value = load_job_function(value)
            if takes_any or key in names:
                kwargs[key] = value
            else:
                log.warning(f"extra {key!r} ignored: {kind} does not take it")
        if stopper.event.is_set():
            raise JobCancelled("stop requested before the job function started")
        stopper.cooperative = takes_any or "stop_event" in names
        output = _as_dict(function(config_from_dict(job["config"]) if job.get("config") else None, **kwargs))
        if stopper.event.is_set() or output.get("status") == "stopped":
            state, reason = FAILED, CANCELLED
        else:
            state = COMPLETED
    except JobCancelled:
        state, reason = FAILED, CANCELLED
    except BaseException as error:  # noqa: BLE001 - every failure must end in status.json
        state = FAILED
        reason = CANCELLED if stopper.event.is_set() else f"{type(error).__name__}: {error}"
        lines = traceback.format_exc().rstrip().splitlines()
        traceback.print_exc()
        try:
            if stopper.event.is_set():
                log.info(f"stopped with {type(error).__name__}: {error}")
            else:
                log.info(f"FAILED: {reason}")
                for line in lines[-TRACEBACK_LINES:]:
                    log.info(f"  {line}")
        except OSError:  # the disk that failed the job may refuse the log too; status.json is tried below
            pass
    finally:
        # Signals from here on would only interrupt the bookkeeping.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    seconds = round(time.perf_counter() - started, 3)
    ended = utc_now()
    stopped = reason == CANCELLED
    result = {"status": state, "reason": reason, "stopped": stopped, "kind": kind, "name": job["spec"].get("name"),
              "run_dir": str(run_dir), "attempt": attempt, "started": started_wall, "ended": ended,
              "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "output": output}
    try:
        write_json_atomic(run_dir / RESULT_FILE, result)
    except OSError as error:  # a full or read-only disk: the outcome is lost, so the run failed, and says why
        state = result["status"] = FAILED
        reason = result["reason"] = os_error_message(error, f"write {RESULT_FILE}")
        print(f"{WORKER_FAILED} {reason}", file=sys.stderr, flush=True)
    try:
        write_json_atomic(run_dir / STATUS_FILE, {**status, "state": state, "reason": reason, "stopped": stopped,
                                                  "ended": ended, "seconds": seconds})
        log.info(f"{state}" + (f" ({reason})" if reason else "") + f" after {seconds:.1f} s")
    except OSError as error:
        # Nothing more can be kept here; Job.status() reads this line from stdout.log (if that disk takes it).
        print(f"{WORKER_FAILED} {reason or os_error_message(error, f'write {STATUS_FILE}')}", file=sys.stderr,
              flush=True)
        return 1
    # After status.json, so nobody waits for MLflow; a cancelled job gets little time (cancel() waits for us).
    if tracker is not None:
        tracker.finish(state, result, timeout=5.0 if stopped else 60.0)
    return 0 if state == COMPLETED else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m nbtoolkit.runtime.worker RUN_DIR", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    # Run through the importable module, so job code that imports JobCancelled sees the same class.
    from nbtoolkit.runtime.worker import main as _main

    sys.exit(_main())

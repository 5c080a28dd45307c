"""What a running job writes into its run directory, and the names of those files.

A run directory holds job.json (what was launched), status.json (where the job is), log.txt (readable lines),
metrics.jsonl (one row per logged step), progress.json (what a progress bar shows), stdout.log (everything the
process printed), result.json (what the job returned) and checkpoints/ (the job function's resume points).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
STATUS_FILE = "status.json"
JOB_FILE = "job.json"
STDOUT_FILE = "stdout.log"
PID_FILE = "worker.pid"
CHECKPOINT_DIR = "checkpoints"

# Job states, as the SageMaker path reports them (docs/case-study.md); a stop is FAILED with stopped=True.
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
JOB_STATES = (IN_PROGRESS, COMPLETED, FAILED)


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds (what status.json and result.json record)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """A JSON file written with write_json_atomic, or `default` when it does not exist (yet)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON through a temp file and rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Append-only job output. Safe to read from another process while the job runs (one line per write)."""

    def __init__(self, run_dir: str | os.PathLike, *, echo: TextIO | None = sys.stdout) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self._started = time.time()
        # Called with each metrics row after it is written (the MLflow tracker in the worker); must not block.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def info(self, message: str) -> None:
        """A human-readable line in log.txt (and on stdout)."""
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        line = f"{stamp} {message}"
        with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.echo is not None:
            print(line, file=self.echo, flush=True)

    def warning(self, message: str) -> None:
        self.info(f"WARNING: {message}")

    def metric(self, **values: Any) -> None:
        """One row of metrics.jsonl (step, loss, lr, tokens_per_second, reward_mean, ...)."""
        row = {"time": round(time.time() - self._started, 3), **{k: _finite(v) for k, v in values.items()}}
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, default=_jsonable) + "\n")
        for listener in self.listeners:
            listener(row)

    def progress(self, step: int, total: int, *, phase: str = "train") -> None:
        """progress.json: what a progress bar in another process shows."""
        elapsed = time.time() - self._started
        write_json_atomic(self.run_dir / PROGRESS_FILE, {"phase": phase, "step": step, "total": total,
                                                         "elapsed": round(elapsed, 2)})


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of metrics.jsonl; a line being written right now (no newline yet) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            rows.append(json.loads(line))
    return rows


def drop_metrics_after(run_dir: str | os.PathLike, step: int) -> int:
    """Remove the metrics.jsonl rows of steps after `step`, the checkpoint a run resumes from: the resumed run
    logs those steps again. Rewritten atomically; returns how many rows were dropped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return 0
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]
    kept = [line for line in lines if not line.strip() or not isinstance(json.loads(line).get("step"), (int, float))
            or json.loads(line)["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(lines) - len(kept)


def tail_text(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file (reads only its end); "" when it does not exist."""
    if not path.exists() or lines <= 0:
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, max(8192, lines * 400))
        handle.seek(size - block)
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where the OS does not report it)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def new_run_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh run directory `<parent>/<prefix>-<UTC time>[-n]`; never an existing one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")

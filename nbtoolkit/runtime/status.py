"""Where a job is: its JobStatus and the one state machine every runtime follows.

IN_PROGRESS -> COMPLETED or FAILED, and nothing after that. A stop (cancel) ends FAILED with stopped=True; a
worker that vanished without a word (SIGKILL, out of memory) is recorded FAILED with DIED_REASON by the first reader
that notices. The worker writes the other transitions into status.json (`nbtoolkit.runtime.worker`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtoolkit.errors import NbtoolkitError, os_error_message
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PID_FILE,
    STATUS_FILE,
    STDOUT_FILE,
    RunLog,
    read_json,
    tail_text,
    utc_now,
    write_json_atomic,
)

WORKER_MODULE = "nbtoolkit.runtime.worker"
DIED_REASON = "process died (killed?)"
CANCELLED = "cancelled"
# The line a worker prints (to stdout.log) when it cannot record its end in status.json.
WORKER_FAILED = "nbtoolkit worker: FAILED:"


class JobError(NbtoolkitError, RuntimeError):
    """A job cannot be launched, resumed or read in its current state."""


@dataclass(frozen=True)
class JobStatus:
    """state is IN_PROGRESS, COMPLETED or FAILED; a cancelled job is FAILED with stopped=True."""

    state: str
    reason: str | None = None
    pid: int | None = None
    started: str | None = None
    ended: str | None = None
    stopped: bool = False
    attempt: int = 1

    @property
    def done(self) -> bool:
        return self.state != IN_PROGRESS

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        return cls(state=data.get("state", IN_PROGRESS), reason=data.get("reason"), pid=data.get("pid"),
                   started=data.get("started"), ended=data.get("ended"), stopped=bool(data.get("stopped")),
                   attempt=int(data.get("attempt") or 1))

    def __str__(self) -> str:
        text = self.state + (f" ({self.reason})" if self.reason else "")
        return text + (f", pid {self.pid}" if self.pid and not self.done else "")


def pid_alive(pid: int | None, run_dir: str | os.PathLike | None = None) -> bool:
    """True while `pid` is a live process (not a zombie) and, where /proc tells, still this run's worker."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else; /proc below tells whether it is our worker
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        command = (proc / "cmdline").read_bytes().decode(errors="replace")
        if WORKER_MODULE not in command or (run_dir is not None and Path(run_dir).name not in command):
            return False  # the pid was reused by another program
    except (OSError, IndexError):
        pass  # no /proc (macOS): trust os.kill
    return True


def worker_pid(run_dir: Path) -> int | None:
    """The pid LocalRuntime recorded when it started the worker (before the worker wrote status.json)."""
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def read_status(run_dir: str | os.PathLike, *, alive: Callable[[int], bool] | None = None,
                process: subprocess.Popen | None = None) -> JobStatus:
    """status.json as a JobStatus; a local worker that is gone while the file says IN_PROGRESS is recorded FAILED.

    alive(pid) says whether the worker still runs (default: pid_alive on this run directory).
    """
    run_dir = Path(run_dir)
    alive = alive or (lambda pid: pid_alive(pid, run_dir))
    path = run_dir / STATUS_FILE
    try:
        data = read_json(path) or {"state": IN_PROGRESS, "reason": "starting"}
    except (OSError, ValueError) as error:
        unreadable = os_error_message(error, f"read {STATUS_FILE}") if isinstance(error, OSError) \
            else f"{STATUS_FILE} is not valid JSON"
        pid = worker_pid(run_dir)
        return JobStatus(IN_PROGRESS if pid is not None and alive(pid) else FAILED, unreadable, pid=pid)
    if data.get("state") != IN_PROGRESS:
        return JobStatus.from_dict(data)
    if data.get("host") and data["host"] != socket.gethostname():
        return JobStatus.from_dict(data)  # running elsewhere: its pid means nothing here
    pid = data.get("pid") or worker_pid(run_dir)
    if pid is None or alive(pid):
        return JobStatus.from_dict({**data, "pid": pid})
    try:
        again = read_json(path) or data
    except (OSError, ValueError):
        again = data
    if again.get("state") != IN_PROGRESS:
        return JobStatus.from_dict(again)  # it finished between the two reads
    returncode = process.returncode if process is not None else None
    died = {**again, "state": FAILED, "reason": death_reason(run_dir, returncode), "pid": pid, "ended": utc_now()}
    if returncode is not None:
        died["returncode"] = returncode
    try:
        write_json_atomic(path, died)
        RunLog(run_dir, echo=None).info(f"FAILED: {died['reason']} (pid {pid} is gone; see {STDOUT_FILE})")
    except OSError as error:
        died["reason"] += f"; {os_error_message(error, f'update {STATUS_FILE}')}"
    return JobStatus.from_dict(died)


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Cancelled)\b(?::.*)?$")


def death_reason(run_dir: Path, returncode: int | None = None) -> str:
    """Why a worker ended without recording it: its own last word in stdout.log, the exception its traceback
    ends with, or the signal that killed it; DIED_REASON when nothing says more."""
    try:
        lines = [line.strip() for line in tail_text(run_dir / STDOUT_FILE, 60).splitlines() if line.strip()]
    except OSError:
        lines = []
    said = [line for line in lines if line.startswith(WORKER_FAILED)]
    if said:
        return said[-1][len(WORKER_FAILED):].strip()
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    if raised:
        return f"process died: {raised[-1]}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"process died: killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return DIED_REASON


def record_stopped(run_dir: str | os.PathLike, reason: str) -> None:
    """A job that did not stop by itself was killed: IN_PROGRESS -> FAILED with stopped=True (else no change)."""
    path = Path(run_dir) / STATUS_FILE
    data: dict[str, Any] = read_json(path, {})
    if data.get("state") == IN_PROGRESS:
        write_json_atomic(path, {**data, "state": FAILED, "reason": reason, "stopped": True, "ended": utc_now()})
        RunLog(run_dir, echo=None).info(f"FAILED: {reason}")


__all__ = ["CANCELLED", "COMPLETED", "DIED_REASON", "FAILED", "IN_PROGRESS", "JobError", "JobStatus",
           "WORKER_FAILED", "WORKER_MODULE", "death_reason", "pid_alive", "read_status", "record_stopped", "worker_pid"]

"""Run jobs as local subprocesses, so long work never blocks the notebook kernel.

`LocalRuntime.launch(spec)` writes a fresh run directory (job.json), starts
`python -m nbtoolkit.runtime.worker RUN_DIR` in its own session and returns a `Job` at once. The `Job` handle reads
what the worker writes (status.json, log.txt, metrics.jsonl, progress.json, result.json) and works the same after
`Job.attach(run_dir)` in a fresh kernel. `launch(spec, dry_run=True)` runs every check a launch runs and starts
nothing.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from nbtoolkit.advisor import warn_launch
from nbtoolkit.errors import NbtoolkitError, unknown_name_message
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    LOG_FILE,
    METRICS_FILE,
    PID_FILE,
    PROGRESS_FILE,
    STATUS_FILE,
    STDOUT_FILE,
    RunLog,
    new_run_dir,
    read_json,
    read_metrics,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.results import TrainingResult
from nbtoolkit.runtime.worker import BUILTIN_KINDS, CANCELLED, load_job_function
from nbtoolkit.training.config import CONFIGS, MethodConfig, RFTLoraConfig

TRAINING_KINDS = ("sft_lora", "sft_full", "rft_lora")
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
WORKER_MODULE = "nbtoolkit.runtime.worker"
DIED_REASON = "process died (killed?)"
JOB_FORMAT = "nbtoolkit.job/1"
# Record formats each built-in kind reads; the format of a file is told from its first record.
KIND_FORMATS = {"sft_lora": ("chat",), "sft_full": ("chat",), "rft_lora": ("rft", "chat"),
                "eval": ("gen_qa", "chat", "rft", "converse")}
# Modules behind the built-in kinds, checked without importing them (importing torch takes seconds).
_KIND_MODULES = {"sft_lora": "nbtoolkit.training.sft", "sft_full": "nbtoolkit.training.sft",
                 "rft_lora": "nbtoolkit.training.rft", "eval": "nbtoolkit.evaluation"}
DISK_MARGIN_BYTES = 200 * 1024**2
_POSTFIX_KEYS = ("loss", "reward_mean", "reward", "eval_loss", "kl")


class JobError(NbtoolkitError, RuntimeError):
    """A job cannot be launched, resumed or read in its current state."""


class LaunchError(JobError, ValueError):
    """The checks before a launch failed; `.report` holds every check (what launch(..., dry_run=True) shows)."""

    def __init__(self, report: DryRunReport) -> None:
        self.report = report
        failed = "\n".join(f"  - {c.name}: {c.detail}" for c in report.failed)
        super().__init__(f"not launched; {len(report.failed)} check(s) failed:\n{failed}")


class JobFailed(JobError):
    """Job.wait() saw the job end FAILED; `.result` holds the TrainingResult, `.logs` the log tail."""

    def __init__(self, result: TrainingResult, logs: str) -> None:
        self.result = result
        self.logs = logs
        super().__init__(f"job {result.name!r} FAILED: {result.reason} (run dir {result.run_dir})\n{logs}")


# ---------------------------------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class JobSpec:
    """One job: what to run (kind + config), on which model and data, under which name.

    A custom kind `package.module:function` (or `path/to/file.py:function`) is called like the built-in job
    functions: `function(config, *, model, train_file, eval_file, labels, run_dir, resume, log, stop_event,
    **extra)`, receiving the keywords its signature names. Round-trips through JSON (`to_json` / `from_json`).
    """

    kind: str = field(metadata={"help": "sft_lora, sft_full, rft_lora, eval, or package.module:function"})
    config: MethodConfig | None = field(default=None, metadata={
        "help": "the method's hyperparameters; None: the kind's local defaults"})
    model: str | None = field(default=None, metadata={"help": "model name, Hugging Face id or directory"})
    train_file: str | None = field(default=None, metadata={"help": "training JSONL (chat, converse or rft)"})
    eval_file: str | None = field(default=None, metadata={"help": "evaluation JSONL (chat or gen_qa)"})
    labels: tuple[str, ...] | None = field(default=None, metadata={"help": "declared label set, e.g. HQ,LQ_EDIT"})
    name: str | None = field(default=None, metadata={
        "help": "job name (letters, digits, hyphens; 1-63 chars); prefixes the run directory"})
    extra: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "more keyword arguments for the job function (JSON values)"})

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)
        kind = str(self.kind).strip()
        if kind not in BUILTIN_KINDS:
            module, sep, function = kind.rpartition(":")
            if not sep:
                raise ValueError(unknown_name_message("job kind", kind, BUILTIN_KINDS)
                                 + "; or 'package.module:function' for a job function of your own")
            if not module or not function.isidentifier():
                raise ValueError(f"job kind {kind!r}: write a custom kind as 'package.module:function'")
        put("kind", kind)
        config = self.config
        if isinstance(config, dict):
            config = config_from_dict(config)
        if kind in BUILTIN_KINDS:
            expected = CONFIGS[kind]
            if config is None:
                config = expected.for_platform("local")
            elif type(config) is not expected:
                raise ValueError(f"job kind {kind!r} needs a {expected.__name__}, got {type(config).__name__}")
        elif config is not None and not isinstance(config, MethodConfig):
            raise TypeError(f"config must be a MethodConfig (e.g. SFTLoraConfig), got {type(config).__name__}")
        put("config", config)
        for name in ("model", "train_file", "eval_file"):
            value = getattr(self, name)
            put(name, None if value is None or str(value).strip() == "" else str(value))
        if self.labels is not None:
            labels = (self.labels,) if isinstance(self.labels, str) else tuple(str(x) for x in self.labels)
            put("labels", labels or None)
        name = self.name if self.name is not None else _default_name(kind)
        if not JOB_NAME_PATTERN.match(name):
            raise ValueError(f"job name {name!r} is not allowed: use 1-63 letters, digits and hyphens, starting and "
                             f"ending with a letter or digit (e.g. {_default_name(name) !r})")
        put("name", name)
        extra = dict(self.extra or {})
        try:
            json.dumps(extra)
        except TypeError as error:
            raise ValueError(f"extra must hold JSON values (it is saved in job.json): {error}") from None
        put("extra", extra)
        if kind in BUILTIN_KINDS and self.model is None:
            raise ValueError(f"a {kind} job needs a model (a name such as 'smollm2-135m-instruct' or a directory)")
        if kind in TRAINING_KINDS and self.train_file is None:
            raise ValueError(f"a {kind} job needs train_file (a JSONL written by prepare)")
        if kind == "eval" and self.eval_file is None and self.train_file is None:
            raise ValueError("an eval job needs eval_file (a JSONL of chat or gen_qa records)")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": config_to_dict(self.config), "model": self.model,
                "train_file": self.train_file, "eval_file": self.eval_file,
                "labels": list(self.labels) if self.labels is not None else None, "name": self.name,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {"kind", "config", "model", "train_file", "eval_file", "labels", "name", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(unknown_name_message("JobSpec field", unknown[0], sorted(known)))
        data = dict(data)
        if data.get("config") is not None:
            data["config"] = config_from_dict(data["config"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))


def config_to_dict(config: MethodConfig | None) -> dict[str, Any] | None:
    """A config as saved by MethodConfig.save: {"method": ..., **fields}."""
    return None if config is None else {"method": config.METHOD, **config.to_dict()}


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    data = dict(data)
    method = data.pop("method", None)
    if method not in CONFIGS:
        raise ValueError(unknown_name_message("config method", str(method), CONFIGS))
    return CONFIGS[method].from_dict(data)


def _default_name(text: str) -> str:
    """A valid job name made from a kind or a rejected name."""
    base = text.rpartition(":")[2] or text
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:63].strip("-")
    return name or "job"


# ---------------------------------------------------------------------------------------------------------------
# Where a job is


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


class _Text(str):
    """A string that shows as plain lines in a notebook instead of a quoted repr."""

    def __repr__(self) -> str:
        return str(self)


def _tail(path: Path, lines: int) -> str:
    if not path.exists() or lines <= 0:
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, max(8192, lines * 400))
        handle.seek(size - block)
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    """The latest value of each metric in the last rows of metrics.jsonl (a train row and an eval row are often
    separate), reading only the end of the file."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {}
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 8192))
        text = handle.read().decode("utf-8", errors="replace")
    merged: dict[str, Any] = {}
    for line in text[: text.rfind("\n") + 1].splitlines()[1:] if size > 8192 else text.splitlines():
        try:
            merged.update({k: v for k, v in json.loads(line).items() if v is not None})
        except ValueError:
            continue  # a partial first line, or a row being written
    return merged


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_html(run_dir: Path, progress: dict[str, Any] | None) -> str:
    """A job card's progress line: an HTML <progress> bar with the phase, step and latest metrics, or ''."""
    progress = progress or {}
    if not progress.get("total"):
        return ""
    last = _last_metrics(run_dir)
    numbers = " · ".join(f"{k} {_fmt(last[k])}" for k in _POSTFIX_KEYS if last.get(k) is not None)
    return (f'<br><progress value="{progress.get("step", 0)}" max="{progress["total"]}"></progress> '
            f'{html.escape(str(progress.get("phase", "")))} {progress.get("step", 0)}/{progress["total"]}'
            + (f" · {html.escape(numbers)}" if numbers else ""))


class Job:
    """A handle on one run directory: status, logs, metrics, progress, wait, cancel, resume, result.

    Everything is read from files, so `Job.attach(run_dir)` in a fresh kernel sees the same job.
    """

    def __init__(self, run_dir: str | os.PathLike, spec: JobSpec | None = None, *,
                 process: subprocess.Popen | None = None, runtime: LocalRuntime | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        job = read_json(self.run_dir / JOB_FILE)
        if job is None:
            raise FileNotFoundError(f"{self.run_dir} is not a run directory: it has no {JOB_FILE}")
        self.spec = spec if spec is not None else JobSpec.from_dict(job["spec"])
        self._process = process
        self._runtime = runtime

    @classmethod
    def attach(cls, run_dir: str | os.PathLike) -> Job:
        """The job of an existing run directory (e.g. after a kernel restart)."""
        return cls(run_dir)

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.kind

    # -- reading ----------------------------------------------------------------------------------------------

    def status(self) -> JobStatus:
        """Where the job is; a worker that vanished without a word (SIGKILL, OOM) is reported FAILED."""
        path = self.run_dir / STATUS_FILE
        data = read_json(path) or {"state": IN_PROGRESS, "reason": "starting"}
        if data.get("state") != IN_PROGRESS:
            return JobStatus.from_dict(data)
        if data.get("host") and data["host"] != socket.gethostname():
            return JobStatus.from_dict(data)  # running elsewhere: its pid means nothing here
        pid = data.get("pid") or self._pid_from_file()
        if pid is None or self._alive(pid):
            return JobStatus.from_dict({**data, "pid": pid})
        again = read_json(path) or data
        if again.get("state") != IN_PROGRESS:
            return JobStatus.from_dict(again)  # it finished between the two reads
        died = {**again, "state": FAILED, "reason": DIED_REASON, "pid": pid, "ended": utc_now()}
        if self._process is not None and self._process.returncode is not None:
            died["returncode"] = self._process.returncode
        write_json_atomic(path, died)
        RunLog(self.run_dir, echo=None).info(f"FAILED: {DIED_REASON} (pid {pid} is gone; see {STDOUT_FILE})")
        return JobStatus.from_dict(died)

    def _pid_from_file(self) -> int | None:
        try:
            return int((self.run_dir / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        return pid_alive(pid, self.run_dir)

    def logs(self, tail: int = 50) -> str:
        """The last `tail` lines of log.txt, then of stdout.log (warnings, tracebacks, library output)."""
        text = _tail(self.run_dir / LOG_FILE, tail)
        out = _tail(self.run_dir / STDOUT_FILE, tail)
        if out.strip():
            text = (text + "\n" if text else "") + f"--- {STDOUT_FILE} ---\n" + out
        return _Text(text)

    def metrics(self):
        """metrics.jsonl as a DataFrame (one row per logged step; empty until the first row)."""
        import pandas as pd

        return pd.DataFrame(read_metrics(self.run_dir))

    def progress(self) -> dict[str, Any] | None:
        """progress.json: phase, step, total, elapsed; None before the job reports any."""
        return read_json(self.run_dir / PROGRESS_FILE)

    def result(self) -> TrainingResult:
        """The finished job's TrainingResult (raises JobError while it still runs)."""
        status = self.status()
        if not status.done:
            raise JobError(f"job {self.name!r} is still running ({self._progress_text() or status}); "
                           "call .wait() first")
        return TrainingResult.from_run_dir(self.run_dir)

    def _progress_text(self) -> str:
        progress = self.progress()
        if not progress:
            return ""
        return f"{progress.get('phase', 'step')} {progress.get('step')}/{progress.get('total')}"

    # -- waiting --------------------------------------------------------------------------------------------

    def wait(self, progress: bool = True, poll: float = 1.0, timeout: float | None = None, *,
             raise_on_failure: bool = True) -> TrainingResult:
        """Block until the job ends and return its result, showing a progress bar (JSON lines when
        TRAINING_JOB_NAME is set). A FAILED job raises JobFailed unless raise_on_failure=False; a timeout raises
        TimeoutError and leaves the job running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        view = _ProgressView(self) if progress else None
        try:
            while True:
                status = self.status()
                if view is not None:
                    view.update(status)
                if status.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.name!r} still running after {timeout:g} s (it keeps running; "
                                       ".cancel() stops it)")
                time.sleep(poll)
        except KeyboardInterrupt:
            print(f"stopped waiting; job {self.name!r} keeps running in its own process (.cancel() stops it)",
                  file=sys.stderr)
            raise
        finally:
            if view is not None:
                view.close()
        result = self.result()
        if raise_on_failure and not result.ok:
            raise JobFailed(result, self.logs(15))
        return result

    def watch(self, poll: float = 2.0) -> threading.Thread:
        """Show the status card in the notebook and refresh it from a thread until the job ends (non-blocking).

        Plain HTML through a display handle, so it shows where widgets do not render.
        """
        from IPython.display import HTML, display

        handle = display(HTML(self._repr_html_()), display_id=True)

        def refresh() -> None:
            while True:
                done = self.status().done
                handle.update(HTML(self._repr_html_()))
                if done:
                    return
                time.sleep(poll)

        thread = threading.Thread(target=refresh, name=f"nbtoolkit-watch-{self.name}", daemon=True)
        thread.start()
        return thread

    # -- control --------------------------------------------------------------------------------------------

    def cancel(self, grace: float = 10.0) -> JobStatus:
        """Ask the job to checkpoint and stop (SIGTERM to its process group); SIGKILL after `grace` seconds."""
        status = self.status()
        deadline = time.monotonic() + 5
        while status.pid is None and not status.done and time.monotonic() < deadline:
            time.sleep(0.05)  # launched a moment ago: the pid is on its way
            status = self.status()
        if status.done:
            return status
        pid = status.pid
        RunLog(self.run_dir, echo=None).info(f"cancel requested: SIGTERM to pid {pid}")
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, grace):
            self._signal(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)
            data = read_json(self.run_dir / STATUS_FILE, {})
            if data.get("state") == IN_PROGRESS:
                reason = f"{CANCELLED} (killed: did not stop within {grace:g} s)"
                write_json_atomic(self.run_dir / STATUS_FILE, {**data, "state": FAILED, "reason": reason,
                                                               "stopped": True, "ended": utc_now()})
                RunLog(self.run_dir, echo=None).info(f"FAILED: {reason}")
        return self.status()

    def _signal(self, pid: int, signum: int) -> None:
        if not self._alive(pid):
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)  # the worker leads its own session: reach its children too
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def resume(self) -> Job:
        """Relaunch this killed, failed or stopped job in the same run directory (its checkpoints); returns self."""
        runtime = self._runtime or LocalRuntime._for_run_dir(self.run_dir)
        job = runtime.launch(self.spec, resume_from=self.run_dir)
        self._process = job._process
        return self

    # -- display --------------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Job({self.name!r}, {self.status()}, run_dir='{self.run_dir}')"

    def _repr_html_(self) -> str:
        status = self.status()
        colour = {COMPLETED: "#1a7f37", FAILED: "#cf222e"}.get(status.state, "#9a6700")
        bar = progress_html(self.run_dir, self.progress())
        reason = f" - {html.escape(status.reason)}" if status.reason else ""
        when = " · ".join(x for x in (f"pid {status.pid}" if status.pid and not status.done else "",
                                      f"started {status.started}" if status.started else "",
                                      f"ended {status.ended}" if status.ended else "") if x)
        return (f'<div class="nbt-job" style="border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;'
                f'display:inline-block;font-size:13px"><b>{html.escape(self.name)}</b> '
                f'<span style="color:#57606a">{html.escape(self.spec.kind)}</span> '
                f'<span style="color:{colour};font-weight:bold">{status.state}</span>{reason}{bar}'
                f'<br><code>{html.escape(str(self.run_dir))}</code>'
                + (f'<br><span style="color:#57606a">{html.escape(when)}</span>' if when else "") + "</div>")


class _ProgressView:
    """What Job.wait shows: a tqdm.auto bar, or JSON lines inside a training container (TRAINING_JOB_NAME)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.json_lines = bool(os.environ.get("TRAINING_JOB_NAME"))
        self.bar = None
        self.key: tuple[Any, ...] | None = None
        self.seen: tuple[float, int] | None = None  # (time, step) of the phase's first report, for the ETA
        self.phase: str | None = None
        self.numbers: dict[str, Any] = {}

    def update(self, status: JobStatus) -> None:
        progress = self.job.progress()
        last = _last_metrics(self.job.run_dir)
        numbers = {k: last[k] for k in _POSTFIX_KEYS if last.get(k) is not None}
        if self.json_lines:
            self._print_line(progress, numbers, status)
        elif progress and progress.get("total"):
            self._draw(progress, numbers)

    def _print_line(self, progress: dict | None, numbers: dict, status: JobStatus) -> None:
        key = (status.state, progress and progress.get("phase"), progress and progress.get("step"))
        if key == self.key:
            return
        self.key = key
        line: dict[str, Any] = {"job": self.job.name, "state": status.state}
        if status.reason:
            line["reason"] = status.reason
        if progress:
            step, total = int(progress.get("step", 0)), int(progress.get("total") or 0)
            now = time.monotonic()
            if self.seen is None or progress.get("phase") != self.phase:
                self.seen, self.phase = (now, step), progress.get("phase")
            line.update(phase=progress.get("phase"), step=step, total=total)
            done_since = step - self.seen[1]
            if done_since > 0 and total:
                line["eta_seconds"] = round((now - self.seen[0]) / done_since * (total - step), 1)
        line.update(numbers)
        print(json.dumps(line), flush=True)

    def _draw(self, progress: dict, numbers: dict) -> None:
        from tqdm.auto import tqdm

        phase, total, step = progress.get("phase", "train"), int(progress["total"]), int(progress.get("step", 0))
        if self.bar is None or (phase, total) != self.key:
            if self.bar is not None:
                self.bar.close()
            self.key = (phase, total)
            self.bar = tqdm(total=total, initial=step, desc=f"{self.job.name} {phase}", unit="step",
                            dynamic_ncols=True)
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        if numbers and numbers != self.numbers:  # redraw on news only: logs of `make pipeline > file` stay small
            self.numbers = numbers
            self.bar.set_postfix({k: _fmt(v) for k, v in numbers.items()}, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------------------------------
# Checks before a launch


class Check(NamedTuple):
    """One pre-launch check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass
class DryRunReport:
    """Every check a launch runs, the exact command, and the job.json it would write. Nothing was launched."""

    ok: bool
    checks: list[Check]
    command: list[str]
    job_json: dict[str, Any]
    run_dir: str = ""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    def __str__(self) -> str:
        head = ("dry run: all checks passed (nothing launched)" if self.ok else
                f"dry run: {len(self.failed)} of {len(self.checks)} checks failed (nothing launched)")
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [head] + [f"  {'ok  ' if c.ok else 'FAIL'} {c.name.ljust(width)}  {c.detail}" for c in self.checks]
        lines += [f"run dir: {self.run_dir}", f"command: {self.command_line}",
                  "job.json:", json.dumps(self.job_json, indent=2)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f'<tr><td style="color:{"#1a7f37" if c.ok else "#cf222e"}">{"✓" if c.ok else "✗"}</td>'
            f"<td>{html.escape(c.name)}</td><td style='text-align:left'>{html.escape(c.detail)}</td></tr>"
            for c in self.checks)
        head = ("all checks passed" if self.ok else f"{len(self.failed)} of {len(self.checks)} checks failed")
        return (f'<div class="nbt-dry-run"><b>Dry run: {head}</b> (nothing launched)<table>{rows}</table>'
                f"run dir: <code>{html.escape(self.run_dir)}</code><br>command:"
                f"<pre>{html.escape(self.command_line)}</pre><details><summary>job.json</summary>"
                f"<pre>{html.escape(json.dumps(self.job_json, indent=2))}</pre></details></div>")


def detect_format(record: Any) -> str | None:
    """The record format (converse, rft, gen_qa, cpt, chat) told from one record's keys."""
    if not isinstance(record, dict):
        return None
    if "schemaVersion" in record:
        return "converse"
    if "reference_answer" in record:
        return "rft"
    if "query" in record and "response" in record:
        return "gen_qa"
    if "messages" in record:
        return "chat"
    if set(record) == {"text"}:
        return "cpt"
    return None


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("nbtoolkit", "torch", "transformers", "peft", "trl"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _check_job_function(spec: JobSpec, python_paths: list[str]) -> Check:
    if spec.kind in BUILTIN_KINDS:
        module = _KIND_MODULES[spec.kind]
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            return Check("job function", False, f"{spec.kind} needs {', '.join(missing)}: pip install -e '.[local]'")
        if importlib.util.find_spec(module) is None:
            return Check("job function", False, f"{module} is not in this nbtoolkit version")
        return Check("job function", True, f"{spec.kind} runs {module}")
    added = [p for p in python_paths if p not in sys.path]
    sys.path[:0] = added
    try:
        function = load_job_function(spec.kind)
    except Exception as error:  # noqa: BLE001 - any import problem is the user's to see
        return Check("job function", False, f"cannot load {spec.kind}: {type(error).__name__}: {error}")
    finally:
        for p in added:
            sys.path.remove(p)
    return Check("job function", True, f"{spec.kind} ({function.__module__}.{function.__qualname__})")


def _check_config(spec: JobSpec) -> Check:
    config = spec.config
    if config is None:
        return Check("config", True, "no config (custom job)")
    try:
        type(config).from_dict(config.to_dict())  # re-runs the bounds
    except ValueError as error:
        return Check("config", False, str(error))
    if config.platform != "local":
        return Check("config", False, f"platform={config.platform!r}: the local runtime trains with local settings; "
                     f"use {type(config).__name__}.for_platform('local', ...) or run {config.platform} configs on "
                     "SageMaker")
    changed = config.changed()
    shown = ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "local defaults"
    return Check("config", True, f"{config.METHOD} ({shown})")


def _check_model(spec: JobSpec) -> tuple[Check, int, str | None]:
    """(check, model size in bytes, the model as the worker gets it: a name or an absolute directory)."""
    from nbtoolkit.errors import ModelError
    from nbtoolkit.models import DEFAULT_MODEL, embedded_cache_dir, embedded_gguf_path, model_path, resolve_model

    if spec.model is None:
        ok = spec.kind not in BUILTIN_KINDS
        return Check("model", ok, "none (the job function needs none)" if ok else "a model is required"), 0, None
    try:
        model = resolve_model(spec.model)
    except ModelError as error:
        return Check("model", False, str(error)), 0, spec.model
    if model.kind == "nova":
        return Check("model", False, f"{model.name!r} is an Amazon Nova model: Nova runs on SageMaker only, not on "
                     f"this machine. Launch it with the SageMaker runtime, or pick a local model such as "
                     f"{DEFAULT_MODEL!r}"), 0, spec.model
    handed = str(Path(model.source).resolve()) if model.kind == "local" else spec.model
    if model.kind == "embedded":
        cache = embedded_cache_dir()
        if (cache / "config.json").is_file() and any(cache.glob("*.safetensors")):
            path = cache
        else:
            try:
                gguf = embedded_gguf_path()
            except ModelError as error:
                return Check("model", False, str(error)), 0, handed
            size = 4 * (model.parameters or 0)
            return Check("model", True, f"{model.name} (embedded; converted once from {gguf.name} at "
                         "the job's start, about 20 s)"), size, handed
    else:
        try:
            path = model_path(model)
        except ModelError as error:
            return Check("model", False, str(error)), 0, handed
    if not (path / "config.json").is_file():
        return Check("model", False, f"{path} has no config.json: not a model directory"), 0, handed
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        return Check("model", False, f"{path} holds no weights (*.safetensors or pytorch_model*.bin)"), 0, handed
    size = _directory_bytes(path)
    return Check("model", True, f"{model.name} ({model.kind}, {size / 1e6:.0f} MB at {path})"), size, handed


def _check_data(what: str, path_text: str, spec: JobSpec) -> tuple[Check, int]:
    from nbtoolkit.data import Problem, read_jsonl, validate_records

    path = Path(path_text).expanduser()
    if not path.exists():
        return Check(what, False, f"no file at {path.absolute()}"), 0
    if not path.is_file():
        return Check(what, False, f"{path} is a directory; pass a JSONL file"), 0
    records: list[Any] = []
    try:
        if spec.kind == "eval" and path.suffix.lower() not in (".jsonl", ".ndjson"):
            from nbtoolkit.data import load_table

            records = load_table(path).to_dict(orient="records")  # evaluate() also reads CSV, JSON, Parquet
        else:
            for record in read_jsonl(path):
                records.append(record)
    except json.JSONDecodeError as error:
        return Check(what, False, f"{path.name}: record {len(records) + 1} is not valid JSON ({error.msg})"), 0
    except UnicodeDecodeError:
        return Check(what, False, f"{path.name} is not UTF-8 text (a JSONL file is expected)"), 0
    except (ValueError, OSError) as error:
        return Check(what, False, f"{path.name}: {error}"), 0
    if not records:
        return Check(what, False, f"{path.name} holds no records"), 0
    fmt = detect_format(records[0])
    if fmt is None:
        keys = sorted(records[0]) if isinstance(records[0], dict) else type(records[0]).__name__
        return Check(what, False, f"{path.name}: cannot tell the record format from the first record ({keys})"), 0
    allowed = KIND_FORMATS.get(spec.kind)
    if allowed and fmt not in allowed:
        return Check(what, False, f"{path.name} holds {fmt} records; {spec.kind} reads {' or '.join(allowed)}"), 0
    report = validate_records(records, fmt, labels=spec.labels, platform="local")
    if fmt == "chat" and spec.kind in BUILTIN_KINDS:
        # Trainers and the evaluator take the last message as the answer: it must be the assistant's.
        flagged = {p.row for p in report.errors if p.rule == "role_order"}
        for row, record in enumerate(records, 1):
            messages = record.get("messages") if isinstance(record, dict) else None
            if row not in flagged and isinstance(messages, list) and messages and \
                    isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
                report.problems.append(Problem("role_order", "the last message must be the assistant's answer",
                                               row, "messages"))
        report.problems.sort(key=lambda p: (p.row is None, p.row or 0))
    if not report.ok:
        errors = report.errors
        rows = sorted({p.row for p in errors if p.row is not None})
        where = f" in rows {', '.join(map(str, rows[:10]))}{', ...' if len(rows) > 10 else ''}" if rows else ""
        detail = (f"{path.name} ({fmt}): {len(errors)} errors{where}; "
                  + "; ".join(str(p) for p in errors[:3]) + ("; ..." if len(errors) > 3 else ""))
        return Check(what, False, detail), len(records)
    warnings = f", {len(report.warnings)} warnings" if report.warnings else ""
    return Check(what, True, f"{path.name}: {len(records):,} {fmt} rows{warnings}"), len(records)


def _check_rows(spec: JobSpec, rows: int) -> Check | None:
    """One optimizer step must fit in the data: global_batch_size rows (RFT: prompts = batch / number_generation)."""
    batch = getattr(spec.config, "global_batch_size", None)
    if batch is None:
        return None
    if isinstance(spec.config, RFTLoraConfig):
        need = batch // spec.config.number_generation
        detail = (f"{rows:,} prompts; a step takes {need} (global_batch_size {batch} / number_generation "
                  f"{spec.config.number_generation})")
    else:
        need, detail = batch, f"{rows:,} training rows, global_batch_size {batch}"
    return Check("rows", rows >= need, detail + ("" if rows >= need else ": lower global_batch_size or add rows"))


# ---------------------------------------------------------------------------------------------------------------
# The runtime


class LocalRuntime:
    """Launch jobs as subprocesses of this machine, one run directory each under `runs_dir`.

    `env` adds environment variables for the worker (recorded in job.json, so put no secrets there); a
    PYTHONPATH in it is prepended to the inherited one.
    """

    def __init__(self, runs_dir: str | os.PathLike = "runs", python: str = sys.executable, *,
                 env: dict[str, str] | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.python = python
        self.env = dict(env or {})

    @classmethod
    def _for_run_dir(cls, run_dir: Path) -> LocalRuntime:
        runtime = (read_json(run_dir / JOB_FILE) or {}).get("runtime", {})
        return cls(run_dir.parent, runtime.get("python") or sys.executable, env=runtime.get("env"))

    def __repr__(self) -> str:
        return f"LocalRuntime(runs_dir='{self.runs_dir}', python='{self.python}')"

    def command(self, run_dir: str | os.PathLike) -> list[str]:
        """The exact command that runs a job's worker."""
        return [self.python, "-m", WORKER_MODULE, str(run_dir)]

    def jobs(self) -> list[Job]:
        """Every run directory under runs_dir, oldest first."""
        if not self.runs_dir.is_dir():
            return []
        jobs = []
        for path in sorted(self.runs_dir.iterdir()):
            try:
                jobs.append(Job(path))
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue  # not a run directory, or one this version cannot read
        return jobs

    def _python_paths(self) -> list[str]:
        return [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]

    def check(self, spec: JobSpec, *, resume_from: str | os.PathLike | None = None) -> DryRunReport:
        """Run every pre-launch check; what launch(..., dry_run=True) returns."""
        checks = [_check_job_function(spec, self._python_paths()), _check_config(spec)]
        model_check, model_bytes, model = _check_model(spec)
        checks.append(model_check)
        files = {}
        for what in ("train_file", "eval_file"):
            value = getattr(spec, what)
            if value is None:
                continue
            data_check, rows = _check_data(what, value, spec)
            checks.append(data_check)
            files[what] = str(Path(value).expanduser().resolve())
            if what == "train_file" and data_check.ok and spec.kind != "eval":
                rows_check = _check_rows(spec, rows)
                if rows_check is not None:
                    checks.append(rows_check)
        if spec.kind == "rft_lora" and not spec.labels and getattr(spec.config, "reward", "") == "binary_label":
            checks.append(Check("labels", False, "the binary_label reward extracts a label from each reply: "
                                "give labels, e.g. labels=('HQ', 'LQ_EDIT', 'LQ_CLOSE')"))
        if resume_from is not None:
            run_dir = Path(resume_from).resolve()
            checks.append(self._check_resume(run_dir, spec))
            attempt = int((read_json(run_dir / JOB_FILE) or {}).get("attempt", 0)) + 1
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            run_dir = (self.runs_dir / f"{spec.name}-{stamp}").absolute()
            checks.append(self._check_runs_dir())
            attempt = 1
        need = 3 * model_bytes + DISK_MARGIN_BYTES
        free = shutil.disk_usage(_existing_ancestor(run_dir)).free
        checks.append(Check("disk", free >= need, f"{free / 1e9:.1f} GB free, about {need / 1e9:.2f} GB needed "
                            "(3x the model + 200 MB)"))
        command = self.command(run_dir)
        job_json = self._job_json(spec, model, files, command, attempt=attempt, resume=resume_from is not None)
        return DryRunReport(all(c.ok for c in checks), checks, command, job_json, str(run_dir))

    def _check_runs_dir(self) -> Check:
        runs_dir = self.runs_dir
        if runs_dir.exists() and not runs_dir.is_dir():
            return Check("runs_dir", False, f"{runs_dir} exists and is not a directory")
        ancestor = _existing_ancestor(runs_dir)
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return Check("runs_dir", False, f"cannot write under {ancestor}; choose another runs_dir")
        return Check("runs_dir", True, f"{runs_dir.absolute()} is writable")

    def _check_resume(self, run_dir: Path, spec: JobSpec) -> Check:
        job = read_json(run_dir / JOB_FILE)
        if job is None:
            return Check("resume", False, f"{run_dir} is not a run directory (no {JOB_FILE})")
        if job.get("kind") != spec.kind:
            return Check("resume", False, f"{run_dir} ran kind {job.get('kind')!r}, not {spec.kind!r}")
        status = Job(run_dir).status()
        if status.state == COMPLETED:
            return Check("resume", False, f"{run_dir.name} is COMPLETED: a completed run directory is never written "
                         "again; launch a new run instead")
        if status.state == IN_PROGRESS:
            return Check("resume", False, f"{run_dir.name} is still running (pid {status.pid}); cancel() it first")
        return Check("resume", True, f"attempt {int(job.get('attempt', 1)) + 1} in {run_dir} after: {status.reason}")

    def _job_json(self, spec: JobSpec, model: str | None, files: dict[str, str], command: list[str], *,
                  attempt: int, resume: bool) -> dict[str, Any]:
        return {"format": JOB_FORMAT, "kind": spec.kind, "spec": spec.to_dict(),
                "config": config_to_dict(spec.config),
                "config_changed": spec.config.changed() if spec.config is not None else {},
                "model": model, "train_file": files.get("train_file"), "eval_file": files.get("eval_file"),
                "attempt": attempt, "resume": resume, "created": utc_now(), "command": command, "cwd": os.getcwd(),
                "host": socket.gethostname(),
                "runtime": {"runs_dir": str(self.runs_dir), "python": self.python, "env": self.env},
                "versions": _versions()}

    def launch(self, spec: JobSpec | None = None, *, resume_from: str | os.PathLike | None = None,
               dry_run: bool = False) -> Job | DryRunReport:
        """Start the job in a new run directory (or resume it in `resume_from`) and return its Job at once.

        dry_run=True runs the same checks and returns a DryRunReport, starting nothing and creating no directory.
        Failed checks raise LaunchError. resume_from relaunches a killed, failed or stopped run of the same kind in
        its own directory (the job function continues from its checkpoints; the spec may change, e.g. more
        max_steps); a COMPLETED run directory is never written again.
        """
        if spec is None:
            if resume_from is None:
                raise TypeError("launch() needs a JobSpec (or resume_from=run_dir to relaunch a run)")
            spec = Job(resume_from).spec
        report = self.check(spec, resume_from=resume_from)
        if dry_run:
            return report
        if not report.ok:
            raise LaunchError(report)
        warn_launch(spec.config, stacklevel=2)
        if resume_from is None:

            run_dir = new_run_dir(self.runs_dir, spec.name).resolve()
            history: list[dict[str, Any]] = []
        else:
            run_dir = Path(resume_from).resolve()
            history = (read_json(run_dir / JOB_FILE) or {}).get("attempts", [])
        command = self.command(run_dir)
        job_json = {**report.job_json, "command": command,
                    "attempts": [*history, {"attempt": report.job_json["attempt"], "launched": utc_now(),
                                            "resume": resume_from is not None}]}
        write_json_atomic(run_dir / JOB_FILE, job_json)
        (run_dir / PID_FILE).unlink(missing_ok=True)
        write_json_atomic(run_dir / STATUS_FILE, {"state": IN_PROGRESS, "reason": "starting", "pid": None,
                                                  "attempt": job_json["attempt"], "started": None, "ended": None})
        try:
            with open(run_dir / STDOUT_FILE, "ab") as stdout:
                process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=self._environment(),
                                           start_new_session=True, close_fds=True)
        except OSError as error:
            write_json_atomic(run_dir / STATUS_FILE, {"state": FAILED, "reason": f"could not start the worker: "
                                                      f"{error}", "pid": None, "attempt": job_json["attempt"],
                                                      "started": None, "ended": utc_now()})
            raise JobError(f"could not start {command[0]}: {error}") from error
        (run_dir / PID_FILE).write_text(str(process.pid))
        return Job(run_dir, spec, process=process, runtime=self)

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        for key, value in self.env.items():
            if key == "PYTHONPATH" and env.get("PYTHONPATH"):
                value = f"{value}{os.pathsep}{env['PYTHONPATH']}"
            env[key] = str(value)
        return env

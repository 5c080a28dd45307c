"""Run jobs as local subprocesses, so long work never blocks the notebook kernel.

`LocalRuntime.launch(spec)` writes a fresh run directory (job.json), starts
`python -m nbtoolkit.runtime.worker RUN_DIR` in its own session and returns a `Job` at once. The `Job` handle reads
what the worker writes (status.json, log.txt, metrics.jsonl, progress.json, result.json) and works the same after
`Job.attach(run_dir)` in a fresh kernel. `launch(spec, dry_run=True)` runs every check a launch runs and starts
nothing.

The pieces every runtime shares live beside this module: the spec and job.json (`spec`), the launch checks
(`checks`), the state machine (`status`), progress and its renderers (`progress`). Job and LocalRuntime stay
together because each needs the other: a runtime returns Jobs, and Job.resume relaunches through its runtime.
"""

from __future__ import annotations

import html
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbtoolkit.advisor import warn_launch
from nbtoolkit.estimate.local import estimate_for_launch, record_launch_estimate
from nbtoolkit.runtime.checks import (
    Check,
    DryRunReport,
    LaunchError,
    check_config,
    check_data,
    check_disk,
    check_job_function,
    check_labels,
    check_model,
    check_rows,
    existing_ancestor,
)
from nbtoolkit.runtime.events import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    LOG_FILE,
    PID_FILE,
    PROGRESS_FILE,
    STATUS_FILE,
    STDOUT_FILE,
    RunLog,
    new_run_dir,
    read_json,
    read_metrics,
    tail_text,
    utc_now,
    write_json_atomic,
)
from nbtoolkit.runtime.progress import EtaClock, ProgressPrinter, progress_html, run_dir_snapshot, state_html
from nbtoolkit.runtime.results import JobFailed, TrainingResult
from nbtoolkit.runtime.spec import JobSpec, job_record, next_attempt, write_job_record
from nbtoolkit.runtime.status import (
    CANCELLED,
    WORKER_MODULE,
    JobError,
    JobStatus,
    pid_alive,
    read_status,
    record_stopped,
)
from nbtoolkit.theme import COLOURS, MUTED


class _Text(str):
    """A string that shows as plain lines in a notebook instead of a quoted repr."""

    def __repr__(self) -> str:
        return str(self)


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
        self._clock = EtaClock()  # the card's ETA, from the steps seen between two displays

    @classmethod
    def attach(cls, run_dir: str | os.PathLike) -> Job:
        """The job of an existing run directory (e.g. after a kernel restart)."""
        return cls(run_dir)

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.kind

    # -- reading ----------------------------------------------------------------------------------------------

    def status(self) -> JobStatus:
        """Where the job is; a worker that vanished without a word (SIGKILL, OOM, a full disk) is reported FAILED
        with the cause its output shows; a status.json the disk cannot give back is part of the reason."""
        return read_status(self.run_dir, alive=self._alive, process=self._process)

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        return pid_alive(pid, self.run_dir)

    def logs(self, tail: int = 50) -> str:
        """The last `tail` lines of log.txt, then of stdout.log (warnings, tracebacks, library output)."""
        text = tail_text(self.run_dir / LOG_FILE, tail)
        out = tail_text(self.run_dir / STDOUT_FILE, tail)
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
        view = ProgressPrinter(self.name) if progress else None
        try:
            while True:
                status = self.status()
                if view is not None:
                    view.update(run_dir_snapshot(self.run_dir, status, view.clock))
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
        deadline = time.monotonic() + 30
        while (status.pid is None or status.started is None) and not status.done and time.monotonic() < deadline:
            time.sleep(0.05)  # launched a moment ago: the worker handles signals once status.json says started
            status = self.status()
        if status.done:
            return status
        pid = status.pid
        RunLog(self.run_dir, echo=None).info(f"cancel requested: SIGTERM to pid {pid}")
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, grace):
            self._signal(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)
            record_stopped(self.run_dir, f"{CANCELLED} (killed: did not stop within {grace:g} s)")
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
        snapshot = run_dir_snapshot(self.run_dir, status, self._clock)
        when = " · ".join(x for x in (f"pid {status.pid}" if status.pid and not status.done else "",
                                      f"started {status.started}" if status.started else "",
                                      f"ended {status.ended}" if status.ended else "") if x)
        return (f'<div class="nbt-job" style="border:1px solid {COLOURS["border"]};border-radius:6px;'
                f'padding:6px 10px;display:inline-block;font-size:13px">'
                + state_html(self.name, snapshot, self.spec.kind) + progress_html(snapshot)
                + f'<br><code>{html.escape(str(self.run_dir))}</code>'
                + (f'<br><span style="color:{MUTED}">{html.escape(when)}</span>' if when else "") + "</div>")


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
        checks = [check_job_function(spec, self._python_paths()),
                  check_config(spec.config, "local", "the local runtime trains with local settings (run Nova "
                               "configs on SageMaker)")]
        model_check, model_bytes, model = check_model(spec)
        checks.append(model_check)
        files: dict[str, str | None] = {"model": model}
        for what in ("train_file", "eval_file"):
            value = getattr(spec, what)
            if value is None:
                continue
            data_check, rows = check_data(what, value, spec, platform="local")
            checks.append(data_check)
            files[what] = str(Path(value).expanduser().resolve())
            if what == "train_file" and data_check.ok and spec.kind != "eval":
                rows_check = check_rows(spec, rows)
                if rows_check is not None:
                    checks.append(rows_check)
        labels_check = check_labels(spec)
        if labels_check is not None:
            checks.append(labels_check)
        if resume_from is not None:
            run_dir = Path(resume_from).resolve()
            checks.append(self._check_resume(run_dir, spec))
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            run_dir = (self.runs_dir / f"{spec.name}-{stamp}").absolute()
            checks.append(self._check_runs_dir())
        checks.append(check_disk(run_dir, model_bytes))
        command = self.command(run_dir)
        job_json = job_record(spec, files=files, command=command, cwd=os.getcwd(),
                              runtime={"runs_dir": str(self.runs_dir), "python": self.python, "env": self.env},
                              attempt=next_attempt(resume_from), resume=resume_from is not None,
                              host=socket.gethostname())
        ok = all(c.ok for c in checks)
        estimate = estimate_for_launch(spec, self.runs_dir) if ok else None
        return DryRunReport(ok, checks, command, job_json, str(run_dir), estimate)

    def _check_runs_dir(self) -> Check:
        runs_dir = self.runs_dir
        if runs_dir.exists() and not runs_dir.is_dir():
            return Check("runs_dir", False, f"{runs_dir} exists and is not a directory")
        ancestor = existing_ancestor(runs_dir)
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
        run_dir = (new_run_dir(self.runs_dir, spec.name) if resume_from is None else Path(resume_from)).resolve()
        command = self.command(run_dir)
        job_json = write_job_record(run_dir, report.job_json, command=command)
        if report.estimate is not None:
            record_launch_estimate(run_dir, report.estimate)
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

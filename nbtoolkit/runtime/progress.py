"""One model of a job's progress: a JobSnapshot (state, phase, step/total, ETA, latest numbers) and its renderers.

Every view draws the same snapshot: `ProgressPrinter` as a tqdm bar or JSON lines (Job.wait), `progress_html` as
the bar of a job card (Job and SageMakerJob `_repr_html_`), and the JobMonitor widget in `nbtoolkit.ui.monitor`.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.runtime.events import COMPLETED, FAILED, METRICS_FILE, PROGRESS_FILE, read_json
from nbtoolkit.runtime.status import CANCELLED
from nbtoolkit.theme import COLOURS, MUTED

# The numbers shown beside a progress bar, in this order, when a job logs them (also the metrics a SageMaker job
# extracts from its log).
METRIC_KEYS = ("loss", "eval_loss", "lr", "reward_mean", "eval_reward_mean", "kl", "completion_length",
               "entropy", "tokens_per_second", "seconds_per_step")
DONE_STATES = (COMPLETED, FAILED)
STATE_COLOURS = {COMPLETED: COLOURS["ok"], FAILED: COLOURS["error"]}  # anything else (running) shows amber
CANCELLED_STATE = "CANCELLED"  # how a job stopped on request is shown (its recorded state is FAILED)
WAITING_TEXT = "starting: loading the model and data (steps show once training begins)"
_TAIL_BYTES = 8192
# Log lines a person does not need in the tail: redrawn progress bars ("40%|████  | 4/10 [...]") and library
# deprecation notices (a FutureWarning line and the source line the warnings module prints under it).
_BAR_LINE = re.compile(r"\d+%\|.*\|")
_WARNING_LINE = re.compile(r"\b(FutureWarning|DeprecationWarning|PendingDeprecationWarning)\b")


@dataclass
class JobSnapshot:
    """What is known about a job at one poll."""

    state: str
    reason: str | None = None
    done: bool = False
    phase: str | None = None
    step: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    numbers: dict[str, float] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    logs: str = ""
    estimate: Any = None  # the nbtoolkit.estimate.Estimate recorded at launch, when the job has one
    elapsed: float | None = None  # seconds since the job started, as its progress reports them

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.step / self.total) if self.total and self.step is not None else None

    @property
    def progress_text(self) -> str:
        """"train 12/40 · ETA 1:05 · estimated 2-3 min, elapsed 0:40"; "" before the job reports anything."""
        parts = []
        if self.total:
            parts.append(f"{self.phase or 'step'} {self.step}/{self.total}")
            if self.eta_seconds is not None:
                parts.append(f"ETA {format_seconds(self.eta_seconds)}")
        if self.estimate is not None:
            parts.append(f"estimated {self.estimate.headline()}"
                         + (f", elapsed {format_seconds(self.elapsed)}" if self.elapsed is not None else ""))
        return " · ".join(parts)

    @property
    def shown_state(self) -> tuple[str, str, str]:
        """(state, colour, detail) as views show them: a job stopped on request reads CANCELLED, not FAILED."""
        reason = str(self.reason or "")
        if self.done and reason.startswith(CANCELLED):
            return CANCELLED_STATE, MUTED, reason[len(CANCELLED):].strip(" ()")
        return self.state, STATE_COLOURS.get(self.state.upper(), COLOURS["warning"]), reason

    @property
    def numbers_text(self) -> str:
        return " · ".join(f"{k} {format_number(v)}" for k, v in self.numbers.items())


class EtaClock:
    """Seconds left in the current phase, from the steps this clock saw go by (else the job's own elapsed)."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.first: tuple[float, int] | None = None

    def update(self, phase: str | None, step: int, total: int, *, elapsed: float | None = None,
               now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self.first is None or phase != self.phase or step < self.first[1]:
            self.phase, self.first = phase, (now, step)
        if step >= total:
            return 0.0
        seen_time, seen_step = self.first
        if step > seen_step and now > seen_time:
            return (now - seen_time) / (step - seen_step) * (total - step)
        if elapsed and step > 0:
            return elapsed / step * (total - step)
        return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def status_parts(status: Any) -> tuple[str, str | None, bool]:
    """(state, reason, done) from a JobStatus, a dict or a plain string."""
    if isinstance(status, str):
        state, reason, done = status, None, None
    elif isinstance(status, dict):
        state, reason, done = str(status.get("state", "UNKNOWN")), status.get("reason"), status.get("done")
    else:
        state, reason, done = str(getattr(status, "state", status)), getattr(status, "reason", None), \
            getattr(status, "done", None)
    if done is None:
        done = state.upper() in DONE_STATES
    return state, reason, bool(done)


def latest_numbers(rows: pd.DataFrame | list[dict] | dict[str, Any]) -> dict[str, float]:
    """The latest value of each METRIC_KEYS metric (rows of metrics.jsonl, or one merged row)."""
    if isinstance(rows, dict):
        return {k: rows[k] for k in METRIC_KEYS if isinstance(rows.get(k), (int, float))
                and not isinstance(rows.get(k), bool)}
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    numbers = {}
    for name in METRIC_KEYS:
        if name in frame:
            values = pd.to_numeric(frame[name], errors="coerce").dropna()
            if len(values):
                numbers[name] = float(values.iloc[-1])
    return numbers


def latest_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The latest value of each metric in the last rows of metrics.jsonl (a train row and an eval row are often
    separate), reading only the end of the file."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return {}
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    merged: dict[str, Any] = {}
    lines = text[: text.rfind("\n") + 1].splitlines()
    for line in lines[1:] if size > _TAIL_BYTES else lines:  # past the tail's start, the first line is partial
        try:
            merged.update({k: v for k, v in json.loads(line).items() if v is not None})
        except ValueError:
            continue  # a row being written
    return merged


def take_snapshot(job: Any, clock: EtaClock, tail: int = 15) -> JobSnapshot:
    """Poll anything with the Job interface once: status(), metrics(), logs(tail) and, if it has one, progress()."""
    state, reason, done = status_parts(job.status())
    metrics = job.metrics()
    metrics = pd.DataFrame() if metrics is None else (
        metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(list(metrics)))
    progress = job.progress() if hasattr(job, "progress") else None
    phase = step = total = eta = None
    if progress and progress.get("total"):
        phase, step, total = progress.get("phase"), int(progress.get("step") or 0), int(progress["total"])
        eta = clock.update(phase, step, total, elapsed=progress.get("elapsed"))
    elif "step" in metrics and len(metrics):
        config = getattr(getattr(job, "spec", None), "config", None)
        total = getattr(config, "max_steps", None)
        step = int(pd.to_numeric(metrics["step"], errors="coerce").max())
        if total:
            eta = clock.update("train", step, int(total))
    if done:
        eta = None
    run_dir = getattr(job, "run_dir", None)
    estimate = None
    if run_dir is not None:
        from nbtoolkit.estimate.local import launch_estimate

        estimate = launch_estimate(run_dir)
    elapsed = progress.get("elapsed") if progress else None
    # Read more than `tail` lines: the bar redraws and warnings left out would otherwise leave the tail short.
    logs = clean_log(str(job.logs(tail * 4) or ""), tail) if tail else ""
    return JobSnapshot(state, reason, done, phase, step, total, eta, latest_numbers(metrics), metrics, logs,
                       estimate, elapsed)


def clean_log(text: str, tail: int) -> str:
    """The last `tail` lines of a job log worth reading: progress-bar redraws and library deprecation warnings
    (with the source line printed under each) left out."""
    kept: list[str] = []
    skip_source = False
    for line in re.split(r"\r\n|\r|\n", text):
        if _WARNING_LINE.search(line):
            skip_source = True
            continue
        if skip_source and line.startswith((" ", "\t")):
            continue
        skip_source = False
        if line.strip() and not _BAR_LINE.search(line):
            kept.append(line)
    return "\n".join(kept[-tail:])


def run_dir_snapshot(run_dir: str | os.PathLike, status: Any, clock: EtaClock | None = None) -> JobSnapshot:
    """A cheap snapshot from a run directory: progress.json and the tail of metrics.jsonl (no log, no table)."""
    state, reason, done = status_parts(status)
    progress = read_json(Path(run_dir) / PROGRESS_FILE) or {}
    phase = step = total = eta = None
    if progress.get("total"):
        phase, step, total = progress.get("phase"), int(progress.get("step") or 0), int(progress["total"])
        if not done:
            eta = (clock or EtaClock()).update(phase, step, total, elapsed=progress.get("elapsed"))
    return JobSnapshot(state, reason, done, phase, step, total, eta, latest_numbers(latest_metrics(run_dir)))


def state_html(title: str, snapshot: JobSnapshot, subtitle: str = "") -> str:
    """A job card's first line: its title (and a muted subtitle), its state in the state's colour, the reason."""
    state, colour, detail = snapshot.shown_state
    return (f"<b>{html.escape(title)}</b> "
            + (f"<span style='color:{MUTED}'>{html.escape(subtitle)}</span> " if subtitle else "")
            + f"<span style='color:{colour};font-weight:bold'>{html.escape(state)}</span>"
            + (f" - {html.escape(detail)}" if detail else ""))


def progress_html(snapshot: JobSnapshot) -> str:
    """A job card's progress line: an HTML <progress> bar with the phase, step, ETA and latest numbers; while a
    job starts, what it is doing; '' for a finished job that reported no steps."""
    if not snapshot.total:
        return "" if snapshot.done else f"<br><span style='color:{MUTED}'>{html.escape(WAITING_TEXT)}</span>"
    numbers = snapshot.numbers_text
    return (f'<br><progress value="{snapshot.step or 0}" max="{snapshot.total}"></progress> '
            f"{html.escape(snapshot.progress_text)}" + (f" · {html.escape(numbers)}" if numbers else ""))


class ProgressPrinter:
    """The text renderer Job.wait uses: a tqdm.auto bar, or JSON lines inside a training container
    (TRAINING_JOB_NAME set), where a redrawn bar would fill the log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.json_lines = bool(os.environ.get("TRAINING_JOB_NAME"))
        # NBTOOLKIT_PROGRESS=text: a plain text bar even in a notebook (for frontends that render no widgets).
        self.text_only = os.environ.get("NBTOOLKIT_PROGRESS", "").lower() == "text"
        self.clock = EtaClock()
        self.bar = None
        self.key: tuple[Any, ...] | None = None
        self.numbers: dict[str, Any] = {}

    def update(self, snapshot: JobSnapshot) -> None:
        if self.json_lines:
            self._print_line(snapshot)
        elif snapshot.total:
            self._draw(snapshot)

    def _print_line(self, snapshot: JobSnapshot) -> None:
        key = (snapshot.state, snapshot.phase, snapshot.step)
        if key == self.key:
            return
        self.key = key
        line: dict[str, Any] = {"job": self.name, "state": snapshot.state}
        if snapshot.reason:
            line["reason"] = snapshot.reason
        if snapshot.total:
            line.update(phase=snapshot.phase, step=snapshot.step, total=snapshot.total)
            if snapshot.eta_seconds is not None:
                line["eta_seconds"] = round(snapshot.eta_seconds, 1)
        line.update(snapshot.numbers)
        print(json.dumps(line), flush=True)

    def _draw(self, snapshot: JobSnapshot) -> None:
        if self.text_only:
            from tqdm.std import tqdm
        else:
            from tqdm.auto import tqdm

        phase, total, step = snapshot.phase or "train", int(snapshot.total), int(snapshot.step or 0)
        if self.bar is None or (phase, total) != self.key:
            if self.bar is not None:
                self.bar.close()
            self.key = (phase, total)
            self.bar = tqdm(total=total, initial=step, desc=f"{self.name} {phase}", unit="step", dynamic_ncols=True)
        if step > self.bar.n:
            self.bar.update(step - self.bar.n)
        if snapshot.numbers and snapshot.numbers != self.numbers:  # on news only: `make pipeline > file` stays small
            self.numbers = snapshot.numbers
            self.bar.set_postfix({k: format_number(v) for k, v in snapshot.numbers.items()}, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            if any(cls.__module__ == "tqdm.notebook" for cls in type(self.bar).__mro__):
                # A widget bar leaves no text in a saved or headless notebook: print its final state once.
                print(self.bar, flush=True)
            self.bar.close()
            self.bar = None

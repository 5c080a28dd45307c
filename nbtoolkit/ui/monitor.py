"""JobMonitor: status, progress with ETA, live curves, log tail and Stop for any job, polled from a thread.

Works with anything that has the Job interface: `status()`, `metrics()`, `logs(tail)`, `progress()`, `cancel()`
(LocalRuntime's Job, a SageMaker job, a test double). The polling thread only sets widget traits, so the kernel
stays free; where widgets do not render, an HTML card updated through a display handle shows the same progress.
"""

from __future__ import annotations

import html
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from nbtoolkit.advisor import advise_running
from nbtoolkit.ui._base import WIDGET_MIME, WidgetView
from nbtoolkit.ui._widgets import COLOURS, MUTED, add_classes, figure_png, png_img, widgets

DONE_STATES = ("COMPLETED", "FAILED", "STOPPED")
STATE_COLOURS = {"COMPLETED": COLOURS["ok"], "FAILED": COLOURS["error"], "STOPPED": MUTED}
# Latest values shown beside the bar, in this order, when the job logs them.
SHOWN_NUMBERS = ("loss", "eval_loss", "lr", "reward_mean", "eval_reward_mean", "kl", "completion_length",
                 "entropy", "tokens_per_second", "seconds_per_step")
MAX_POLL_FAILURES = 5
CANCELLED = "cancelled"  # the reason a job stopped on request gives (runtime.worker.CANCELLED)
CANCELLED_STATE = "CANCELLED"
WAITING_TEXT = "starting: loading the model and data (steps show once training begins)"
# Log lines a person does not need in the tail: redrawn progress bars ("40%|████  | 4/10 [...]") and library
# deprecation notices (a FutureWarning line and the source line the warnings module prints under it).
_BAR_LINE = re.compile(r"\d+%\|.*\|")
_WARNING_LINE = re.compile(r"\b(FutureWarning|DeprecationWarning|PendingDeprecationWarning)\b")


@dataclass
class JobSnapshot:
    """What the monitor knows about a job at one poll."""

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


class EtaClock:
    """Seconds left in the current phase, from the steps this monitor saw go by (else the job's own elapsed)."""

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


def _status_parts(status: Any) -> tuple[str, str | None, bool]:
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


def _metrics_frame(metrics: Any) -> pd.DataFrame:
    if metrics is None:
        return pd.DataFrame()
    return metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(list(metrics))


def _latest(metrics: pd.DataFrame) -> dict[str, float]:
    numbers = {}
    for name in SHOWN_NUMBERS:
        if name in metrics:
            values = pd.to_numeric(metrics[name], errors="coerce").dropna()
            if len(values):
                numbers[name] = float(values.iloc[-1])
    return numbers


def take_snapshot(job: Any, clock: EtaClock, tail: int = 15) -> JobSnapshot:
    """Poll `job` once."""
    state, reason, done = _status_parts(job.status())
    metrics = _metrics_frame(job.metrics())
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
    return JobSnapshot(state, reason, done, phase, step, total, eta, _latest(metrics), metrics,
                       clean_log(str(job.logs(tail * 4) or ""), tail), estimate, elapsed)


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


def shown_state(snapshot: JobSnapshot) -> tuple[str, str, str]:
    """(state, colour, detail) as the monitor shows them: a job stopped on request reads CANCELLED (not FAILED)."""
    reason = str(snapshot.reason or "")
    if snapshot.done and reason.startswith(CANCELLED):
        return CANCELLED_STATE, MUTED, reason[len(CANCELLED):].strip(" ()")
    return snapshot.state, STATE_COLOURS.get(snapshot.state.upper(), COLOURS["warning"]), reason


def _state_html(title: str, snapshot: JobSnapshot) -> str:
    state, colour, detail = shown_state(snapshot)
    return (f"<b>{html.escape(title)}</b> <span style='color:{colour};font-weight:bold'>{html.escape(state)}</span>"
            + (f" - {html.escape(detail)}" if detail else ""))


def _number(value: float) -> str:
    return f"{value:.4g}"


def snapshot_html(title: str, snapshot: JobSnapshot, curves_png: bytes | None = None, *, css_class: str = "") -> str:
    """The monitor as plain HTML: what shows where widgets do not render."""
    parts = [f'<div class="nbt-job-card {css_class}" style="border:1px solid {COLOURS["border"]};border-radius:6px;'
             f'padding:6px 10px;font-size:13px">' + _state_html(title, snapshot)]
    if not snapshot.total and not snapshot.done:
        parts.append(f"<br><span style='color:{MUTED}'>{html.escape(WAITING_TEXT)}</span>")
    if snapshot.total:
        parts.append(f'<br><progress value="{snapshot.step or 0}" max="{snapshot.total}" style="width:240px">'
                     f"</progress> {html.escape(_progress_text(snapshot))}")
    if snapshot.numbers:
        parts.append("<br>" + html.escape(" · ".join(f"{k} {_number(v)}" for k, v in snapshot.numbers.items())))
    if curves_png:
        parts.append("<br>" + png_img(curves_png, "training curves"))
    if snapshot.logs:
        parts.append(f"<pre style='max-height:12em;overflow:auto;font-size:11px'>{html.escape(snapshot.logs)}</pre>")
    if not snapshot.done:
        parts.append(f"<span style='color:{MUTED}'>stop it with job.cancel()</span>")
    return "".join(parts) + "</div>"


def _progress_text(snapshot: JobSnapshot) -> str:
    parts = []
    if snapshot.total:
        parts.append(f"{snapshot.phase or 'step'} {snapshot.step}/{snapshot.total}")
        if snapshot.eta_seconds is not None:
            parts.append(f"ETA {format_seconds(snapshot.eta_seconds)}")
    if snapshot.estimate is not None:
        parts.append(f"estimated {snapshot.estimate.headline()}"
                     + (f", elapsed {format_seconds(snapshot.elapsed)}" if snapshot.elapsed is not None else ""))
    return " · ".join(parts)


class JobMonitor(WidgetView):
    """Live view of one job: status, progress bar with ETA, curves, latest numbers, log tail and a Stop button.

    Polls every `poll` seconds from a daemon thread (started at once unless start=False) until the job ends;
    `refresh()` polls once by hand. Curves default to loss/lr (SFT) or reward/KL/reply length (RFT) and are
    redrawn at most every `redraw` seconds.
    Children: `status`, `bar`, `progress_text`, `numbers`, `curves`, `log`, `stop_button`.
    """

    def __init__(self, job: Any, *, poll: float = 2.0, tail: int = 15, start: bool = True,
                 curves: tuple[str, ...] | None = None, redraw: float = 5.0) -> None:
        w = widgets()
        self.job = job
        self.poll = poll
        self.tail = tail
        self.curve_names = curves
        self.redraw = redraw
        self._drawn_at = -math.inf
        self.snapshot: JobSnapshot | None = None
        self.curves_png: bytes | None = None
        self.error: BaseException | None = None
        self._clock = EtaClock()
        self._drawn_rows = -1
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._handle: Any = None
        self.thread: threading.Thread | None = None
        self.uid = uuid.uuid4().hex[:10]

        self.status = w.HTML()
        self.bar = add_classes(w.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info"), "nbt-progress")
        self.progress_text = w.HTML()
        self.numbers = w.HTML()
        self.advice = add_classes(w.HTML(), "nbt-advice")
        self.curves = add_classes(w.Image(format="png", layout=w.Layout(max_width="100%")), "nbt-curves")
        self.curves.layout.display = "none"
        self.log = add_classes(w.HTML(), "nbt-log")
        self.stop_button = add_classes(w.Button(description="Stop", icon="stop", button_style="danger",
                                                tooltip="cancel the job (it checkpoints, then stops)"), "nbt-stop")
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = add_classes(w.VBox([
            w.HBox([self.status, self.stop_button], layout=w.Layout(justify_content="space-between")),
            w.HBox([self.bar, self.progress_text]), self.numbers, self.advice, self.curves, self.log,
        ], layout=w.Layout(border=f"1px solid {COLOURS['border']}", padding="4px 8px")), "nbt-job-monitor",
            f"nbt-monitor-{self.uid}")
        self.refresh()
        if start:
            self.start()

    @property
    def title(self) -> str:
        name = getattr(self.job, "name", None) or type(self.job).__name__
        kind = getattr(getattr(self.job, "spec", None), "kind", None)
        return f"{name} ({kind})" if kind else str(name)

    def __repr__(self) -> str:
        state = self.snapshot.state if self.snapshot else "?"
        return f"JobMonitor({self.title}, {state})"

    # -- polling ----------------------------------------------------------------------------------------------

    def refresh(self) -> JobSnapshot:
        """Poll the job once and update every part of the view (safe from any thread)."""
        with self._lock:
            snapshot = take_snapshot(self.job, self._clock, self.tail)
            self.snapshot = snapshot
            self.status.value = _state_html(self.title, snapshot)
            cancelled = shown_state(snapshot)[0] == CANCELLED_STATE
            fraction = snapshot.fraction
            if fraction is not None:
                self.bar.value = fraction
            elif snapshot.done and not cancelled:
                self.bar.value = 1.0
            # No empty bar while the model loads: a line saying what happens, the bar once steps are known.
            waiting = fraction is None and not snapshot.done
            self.bar.layout.display = "none" if waiting else ""
            self.bar.bar_style = ("success" if snapshot.state.upper() == "COMPLETED" else
                                  "warning" if cancelled else "danger" if snapshot.done else "info")
            text = _progress_text(snapshot)
            self.progress_text.value = html.escape(" · ".join(filter(None, [WAITING_TEXT, text])) if waiting else text)
            self.numbers.value = ("<span style='font-family:monospace;font-size:12px'>" + html.escape(
                " · ".join(f"{k} {_number(v)}" for k, v in snapshot.numbers.items())) + "</span>")
            advice = advise_running(snapshot.metrics)
            self.advice.value = advice._repr_html_() if advice else ""
            self._draw_curves(snapshot.metrics, force=snapshot.done)
            self.log.value = (f"<pre style='max-height:14em;overflow:auto;margin:0;font-size:11px'>"
                              f"{html.escape(snapshot.logs)}</pre>" if snapshot.logs else "")
            if snapshot.done:
                self.stop_button.disabled = True
                self.stop_button.description = "Ended"
            if self._handle is not None:
                from IPython.display import HTML

                self._handle.update(HTML(self.fallback_html()))
            return snapshot

    def _draw_curves(self, metrics: pd.DataFrame, *, force: bool = False) -> None:
        """Redraw when rows arrived, at most every `redraw` seconds (a PNG costs the kernel some CPU)."""
        if len(metrics) == self._drawn_rows or (not force and time.monotonic() - self._drawn_at < self.redraw):
            return
        from nbtoolkit.plots import curve_names, training_curves_figure

        names = self.curve_names or (curve_names(metrics) if "step" in metrics else ())
        names = tuple(n for n in names if n in metrics)
        if not names:
            return
        self._drawn_rows, self._drawn_at = len(metrics), time.monotonic()
        self.curves_png = figure_png(training_curves_figure(metrics, names, title=self.title), dpi=80)
        self.curves.value = self.curves_png
        self.curves.layout.display = ""

    def start(self) -> threading.Thread:
        """Poll from a daemon thread until the job ends (or close())."""
        if self.thread is not None and self.thread.is_alive():
            return self.thread
        self._closing.clear()
        self.thread = threading.Thread(target=self._run, name=f"nbtoolkit-monitor-{self.uid}", daemon=True)
        self.thread.start()
        return self.thread

    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                if self.refresh().done:
                    return
                failures = 0
            except Exception as error:  # noqa: BLE001 - a failed poll is shown, never raised in a thread
                failures += 1
                self.error = error
                self.progress_text.value = html.escape(f"poll failed ({failures}/{MAX_POLL_FAILURES}): {error}")
                if failures >= MAX_POLL_FAILURES:
                    return
            self._closing.wait(self.poll)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends and the view shows its end; returns `job.wait()`'s result (a TrainingResult
        for local jobs, which raise JobFailed when the job failed), or the last snapshot for jobs without wait()."""
        try:
            result = self.job.wait(progress=False, timeout=timeout) if hasattr(self.job, "wait") else None
        finally:
            if self.thread is None:
                self.refresh()
            self.join(timeout)
        return self.snapshot if result is None else result

    def join(self, timeout: float | None = None) -> JobSnapshot | None:
        """Wait for the polling thread to end (the job ended); returns the last snapshot."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.snapshot

    def close(self) -> None:
        """Stop polling (the job keeps running)."""
        self._closing.set()

    def stop(self) -> threading.Thread:
        """Cancel the job from a background thread (a local cancel waits for the checkpoint); returns the thread."""
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"

        def cancel() -> None:
            try:
                self.job.cancel()
            except Exception as error:  # noqa: BLE001 - shown in the view
                self.error = error
                self.progress_text.value = html.escape(f"cancel failed: {error}")
                self.stop_button.disabled = False
                self.stop_button.description = "Stop"
            self.refresh()

        thread = threading.Thread(target=cancel, name=f"nbtoolkit-cancel-{self.uid}", daemon=True)
        thread.start()
        return thread

    # -- display ----------------------------------------------------------------------------------------------

    def fallback_html(self) -> str:
        if self.snapshot is None:
            return ""
        hide = (f"<style>body:has(.nbt-monitor-{self.uid}) .nbt-fallback-{self.uid} "
                "{display:none !important}</style>")
        return hide + snapshot_html(self.title, self.snapshot, self.curves_png, css_class=f"nbt-fallback-{self.uid}")

    def _ipython_display_(self) -> None:
        """The live widget, then an HTML card kept current through a display handle (hidden where the widget
        renders, in browsers supporting :has)."""
        from IPython.display import HTML, display

        bundle = self.widget._repr_mimebundle_()
        display({WIDGET_MIME: bundle[WIDGET_MIME], "text/plain": f"{self!r}: the live view needs ipywidgets; "
                 "the card below keeps updating"}, raw=True)
        self._handle = display(HTML(self.fallback_html()), display_id=True)

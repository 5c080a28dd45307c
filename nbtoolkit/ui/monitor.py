"""JobMonitor: status, progress with ETA, live curves, log tail and Stop for any job, polled from a thread.

Works with anything that has the Job interface: `status()`, `metrics()`, `logs(tail)`, `progress()`, `cancel()`
(LocalRuntime's Job, a SageMaker job, a test double). The polling thread only sets widget traits, so the kernel
stays free; where widgets do not render, an HTML card updated through a display handle shows the same progress.
The snapshot, its ETA and the HTML progress line are `nbtoolkit.runtime.progress`'s, which Job.wait and the job
cards draw too.
"""

from __future__ import annotations

import html
import math
import threading
import time
import uuid
from typing import Any

import pandas as pd

from nbtoolkit.advisor import advise_running
from nbtoolkit.runtime.progress import (  # noqa: F401 - WAITING_TEXT and clean_log are part of this view's API
    CANCELLED_STATE,
    WAITING_TEXT,
    EtaClock,
    JobSnapshot,
    clean_log,
    progress_html,
    state_html,
    take_snapshot,
)
from nbtoolkit.ui._base import WIDGET_MIME, WidgetView
from nbtoolkit.ui._widgets import COLOURS, MUTED, add_classes, figure_png, png_img, widgets

MAX_POLL_FAILURES = 5


def snapshot_html(title: str, snapshot: JobSnapshot, curves_png: bytes | None = None, *, css_class: str = "") -> str:
    """The monitor as plain HTML: what shows where widgets do not render."""
    parts = [f'<div class="nbt-job-card {css_class}" style="border:1px solid {COLOURS["border"]};border-radius:6px;'
             f'padding:6px 10px;font-size:13px">' + state_html(title, snapshot), progress_html(snapshot)]
    if snapshot.numbers and not snapshot.total:
        parts.append("<br>" + html.escape(snapshot.numbers_text))
    if curves_png:
        parts.append("<br>" + png_img(curves_png, "training curves"))
    if snapshot.logs:
        parts.append(f"<pre style='max-height:12em;overflow:auto;font-size:11px'>{html.escape(snapshot.logs)}</pre>")
    if not snapshot.done:
        parts.append(f"<span style='color:{MUTED}'>stop it with job.cancel()</span>")
    return "".join(parts) + "</div>"


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
            self.status.value = state_html(self.title, snapshot)
            cancelled = snapshot.shown_state[0] == CANCELLED_STATE
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
            text = snapshot.progress_text
            self.progress_text.value = html.escape(" · ".join(filter(None, [WAITING_TEXT, text])) if waiting else text)
            self.numbers.value = ("<span style='font-family:monospace;font-size:12px'>"
                                  + html.escape(snapshot.numbers_text) + "</span>")
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

"""A static, self-contained report.html for a pipeline run: stage table, confusion matrices, lengths, curves."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from nbtoolkit.forgetting import forgetting_table
from nbtoolkit.plots import (
    confusion_matrix_figure, response_length_figure, stage_table, stage_table_styler, training_curve_figure,
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9rem; } td, th { padding: 0.25rem 0.6rem; border: 1px solid #ddd; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; } .note { color: #555; font-size: 0.9rem; }
"""


GENERAL_NOTE = ("General ability, to catch forgetting: benchmark accuracy (log-likelihood multiple choice) and the "
                "retention probe on held-out rehearsal prompts (KL from the base model per token, its drop in "
                "log-probability, top-1 agreement; 0, 0 and 1 mean unchanged).")


def scoring_lines(stages: Mapping[str, Mapping[str, object]]) -> list[str]:
    """One line per stage saying how many rows it was scored on and from which split, from the optional keys of
    its metrics: "rows" (the evaluation's own wording, e.g. "500 of 600 rows, stratified sample (fixed seed)"),
    else "rows_scored" or "n" with "rows_total"; and "split"."""
    lines = []
    for stage, metrics in stages.items():
        scored = metrics.get("rows_scored", metrics.get("n"))
        rows = metrics.get("rows")
        if not rows and scored is None:
            continue
        if not rows:
            total = metrics.get("rows_total")
            rows = (f"{int(scored):,} of {int(total):,} rows" if total is not None and int(total) != int(scored)
                    else f"{int(scored):,} rows")
        split = metrics.get("split")
        lines.append(f"{stage}: {rows}" + (f", {split} split" if split else " (split not recorded)"))
    return lines


def curve_smoothing(frame: pd.DataFrame, y: str) -> int | None:
    """Steps in the rolling mean of a report curve: about a fifteenth of the run, none for short runs."""
    points = int(frame[y].notna().sum()) if y in frame else 0
    return max(3, points // 15) if points >= 12 else None


def figure_to_img(figure: Figure) -> str:
    """An <img> tag with the figure as an inline PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{encoded}">'


def render_report(
    title: str,
    stages: Mapping[str, Mapping[str, float]],
    *,
    confusions: Mapping[str, pd.DataFrame] | None = None,
    reply_lengths: Mapping[str, Sequence[float]] | None = None,
    max_new_tokens: int | None = None,
    curves: Mapping[str, tuple[pd.DataFrame, str]] | None = None,
    notes: Sequence[str] = (),
    general: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The report as one HTML string (figures embedded, no external files).

    general: {stage: general-ability headline} (GeneralEvalResult.headline()), shown beside the domain metrics.
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in notes]
    parts.append("<h2>Metrics by stage</h2>")
    scoring = scoring_lines(stages)
    if scoring:
        parts.append("<p class='note scored'>Scored on: " + "; ".join(map(html.escape, scoring)) + ".</p>")
    parts.append(stage_table_styler(stage_table(stages), "Task metrics by stage (Δ: change from the stage before; "
                                    "green is better in each metric's direction)").to_html())
    if general:
        parts.append("<h2>Domain and general ability</h2><p class='note'>" + html.escape(GENERAL_NOTE) + "</p>")
        parts.append(stage_table_styler(forgetting_table(stages, general),
                                        "Domain and general ability by stage").to_html())
    if confusions:
        parts.append("<h2>Confusion matrices</h2><p class='note'>Rows: true label; columns: predicted label.</p>")
        parts.append("<div class='figures'>")
        parts += [figure_to_img(confusion_matrix_figure(table, title=stage)) for stage, table in confusions.items()]
        parts.append("</div>")
    if reply_lengths:
        parts.append("<h2>Response lengths</h2>")
        parts.append(figure_to_img(response_length_figure(reply_lengths, limit=max_new_tokens)))
    if curves:
        parts.append("<h2>Training curves</h2><div class='figures'>")
        parts += [figure_to_img(training_curve_figure(frame, y=y, title=name, smooth=curve_smoothing(frame, y)))
                  for name, (frame, y) in curves.items()]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, title: str, stages: Mapping[str, Mapping[str, float]], **kwargs) -> Path:
    """Write `render_report(...)` to `path`."""
    path = Path(path)
    path.write_text(render_report(title, stages, **kwargs), encoding="utf-8")
    return path

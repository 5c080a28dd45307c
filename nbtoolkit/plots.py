"""Figures and tables for failure analysis. Helpers take `ax=None`, return a Figure, and never show it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Metrics shown in stage tables, in order, with how they are formatted.
STAGE_METRICS = ("exact_match", "quasi_exact_match", "label_accuracy", "macro_f1", "rouge1", "f1_score",
                 "loglik_accuracy", "no_valid_prediction", "reply_tokens_mean")


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def confusion_matrix_figure(confusion: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None,
                            normalize: bool = False) -> Figure:
    """Heatmap with true labels as rows and predicted labels as columns (seed 003's failure analysis)."""
    figure, ax = _axes(ax, (4.6, 3.6))
    data = confusion.astype(float)
    if normalize:
        totals = data.sum(axis=1).replace(0, np.nan)
        data = data.div(totals, axis=0).fillna(0.0)
    sns.heatmap(data, ax=ax, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", cbar=False,
                linewidths=0.5, linecolor="white")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return figure


def response_length_figure(lengths: Mapping[str, Sequence[float]], *, ax: Axes | None = None,
                           unit: str = "tokens", limit: int | None = None) -> Figure:
    """Overlaid histograms of reply lengths per stage; a dashed line marks the generation limit."""
    figure, ax = _axes(ax, (5.6, 3.4))
    frame = pd.DataFrame([(stage, value) for stage, values in lengths.items() for value in values],
                         columns=["stage", unit])
    if not frame.empty:
        bins = np.histogram_bin_edges(frame[unit], bins=min(30, max(5, frame[unit].nunique())))
        sns.histplot(frame, x=unit, hue="stage", bins=bins, element="step", stat="count", common_norm=False, ax=ax)
    if limit:
        ax.axvline(limit, color="grey", linestyle="--", linewidth=1)
        ax.annotate("max_new_tokens", (limit, ax.get_ylim()[1] * 0.95), ha="right", fontsize=8, color="grey")
    ax.set_xlabel(f"reply length ({unit})")
    ax.set_title("Response lengths")
    return figure


def training_curve_figure(metrics: pd.DataFrame, *, y: str = "loss", ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """A metric over optimizer steps (e.g. loss, reward_mean), with eval points when present."""
    figure, ax = _axes(ax, (5.6, 3.2))
    if y in metrics and "step" in metrics:
        rows = metrics.dropna(subset=[y])
        ax.plot(rows["step"], rows[y], label=y, linewidth=1.2)
    if y == "loss" and "eval_loss" in metrics:
        rows = metrics.dropna(subset=["eval_loss"])
        ax.plot(rows["step"], rows["eval_loss"], "o-", label="eval_loss", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel(y)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or y)
    return figure


def stage_table(stages: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = STAGE_METRICS) -> pd.DataFrame:
    """Metrics (rows) by stage (columns) plus the change of each stage from the previous one."""
    names = list(stages)
    present = [m for m in metrics if any(m in stages[s] for s in names)]
    table = pd.DataFrame({s: [stages[s].get(m, np.nan) for m in present] for s in names}, index=present,
                         dtype=float)
    table.index.name = "metric"
    for previous, current in zip(names, names[1:]):
        table[f"Δ {current}"] = table[current] - table[previous]
    return table


def stage_table_styler(table: pd.DataFrame, caption: str = "Metrics by stage"):
    """The notebook view of `stage_table`: three decimals, green for gains, red for losses."""
    deltas = [c for c in table.columns if str(c).startswith("Δ")]
    styler = table.style.format("{:.3f}", na_rep="–").set_caption(caption)
    if deltas:
        styler = styler.background_gradient(cmap="RdYlGn", subset=deltas, vmin=-0.5, vmax=0.5)
    return styler

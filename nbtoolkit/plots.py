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
# The rows of the case study's final table (BLEU both ways: the legacy value is what its numbers look like;
# docs/metrics.md).
FINAL_TABLE_METRICS = ("rouge1", "rouge2", "rougeL", "exact_match", "quasi_exact_match", "f1_score", "f1_score_quasi",
                      "bleu", "bleu_lighteval_legacy")
# Metrics where a drop is the gain (the delta colours follow each metric's direction); every other is higher-better.
LOWER_IS_BETTER = ("no_valid_prediction", "reply_tokens_mean", "reply_tokens_median", "reply_chars_mean",
                   "hit_max_new_tokens", "retention_mean_kl", "retention_logprob_drop", "loss", "eval_loss")
# Curves a training run shows by default: SFT loss and learning rate; RFT reward, KL and reply length.
DEFAULT_CURVES = {"sft": ("loss", "lr"), "rft": ("reward_mean", "kl", "completion_length")}


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure = Figure(figsize=size, layout="constrained")
    return figure, figure.add_subplot()


def confusion_matrix_figure(confusion: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None,
                            normalize: bool = False) -> Figure:
    """Heatmap with true labels as rows and predicted labels as columns (the case study's failure analysis)."""
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
        # Placed in axes coordinates (top, inside), so the label never runs past the top edge.
        ax.text(limit, 0.97, "max_new_tokens ", transform=ax.get_xaxis_transform(), ha="right", va="top",
                fontsize=8, color="grey")
    ax.set_xlabel(f"reply length ({unit})")
    ax.set_title("Response lengths")
    return figure


def training_curve_figure(metrics: pd.DataFrame, *, y: str = "loss", ax: Axes | None = None,
                          title: str | None = None, smooth: int | None = None) -> Figure:
    """A metric over optimizer steps (e.g. loss, reward_mean), with eval points when present.

    smooth=N draws the rolling mean over N steps, the raw values faint behind it (a reward from a few replies per
    step swings too much to read); only lines that have points get a legend entry.
    """
    figure, ax = _axes(ax, (5.6, 3.2))
    if y in metrics and "step" in metrics:
        rows = metrics.dropna(subset=[y])
        if smooth and smooth > 1 and len(rows) > smooth:
            ax.plot(rows["step"], rows[y], linewidth=0.8, alpha=0.3, label=f"{y} (raw)")
            ax.plot(rows["step"], rows[y].rolling(smooth, min_periods=1).mean(), linewidth=1.6,
                    label=f"{y} (mean of {smooth} steps)")
        elif len(rows):
            ax.plot(rows["step"], rows[y], label=y, linewidth=1.2)
    held_out = "eval_loss" if y == "loss" else f"eval_{y}"
    if held_out in metrics and "step" in metrics:
        rows = metrics.dropna(subset=[held_out])
        if len(rows):
            ax.plot(rows["step"], rows[held_out], "o-", label=held_out, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel(y)
    if ax.get_lines():
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title or y)
    return figure


def curve_names(metrics: pd.DataFrame) -> tuple[str, ...]:
    """The default curves of a metrics frame that has data: RFT's when it logs rewards, else SFT's."""
    kind = "rft" if "reward_mean" in metrics else "sft"
    return tuple(n for n in DEFAULT_CURVES[kind] if n in metrics and metrics[n].notna().any())


def training_curves_figure(metrics: pd.DataFrame, names: Sequence[str] | None = None, *,
                           axes: Sequence[Axes] | None = None, title: str | None = None) -> Figure:
    """One panel per metric over steps; default `curve_names(metrics)` (loss/lr, or reward/KL/reply length)."""
    names = tuple(names) if names is not None else curve_names(metrics)
    if axes is None:
        figure = Figure(figsize=(3.3 * max(1, len(names)), 2.7), layout="constrained")
        axes = list(figure.subplots(1, max(1, len(names)), squeeze=False)[0])
    figure = axes[0].figure
    if not names:
        axes[0].text(0.5, 0.5, "no metrics yet", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, name in zip(axes, names):
        training_curve_figure(metrics, y=name, ax=ax)
    if title:
        figure.suptitle(title)
    return figure


def per_class_table(per_class: Mapping[str, pd.DataFrame],
                    columns: Sequence[str] = ("precision", "recall", "f1", "support")) -> pd.DataFrame:
    """Per-class metrics of several stages side by side: labels as rows, (stage, metric) as columns."""
    table = pd.concat({stage: table[list(columns)] for stage, table in per_class.items()}, axis=1)
    counts = [column for column in table.columns if column[-1] == "support"]
    # Counts are whole numbers: shown "8", not "8.000" (a label missing from a stage stays empty, not 0).
    return table.astype({column: "Int64" for column in counts})


def per_class_figure(per_class: Mapping[str, pd.DataFrame], metric: str = "f1", *, ax: Axes | None = None) -> Figure:
    """Grouped bars of one per-class metric (f1, precision or recall) per label, one colour per stage."""
    figure, ax = _axes(ax, (5.6, 3.2))
    frame = pd.DataFrame([(stage, str(label), float(value)) for stage, table in per_class.items()
                          for label, value in table[metric].items()], columns=["stage", "label", metric])
    if not frame.empty:
        sns.barplot(frame, x="label", y=metric, hue="stage", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("true label")
    ax.set_title(f"Per-class {metric}")
    return figure


def label_distribution_figure(table: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Share of each label per split, from `nbtoolkit.data.label_distribution` (its total row is left out)."""
    figure, ax = _axes(ax, (5.0, 3.0))
    counts = table.drop(index="total", errors="ignore")
    shares = counts / counts.sum().replace(0, np.nan)
    frame = shares.reset_index(names="label").melt(id_vars="label", var_name="split", value_name="share")
    sns.barplot(frame, x="split", y="share", hue="label", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_title("Label share per split")
    return figure


def stage_table(stages: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = STAGE_METRICS, *,
                overall: bool = False) -> pd.DataFrame:
    """Metrics (rows) by stage (columns) plus the change of each stage from the previous one.

    overall=True adds the change of the last stage from the first (the case study's "Delta (RFT-Base)").
    """
    names = list(stages)
    present = [m for m in metrics if any(m in stages[s] for s in names)]
    table = pd.DataFrame({s: [stages[s].get(m, np.nan) for m in present] for s in names}, index=present,
                         dtype=float)
    table.index.name = "metric"
    for previous, current in zip(names, names[1:]):
        table[f"Δ {current}"] = table[current] - table[previous]
    if overall and len(names) > 2:
        table[f"Δ {names[-1]} − {names[0]}"] = table[names[-1]] - table[names[0]]
    return table


def stage_stderr(stages: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = STAGE_METRICS) -> pd.DataFrame:
    """The `<metric>_stderr` values matching `stage_table(stages, metrics)`'s stage columns (NaN where absent)."""
    names = list(stages)
    present = [m for m in metrics if any(m in stages[s] for s in names)]
    table = pd.DataFrame({s: [stages[s].get(f"{m}_stderr", np.nan) for m in present] for s in names},
                         index=present, dtype=float)
    table.index.name = "metric"
    return table


def stage_table_styler(table: pd.DataFrame, caption: str = "Metrics by stage", *, stderr: pd.DataFrame | None = None):
    """The notebook view of `stage_table`: three decimals (whole numbers for counts), gains green and losses red
    in each metric's direction (fewer invalid replies is a gain, see LOWER_IS_BETTER), missing deltas blank.

    With `stderr` (from `stage_stderr`), a stage's cell reads "0.772 ± 0.019".
    """
    deltas = [c for c in table.columns if str(c).startswith("Δ")]
    stages = [c for c in table.columns if c not in deltas]
    styler = table.style.format("{:.3f}", na_rep="–").set_caption(caption)
    values = table[stages]
    counts = [m for m in table.index if values.loc[m].dropna().abs().gt(1).any()
              and values.loc[m].dropna().mod(1).eq(0).all()]
    if counts:
        styler = styler.format("{:,.0f}", na_rep="–", subset=(counts, list(table.columns)))
    for (metric, stage), error in ([] if stderr is None else stderr.stack().items()):
        if metric in table.index and stage in table.columns and np.isfinite(error):
            styler = styler.format(lambda value, e=error: f"{value:.3f} ± {e:.3f}", subset=([metric], [stage]))
    if deltas:
        direction = pd.Series([-1.0 if m in LOWER_IS_BETTER else 1.0 for m in table.index], index=table.index)
        # Rates move on a 0-1 scale; a count or a length on its own (the row's largest value).
        scale = values.abs().max(axis=1).where(values.abs().max(axis=1) > 1, 0.5).replace(0, 0.5)
        gain = table[deltas].mul(direction / scale, axis=0).clip(-1, 1)
        styler = styler.background_gradient(cmap="RdYlGn", subset=deltas, gmap=gain.fillna(0), vmin=-1, vmax=1,
                                            axis=None)
        # A missing delta (a metric one stage lacks) stays a plain cell, not a coloured one.
        styler = styler.map(lambda v: "background-color: transparent; color: inherit" if pd.isna(v) else "",
                            subset=deltas)
    return styler


def mix_share_figure(mix, *, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Each source's effective share of a training batch (percent): the customer's data, then each category.

    `mix` is a MixConfig or a mapping {source: percent}.
    """
    shares = dict(mix.effective_shares() if hasattr(mix, "effective_shares") else mix)
    figure, ax = _axes(ax, (5.6, 0.9 + 0.28 * len(shares)))
    names = list(shares)[::-1]
    values = [shares[n] for n in names]
    colours = ["#1f6feb" if n == "customer" else "#8c959f" for n in names]
    bars = ax.barh(names, values, color=colours)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.3g}%", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, 112)
    ax.set_xlabel("share of every batch (%)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(title or "Effective share of a batch")
    return figure


def pareto_figure(table: pd.DataFrame, *, x: str = "general_accuracy", y: str = "label_accuracy",
                  labels: Sequence[str] = (), ax: Axes | None = None, title: str | None = None) -> Figure:
    """Domain metric (y) against general metric (x) per run; Pareto-front runs joined and highlighted, a row
    indexed 'base' (the untrained model) marked with a star. `labels` are columns written next to each point."""
    figure, ax = _axes(ax, (5.6, 4.0))
    rows = table.dropna(subset=[x, y]) if x in table and y in table else table.iloc[0:0]
    runs = rows[rows.index != "base"]
    front = runs[runs["pareto"]] if "pareto" in runs else runs.iloc[0:0]
    ax.scatter(runs[x], runs[y], color="#8c959f", label="run", zorder=2)
    if not front.empty:
        ordered = front.sort_values(x)
        ax.plot(ordered[x], ordered[y], "o-", color="#1f6feb", label="Pareto front", zorder=3)
    if "base" in rows.index:
        ax.scatter([rows.loc["base", x]], [rows.loc["base", y]], marker="*", s=160, color="#cf222e",
                   label="base model", zorder=4)
    for run, row in runs.iterrows():
        text = ", ".join(f"{c}={row[c]:g}" if isinstance(row[c], float) else f"{c}={row[c]}" for c in labels
                         if c in row and pd.notna(row[c]))
        ax.annotate(text or str(run), (row[x], row[y]), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"general: {x}")
    ax.set_ylabel(f"domain: {y}")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Domain vs general ability")
    return figure

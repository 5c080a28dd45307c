"""ResultsView: stage-over-stage metrics, confusion matrices, reply lengths, per-class metrics and samples."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtoolkit.errors import NbtoolkitError
from nbtoolkit.plots import (
    FINAL_TABLE_METRICS,
    STAGE_METRICS,
    confusion_matrix_figure,
    per_class_figure,
    per_class_table,
    response_length_figure,
    stage_stderr,
    stage_table,
    stage_table_styler,
)
from nbtoolkit.stages import STAGES_FILE, StageSummary, eval_job_name
from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import add_classes, figure_image, figure_png, message_html, png_img, widgets

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from nbtoolkit.evaluation import EvalResult
    from nbtoolkit.forgetting import GeneralEvalResult

def _eval_dir(path: Path) -> Path:
    """An eval result directory, given it or the eval job's run directory."""
    return path if (path / "eval.json").is_file() else path / "eval"


def load_stage_results(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, EvalResult]:
    """{stage: EvalResult} from a pipeline or workspace directory (its stages.json), or from a mapping of
    stage -> EvalResult, eval directory or eval job run directory."""
    from nbtoolkit.evaluation import EvalResult

    if isinstance(source, Mapping):
        return {str(stage): item if isinstance(item, EvalResult) else EvalResult.load(_eval_dir(Path(item)))
                for stage, item in source.items()}
    directory = Path(source)
    summary = StageSummary.load(directory)
    if summary is None:
        raise NbtoolkitError(f"no {STAGES_FILE} in {directory}: pass a pipeline output directory, a notebook "
                             "workdir, or a mapping of stage -> EvalResult")
    results = {}
    for stage in summary.stages:
        run_dir = summary.jobs.get(eval_job_name(stage))
        if run_dir and _eval_dir(Path(run_dir)).is_dir():
            results[stage] = EvalResult.load(_eval_dir(Path(run_dir)))
    if not results:
        raise NbtoolkitError(f"{directory / STAGES_FILE} lists no evaluated stage yet")
    return results


def load_general_results(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, GeneralEvalResult]:
    """{stage: GeneralEvalResult} of a pipeline directory's general-<stage> jobs, or from a mapping of stage ->
    GeneralEvalResult or its directory; {} when no general check ran."""
    from nbtoolkit.forgetting import GENERAL_DIR, RESULT_FILE, GeneralEvalResult

    if isinstance(source, Mapping):
        return {str(stage): item if isinstance(item, GeneralEvalResult) else GeneralEvalResult.load(item)
                for stage, item in source.items()}
    summary = StageSummary.load(source)
    jobs = summary.jobs if summary is not None else {}
    return {name.removeprefix("general-"): GeneralEvalResult.load(run_dir) for name, run_dir in jobs.items()
            if name.startswith("general-") and (Path(run_dir) / GENERAL_DIR / RESULT_FILE).is_file()}


class ResultsView(WidgetView):
    """Compare evaluated stages (baseline, SFT, RFT): tabs for the metric table (with general ability beside the
    domain metric when it was measured), confusion matrices, reply lengths, per-class metrics and a
    SampleExplorer. Figures and tables are also available without widgets: `table()`, `styler()`,
    `general_table()`, `confusion_figure()`, `lengths_figure()`, `per_class_figure()`.

    general: {stage: GeneralEvalResult or its directory}; read from a pipeline directory's general-<stage> jobs
    when `source` is a directory. note: a banner above the tables (`ResultsView.example()` says whose run it is).
    """

    def __init__(self, source: str | os.PathLike | Mapping[str, Any], *, metrics: Sequence[str] = STAGE_METRICS,
                 max_new_tokens: int | None = None, general: Mapping[str, Any] | None = None,
                 note: str | None = None) -> None:
        self.results = load_stage_results(source)
        self.note = note
        if general is None and not isinstance(source, Mapping):
            general = source
        self.general = load_general_results(general) if general is not None else {}
        self.metrics = tuple(metrics)
        first = next(iter(self.results.values()))
        self.max_new_tokens = max_new_tokens or getattr(first.config, "max_new_tokens", None)
        self._widget: Any = None
        self.explorer: Any = None

    @classmethod
    def example(cls, **options: Any) -> ResultsView:
        """The bundled example run (nbtoolkit.examples), labelled as an example in its stage names and banner."""
        from nbtoolkit.examples import example_description, example_results

        return cls(example_results(), note=f"Example run, not yours: {example_description()}. Your own results "
                                           "show here once your stages are evaluated.", **options)

    def __repr__(self) -> str:
        return f"ResultsView({', '.join(self.results)})"

    @property
    def stages(self) -> dict[str, dict[str, float]]:
        return {stage: result.metrics for stage, result in self.results.items()}

    # -- tables and figures (no widgets) ----------------------------------------------------------------------

    def table(self, metrics: Sequence[str] | None = None):
        """Metrics by stage with the change per stage and overall (a DataFrame)."""
        return stage_table(self.stages, metrics or self.metrics, overall=True)

    def styler(self, metrics: Sequence[str] | None = None, caption: str = "Metrics by stage (± stderr)"):
        """The table as a Styler: values ± stderr, gains green, losses red."""
        metrics = metrics or self.metrics
        return stage_table_styler(self.table(metrics), caption, stderr=stage_stderr(self.stages, metrics))

    def general_table(self, domain_metrics: Sequence[str] = ("label_accuracy", "exact_match")):
        """Domain and general-ability metrics by stage with each stage's change (None if none was measured)."""
        from nbtoolkit.forgetting import forgetting_table

        if not self.general:
            return None
        return forgetting_table(self.stages, self.general, domain_metrics=domain_metrics)

    def general_styler(self):
        table = self.general_table()
        return None if table is None else stage_table_styler(
            table, "Domain and general ability by stage (retention: drift from the base model)")

    def final_table(self):
        """The case study's final table (ROUGE, exact match, F1, BLEU) for these stages (docs/metrics.md)."""
        return self.styler(FINAL_TABLE_METRICS, caption="Final result analysis (the case study's metrics)")

    def confusion_figure(self, *, normalize: bool = False) -> Figure:
        """The stages' confusion matrices side by side (true label rows, predicted columns)."""
        from matplotlib.figure import Figure

        tables = {s: r.confusion for s, r in self.results.items() if r.confusion is not None}
        figure = Figure(figsize=(4.4 * max(1, len(tables)), 3.6), layout="constrained")
        axes = figure.subplots(1, max(1, len(tables)), squeeze=False)[0]
        if not tables:
            axes[0].text(0.5, 0.5, "no label task: no confusion matrix", ha="center", va="center")
            axes[0].set_axis_off()
        for ax, (stage, table) in zip(axes, tables.items()):
            confusion_matrix_figure(table, ax=ax, title=stage, normalize=normalize)
        return figure

    def lengths_figure(self) -> Figure:
        """Reply-length histograms per stage with the generation limit."""
        lengths = {s: r.predictions["reply_tokens"].tolist() for s, r in self.results.items()
                   if "reply_tokens" in r.predictions}
        return response_length_figure(lengths, limit=self.max_new_tokens)

    def per_class(self):
        """Per-class precision, recall, F1 and support, stages side by side (None for free-text tasks)."""
        tables = {s: r.per_class for s, r in self.results.items() if r.per_class is not None}
        return per_class_table(tables) if tables else None

    def per_class_figure(self, metric: str = "f1") -> Figure:
        return per_class_figure({s: r.per_class for s, r in self.results.items() if r.per_class is not None},
                                metric)

    # -- widget -----------------------------------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """Tabs: Metrics, Confusion, Lengths, Per class, Samples (built on first use)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self) -> Any:
        from nbtoolkit.ui.samples import SampleExplorer

        w = widgets()

        per_class = self.per_class()
        counts = [column for column in per_class.columns if column[-1] == "support"]
        per_class_box = w.VBox([w.HTML(per_class.style.format(precision=3).format("{:,.0f}", subset=counts)
                                       .to_html()),
                                figure_image(self.per_class_figure(), "nbt-per-class")]) if per_class is not None else \
            w.HTML("<i>free-text task: no per-class metrics</i>")
        self.explorer = SampleExplorer(self.results)
        metrics = [add_classes(w.HTML(message_html(self.note, "warning")), "nbt-results-note")] if self.note else []
        metrics.append(add_classes(w.HTML(self.styler().to_html()), "nbt-stage-table"))
        if self.general:
            metrics.append(add_classes(w.HTML(self.general_styler().to_html()), "nbt-general-table"))
        tabs = w.Tab(children=[w.VBox(metrics),
                               figure_image(self.confusion_figure(), "nbt-confusion"),
                               figure_image(self.lengths_figure(), "nbt-lengths"), per_class_box, self.explorer.widget],
                     titles=("Metrics", "Confusion", "Lengths", "Per class", "Samples"))
        return add_classes(tabs, "nbt-results-view")

    def fallback_html(self) -> str:
        general = self.general_styler()
        snapshot = ((message_html(self.note, "warning") if self.note else "") + self.styler().to_html()
                    + (general.to_html() if general is not None else "")
                    + png_img(figure_png(self.confusion_figure()), "confusion matrices"))
        return widgets_missing_html("ResultsView", snapshot)

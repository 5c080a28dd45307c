"""SampleExplorer: failure analysis over evaluation predictions (filter, page through, read each sample)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import COLOURS, MUTED, add_classes, frame_html, widgets

ALL = "(all)"
OUTCOMES = ("all", "correct", "wrong")
SUMMARY_COLUMNS = ("row", "reference", "predicted_label", "correct", "reply_tokens", "reply")
MAX_LABELS = 50


def true_labels(predictions: pd.DataFrame) -> pd.Series:
    """The reference of each prediction, stripped (the true label for label tasks)."""
    return predictions["reference"].astype(str).str.strip()


def filter_predictions(predictions: pd.DataFrame, *, true_label: str | None = None,
                       predicted_label: str | None = None, correct: bool | None = None,
                       min_tokens: int | None = None, max_tokens: int | None = None,
                       search: str | None = None) -> pd.DataFrame:
    """The rows of an EvalResult.predictions table matching every given filter (None: no filter).

    search matches case-insensitively in the query, the reply or the reference.
    """
    keep = pd.Series(True, index=predictions.index)
    if true_label is not None:
        keep &= true_labels(predictions) == true_label
    if predicted_label is not None:
        keep &= predictions["predicted_label"].astype(str) == predicted_label
    if correct is not None:
        keep &= predictions["correct"].astype(bool) == correct
    lengths = _lengths(predictions)
    if min_tokens is not None:
        keep &= lengths >= min_tokens
    if max_tokens is not None:
        keep &= lengths <= max_tokens
    if search:
        needle = search.lower()
        text = (predictions["query"].astype(str) + "\n" + predictions["reply"].astype(str) + "\n"
                + predictions["reference"].astype(str)).str.lower()
        keep &= text.str.contains(needle, regex=False)
    return predictions[keep]


def _lengths(predictions: pd.DataFrame) -> pd.Series:
    column = "reply_tokens" if "reply_tokens" in predictions else "reply_chars"
    if column not in predictions:
        return predictions["reply"].astype(str).str.len()
    return pd.to_numeric(predictions[column], errors="coerce").fillna(0).astype(int)


def _text(value: Any) -> str:
    """A sample's text as HTML; a missing or blank one says so instead of showing "NaN" or nothing."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return f"<i style='color:{MUTED}'>(blank)</i>"
    return html.escape(str(value))


def _as_predictions(item: Any) -> pd.DataFrame:
    frame = getattr(item, "predictions", item)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected an EvalResult or a predictions DataFrame, got {type(item).__name__}")
    missing = [c for c in ("query", "reference", "reply", "correct") if c not in frame]
    if missing:
        raise ValueError(f"the predictions table lacks columns {missing} (an EvalResult.predictions has them)")
    return frame


class SampleExplorer(WidgetView):
    """Filter evaluation samples by true label, predicted label, correct/wrong and reply length; read each one.

    `predictions` is an EvalResult, its `.predictions` DataFrame, or a mapping stage -> either (a stage selector
    appears). `prompts` optionally maps a prediction's `row` to the full prompt (the table keeps an excerpt).
    `.matches` is the filtered table. Children: `stage`, `true_label`, `predicted_label`, `outcome`, `length`,
    `search`, `summary`, `samples`, `previous`, `next`, `page`.
    """

    def __init__(self, predictions: Any, *, page_size: int = 5, prompts: Mapping[int, str] | None = None) -> None:
        w = widgets()
        if isinstance(predictions, Mapping):
            self.tables = {str(stage): _as_predictions(item) for stage, item in predictions.items()}
        else:
            self.tables = {"predictions": _as_predictions(predictions)}
        if not self.tables:
            raise ValueError("no predictions to explore")
        self.page_size = page_size
        self.prompts = dict(prompts or {})
        self.matches = pd.DataFrame()
        self._page = 0

        self.stage = w.Dropdown(options=list(self.tables), description="stage")
        self.stage.layout.display = "" if len(self.tables) > 1 else "none"
        self.true_label = w.Dropdown(description="true label")
        self.predicted_label = w.Dropdown(description="predicted")
        self.outcome = w.ToggleButtons(options=OUTCOMES, value="all", style={"button_width": "70px"})
        self.length = w.IntRangeSlider(description="reply length", continuous_update=False)
        self.search = w.Text(description="contains", placeholder="text in query, reply or reference",
                             continuous_update=False)
        self.summary = add_classes(w.HTML(), "nbt-samples-summary")
        self.samples = add_classes(w.HTML(), "nbt-samples")
        self.previous = add_classes(w.Button(description="◀", layout=w.Layout(width="40px")), "nbt-previous")
        self.next = add_classes(w.Button(description="▶", layout=w.Layout(width="40px")), "nbt-next")
        self.page = w.HTML()
        self.widget = add_classes(w.VBox([
            w.HBox([self.stage, self.true_label, self.predicted_label]),
            w.HBox([self.outcome, self.length]), self.search, self.summary,
            w.HBox([self.previous, self.page, self.next]), self.samples,
        ]), "nbt-sample-explorer")

        self.previous.on_click(lambda _: self.show_page(self._page - 1))
        self.next.on_click(lambda _: self.show_page(self._page + 1))
        self.stage.observe(self._on_stage_change, names="value")
        for child in (self.true_label, self.predicted_label, self.outcome, self.length, self.search):
            child.observe(self._on_filter_change, names="value")
        self._on_stage_change()

    @classmethod
    def example(cls, **options: Any) -> SampleExplorer:
        """The bundled example run's predictions (nbtoolkit.examples); every stage name ends in "(example)"."""
        from nbtoolkit.examples import example_results

        return cls(example_results(), **options)

    def __repr__(self) -> str:
        return f"SampleExplorer({', '.join(self.tables)}: {len(self.matches)} matching)"

    @property
    def predictions(self) -> pd.DataFrame:
        return self.tables[self.stage.value]

    @property
    def value(self) -> dict[str, Any]:
        """The current filters, as filter_predictions keywords."""
        low, high = self.length.value
        return {"true_label": None if self.true_label.value == ALL else self.true_label.value,
                "predicted_label": None if self.predicted_label.value == ALL else self.predicted_label.value,
                "correct": {"all": None, "correct": True, "wrong": False}[self.outcome.value],
                "min_tokens": low if low > self.length.min else None,
                "max_tokens": high if high < self.length.max else None,
                "search": self.search.value.strip() or None}

    def _on_stage_change(self, change: Any = None) -> None:
        frame = self.predictions
        with self._hold():
            references = sorted(true_labels(frame).unique())
            # Free-text references are not labels: the dropdown is kept for label tasks only.
            self.true_label.options = [ALL, *references] if len(references) <= MAX_LABELS else [ALL]
            self.true_label.disabled = len(references) > MAX_LABELS
            predicted = frame["predicted_label"].dropna().astype(str).unique() if "predicted_label" in frame else []
            self.predicted_label.options = [ALL, *sorted(predicted)]
            # New options leave an unset Dropdown blank in the browser: "(all)" is chosen explicitly.
            self.true_label.value = self.predicted_label.value = ALL
            self.predicted_label.disabled = len(predicted) == 0
            lengths = _lengths(frame)
            high = int(lengths.max()) if len(lengths) else 0
            self.length.min, self.length.max = 0, max(1, high)
            self.length.value = (0, max(1, high))
        self.apply()

    def _on_filter_change(self, change: Any) -> None:
        self.apply()

    def apply(self) -> pd.DataFrame:
        """Filter with the current widget values and show the first page."""
        if self._held:
            return self.matches
        self.matches = filter_predictions(self.predictions, **self.value)
        frame = self.predictions
        wrong = int((~frame["correct"].astype(bool)).sum())
        self.summary.value = (f"<b>{len(self.matches):,}</b> of {len(frame):,} samples match "
                              f"<span style='color:{MUTED}'>({wrong:,} wrong in this stage)</span>")
        self.show_page(0)
        return self.matches

    def show_page(self, page: int) -> None:
        pages = max(1, -(-len(self.matches) // self.page_size))
        self._page = max(0, min(page, pages - 1))
        self.previous.disabled = self._page == 0
        self.next.disabled = self._page >= pages - 1
        self.page.value = f"&nbsp;page {self._page + 1} of {pages}&nbsp;"
        start = self._page * self.page_size
        rows = self.matches.iloc[start:start + self.page_size]
        self.samples.value = "".join(self._card(row) for _, row in rows.iterrows()) or \
            f"<i style='color:{MUTED}'>no sample matches these filters</i>"

    def _card(self, row: pd.Series) -> str:
        ok = bool(row["correct"])
        colour = COLOURS["ok"] if ok else COLOURS["error"]
        prompt = self.prompts.get(int(row["row"])) if "row" in row and self.prompts else None
        predicted = row.get("predicted_label")
        facts = [f"row {row['row']}" if "row" in row else "",
                 f"predicted <b>{html.escape(str(predicted))}</b>" if predicted is not None else "",
                 f"{int(row['reply_tokens'])} tokens" if "reply_tokens" in row and pd.notna(row["reply_tokens"])
                 else "", "hit max_new_tokens" if bool(row.get("hit_max_new_tokens", False)) else ""]
        return (f"<div class='nbt-sample' style='border-left:4px solid {colour};padding:4px 8px;margin:6px 0'>"
                f"<span style='color:{colour};font-weight:bold'>{'correct' if ok else 'wrong'}</span> "
                f"<span style='color:{MUTED}'>{' · '.join(f for f in facts if f)}</span>"
                f"<div><b>prompt</b><pre style='white-space:pre-wrap;margin:0;max-height:10em;overflow:auto'>"
                f"{_text(prompt if prompt is not None else row['query'])}</pre></div>"
                f"<div><b>reply</b><pre style='white-space:pre-wrap;margin:0'>{_text(row['reply'])}</pre>"
                f"</div><div><b>reference</b> <code>{_text(row['reference'])}</code></div></div>")

    def fallback_html(self) -> str:
        columns = [c for c in SUMMARY_COLUMNS if c in self.matches]
        return widgets_missing_html("SampleExplorer", frame_html(self.matches[columns], max_rows=10))

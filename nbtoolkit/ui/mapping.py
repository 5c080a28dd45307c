"""ColumnMappingForm: map a table's columns to the standard fields, preview the records, validate, save."""

from __future__ import annotations

import html
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.data import ColumnMapping, PrepareConfig, PreparedData, load_table, prepare_dataset
from nbtoolkit.data.mapping import METHOD_KEYS, METHODS, REQUIRED_KEYS
from nbtoolkit.data.sanitize import RESERVED_MODES
from nbtoolkit.data.splits import SPLIT_PRESETS
from nbtoolkit.data.validation import PLATFORMS, RULES, ValidationReport
from nbtoolkit.errors import NbtoolkitError
from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import add_classes, frame_html, message_html, widgets

# The record format previewed and validated for each method (what the service reads).
METHOD_FORMATS = {"sft": "converse", "rft": "rft", "eval": "gen_qa", "cpt": "cpt"}
METHOD_HELP = {"sft": "supervised fine-tuning (question + answer)", "rft": "reinforcement fine-tuning (prompt + "
               "reference answer)", "eval": "evaluation (query + response)", "cpt": "continued pre-training (text)"}
# Datasets up to this size are validated in full on every change; larger ones on "Validate all rows".
LIVE_VALIDATION_ROWS = 2000
PROBLEM_ROWS_SHOWN = 100
NONE = "—"
# Single-column fields get a dropdown; question and text may join more columns after the first.
COLUMN_FIELDS = ("question", "answer", "system", "id", "text")
JOINED_FIELDS = ("question", "text")


def _record_gist(record: dict, fmt: str) -> tuple[str, str]:
    """(prompt, answer) of one record, for the one-line preview."""
    if fmt == "converse":
        texts = [m["content"][0]["text"] for m in record["messages"]]
        return texts[0], texts[-1]
    if fmt == "rft":
        return record["messages"][-1]["content"], record["reference_answer"]
    if fmt == "gen_qa":
        return record["query"], record["response"]
    return record.get("text", ""), ""


def _record_html(row: int, record: dict, fmt: str) -> str:
    prompt, answer = (" ".join(str(part).split()) for part in _record_gist(record, fmt))
    prompt = prompt if len(prompt) <= 90 else prompt[:89] + "…"
    whole = html.escape(json.dumps(record, indent=1, ensure_ascii=False))
    return (f"<details style='margin:2px 0'{' open' if row == 1 else ''}><summary style='cursor:pointer'>"
            f"<b>row {row}</b> <code>{html.escape(prompt)}</code>" + (f" → <b>{html.escape(answer)}</b>" if answer
                                                                      else "")
            + f"</summary><pre style='margin:2px 0 2px 1em;font-size:12px;white-space:pre-wrap;max-height:16em;"
            f"overflow:auto'>{whole}</pre></details>")


class ColumnMappingForm(WidgetView):
    """Pick a file or DataFrame, map its columns, preview the transformed records, validate, and save.

    `.value` is the PrepareConfig the form describes (`.mapping` its ColumnMapping); `.save_prepared()` does what
    the Save button does and returns the PreparedData. Children: `path`, `load`, `method`, `question`,
    `question_more`, `answer`, `system`, `id`, `metadata`, `text`, `text_more`, `system_prompt`, `labels`, `split`,
    `seed`, `reserved`, `platform`, `html_columns`, `preview`, `report`, `validate`, `show_problems`, `problems`,
    `out_dir`, `overwrite`, `save`, `output`, `status`.
    """

    def __init__(self, data: str | os.PathLike | pd.DataFrame | None = None, labels: Any = None,
                 method: str = "sft", *, out_dir: str | os.PathLike = "prepared", split: str | None = "sft-eval-rft",
                 preview_rows: int = 3) -> None:
        w = widgets()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        self.preview_rows = preview_rows
        self.frame: pd.DataFrame | None = None
        self.source = ""
        self.prepared: PreparedData | None = None
        self.report_data: ValidationReport | None = None
        self.inferred_labels: tuple[str, ...] | None = None
        self._validated_for: Any = None
        wide = w.Layout(width="100%")

        self.path = w.Text(placeholder="path or s3://bucket/key (CSV, TSV, JSON, JSONL, Parquet)",
                           description="data", layout=w.Layout(flex="1"))
        self.load = add_classes(w.Button(description="Load", icon="folder-open", tooltip="read the file"), "nbt-load")
        self.source_info = w.HTML()
        self.method = w.ToggleButtons(options=[(m.upper(), m) for m in METHODS], value=method,
                                      tooltips=[METHOD_HELP[m] for m in METHODS], description="method",
                                      style={"button_width": "70px"})
        self.question = w.Dropdown(description="question")
        self.question_more = w.TagsInput(allow_duplicates=False, tooltip="more columns joined after it, in order")
        self.answer = w.Dropdown(description="answer")
        self.system = w.Dropdown(description="system")
        self.id = w.Dropdown(description="id")
        self.metadata = w.TagsInput(allow_duplicates=False, tooltip="columns carried along with each row")
        self.text = w.Dropdown(description="text")
        self.text_more = w.TagsInput(allow_duplicates=False, tooltip="more columns joined after it, in order")
        add_classes(self.question, "nbt-field-question")
        add_classes(self.answer, "nbt-field-answer")
        for name in COLUMN_FIELDS:
            add_classes(getattr(self, name), "nbt-field", f"nbt-field-{name}")
        self.system_prompt = w.Textarea(description="system prompt", placeholder="one system prompt for every row",
                                        layout=w.Layout(width="100%", height="7em"))
        self.labels = w.Text(description="labels", placeholder="comma-separated, e.g. HQ, LQ_EDIT, LQ_CLOSE (empty: "
                             "inferred)", layout=wide)
        self.split = w.Dropdown(options=[(f"{p.name}: {p.description}", p.name) for p in SPLIT_PRESETS.values()]
                                + [("none: one 'all' split", None)], value=split, description="split",
                                layout=wide)
        self.seed = w.IntText(value=0, description="seed")
        self.reserved = w.Dropdown(options=RESERVED_MODES, value="rewrite", description="reserved strings",
                                   tooltip="rewrite ('User:' -> 'User :'), drop the row, or reject")
        self.platform = w.Dropdown(options=PLATFORMS, value="local", description="row bounds",
                                   tooltip="which platform's row-count bounds to check")
        self.html_columns = w.TagsInput(allow_duplicates=False,
                                        tooltip="columns converted from HTML to text (empty: automatic)")
        self.preview = add_classes(w.HTML(), "nbt-preview")
        self.report = add_classes(w.HTML(), "nbt-report")
        self.validate = add_classes(w.Button(description="Validate all rows", icon="check"), "nbt-validate")
        self.show_problems = add_classes(w.ToggleButton(description="Show offending rows", icon="list"),
                                         "nbt-show-problems")
        self.problems = w.HTML()
        self.out_dir = w.Text(value=str(out_dir), description="save to", layout=w.Layout(flex="1"))
        self.overwrite = w.Checkbox(value=False, description="overwrite", indent=False)
        self.save = add_classes(w.Button(description="Save", icon="save", button_style="primary",
                                         tooltip="write the prepared files (every split and format)"), "nbt-save")
        self.output = add_classes(w.Output(), "nbt-output")
        self.status = w.HTML()

        for child in (self.path, self.method, self.question, self.answer, self.system, self.id, self.text,
                      self.system_prompt, self.labels, self.split, self.seed, self.reserved, self.platform,
                      self.out_dir):
            child.style.description_width = "110px"  # one column of labels
        self._rows = {name: w.HBox([getattr(self, name)] + ([getattr(self, f"{name}_more")]
                                                            if name in JOINED_FIELDS else []))
                      for name in COLUMN_FIELDS}
        self._rows["metadata"] = w.HBox([w.Label("metadata", layout=w.Layout(width="114px")), self.metadata])
        options = w.VBox([self.split, w.HBox([self.seed, self.reserved, self.platform]),
                          w.HBox([w.Label("HTML → text"), self.html_columns])])
        accordion = w.Accordion(children=[options], titles=("Options: split, sanitizer, bounds",))
        fields = w.VBox([self._rows[name] for name in (*COLUMN_FIELDS, "metadata")])
        self.widget = add_classes(w.VBox([
            w.HTML("<b>Column mapping</b>"), w.HBox([self.path, self.load]), self.source_info, self.method,
            fields, self.system_prompt, self.labels, accordion, self.status,
            w.HTML("<b>Preview</b> (the first rows as they will be written)"), self.preview,
            w.HTML("<b>Validation</b>"), self.report, w.HBox([self.validate, self.show_problems]), self.problems,
            w.HBox([self.out_dir, self.overwrite, self.save]), self.output,
        ], layout=wide), "nbt-mapping-form")

        self.load.on_click(lambda _: self._guard(lambda: self.load_data(self.path.value.strip())))
        self.validate.on_click(lambda _: self._guard(self.validate_all))
        self.save.on_click(self._on_save_click)
        self.show_problems.observe(self._on_show_problems_change, names="value")
        self.method.observe(self._on_method_change, names="value")
        for child in (self.question, self.question_more, self.answer, self.system, self.id, self.metadata, self.text,
                      self.text_more, self.system_prompt, self.labels, self.split, self.seed, self.reserved,
                      self.platform, self.html_columns):
            child.observe(self._on_field_change, names="value")

        if labels is not None:
            self.labels.value = ", ".join(labels) if not isinstance(labels, str) else labels
        self._show_method_fields()
        if data is not None:
            self.load_data(data)
        else:
            self.preview.value = message_html("load a file or pass a DataFrame to see the preview")

    def __repr__(self) -> str:
        return f"ColumnMappingForm({self.source or 'no data'}, method={self.method.value!r})"

    # -- data -------------------------------------------------------------------------------------------------

    def load_data(self, data: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
        """Read a file or take a DataFrame, fill the column dropdowns and suggest a mapping."""
        if isinstance(data, (str, os.PathLike)) and not str(data).strip():
            raise NbtoolkitError("type a file path (or an s3:// URI) first")
        frame = load_table(data)
        self.frame = frame
        self.source = str(frame.attrs.get("source", "DataFrame"))
        if not isinstance(data, pd.DataFrame):
            self.path.value = str(data)
        columns = [str(c) for c in frame.columns]
        with self._hold():
            for name in COLUMN_FIELDS:
                getattr(self, name).options = [(NONE, None)] + [(c, c) for c in columns]
                getattr(self, name).value = None
            for tags in (self.question_more, self.text_more, self.metadata, self.html_columns):
                tags.allowed_tags = columns
                tags.value = []
            self._set_mapping(self._suggested_mapping())
        from nbtoolkit.data import detect_schema

        schema = detect_schema(frame)
        self.source_info.value = (f"<span style='color:#57606a'>{html.escape(self.source)} · {len(frame):,} rows · "
                                  f"{len(columns)} columns" + (f" · schema <b>{html.escape(schema)}</b>"
                                                               if schema else "") + "</span>")
        self.refresh()
        return frame

    def _suggested_mapping(self) -> ColumnMapping | None:
        """The mapping prepare_dataset would use (known schema, identity, task system prompt), or None."""
        try:
            head = self.frame.head(self.preview_rows)
            return prepare_dataset(head, PrepareConfig(split=None)).mapping
        except (NbtoolkitError, ValueError):
            return None

    # -- value ------------------------------------------------------------------------------------------------

    @property
    def mapping(self) -> ColumnMapping:
        """The ColumnMapping of the fields the selected method uses (ValueError when it is not valid)."""
        used = set(METHOD_KEYS[self.method.value].values())
        kwargs: dict[str, Any] = {}
        for name in ("question", "text"):
            if name in used and getattr(self, name).value:
                kwargs[name] = (getattr(self, name).value, *getattr(self, f"{name}_more").value)
        for name in ("answer", "system", "id"):
            if name in used and getattr(self, name).value:
                kwargs[name] = getattr(self, name).value
        if "metadata" in used and self.metadata.value:
            kwargs["metadata"] = tuple(self.metadata.value)
        prompt = self.system_prompt.value.strip()
        if "system" in used and prompt and not kwargs.get("system"):
            kwargs["system_prompt"] = self.system_prompt.value
        return ColumnMapping(**kwargs)

    @property
    def value(self) -> PrepareConfig:
        """The PrepareConfig this form describes (ValueError when it is not valid)."""
        labels = tuple(label.strip() for label in self.labels.value.split(",") if label.strip()) or None
        return PrepareConfig(mapping=self.mapping, labels=labels, split=self.split.value, seed=self.seed.value,
                             reserved=self.reserved.value, platform=self.platform.value,
                             html_columns=tuple(self.html_columns.value) or None)

    @value.setter
    def value(self, config: PrepareConfig) -> None:
        with self._hold():
            if config.mapping is not None:
                self._set_mapping(config.mapping)
            self.labels.value = ", ".join(config.labels) if config.labels else ""
            self.split.value = config.split
            self.seed.value = config.seed
            self.reserved.value = config.reserved
            self.platform.value = config.platform
            self.html_columns.value = list(config.html_columns or ())
        self.refresh()

    def _set_mapping(self, mapping: ColumnMapping | None) -> None:
        if mapping is None:
            return
        available = {value for _, value in self.question.options}
        missing = [c for c in mapping.input_columns() if c not in available]
        if missing:
            raise NbtoolkitError(f"the mapping names columns the data does not have: {missing}")
        with self._hold():
            for name in JOINED_FIELDS:
                columns = getattr(mapping, name)
                getattr(self, name).value = columns[0] if columns else None
                getattr(self, f"{name}_more").value = list(columns[1:])
            self.answer.value = mapping.answer[0] if mapping.answer else None
            self.system.value = mapping.system
            self.id.value = mapping.id
            self.metadata.value = list(mapping.metadata)
            if mapping.system_prompt is not None:
                self.system_prompt.value = mapping.system_prompt

    # -- preview and validation -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the preview, and the full validation report when the data is small enough."""
        if self._held or self.frame is None:
            return
        self.system_prompt.disabled = bool(self.system.value)
        try:
            config = self.value
            config.mapping.check(self.frame, self.method.value, source=self.source)
            fmt = self._format()
            head = prepare_dataset(self.frame.head(self.preview_rows), replace(config, split=None, platform="local"))
        except (NbtoolkitError, ValueError) as error:
            self.status.value = message_html(str(error), "error")
            self.preview.value = ""
            self._set_report(None)
            return
        self.status.value = (message_html("the system column is used; the prompt box is ignored")
                             if self.system.value else "")
        records = head.records("all", fmt)
        self.preview.value = (f"<div style='color:#57606a'>{fmt} records, rows 1-{len(records)} of "
                              f"{len(self.frame):,} (click a row for the whole record)</div>"
                              + "".join(_record_html(i, r, fmt) for i, r in enumerate(records, 1)))
        if len(self.frame) <= LIVE_VALIDATION_ROWS:
            self.validate_all()
        else:
            self._set_report(None, stale=True)

    def _format(self) -> str:
        return METHOD_FORMATS[self.method.value]

    def validate_all(self) -> ValidationReport:
        """Validate every row in the method's format (no split); shows counts per rule."""
        if self.frame is None:
            raise NbtoolkitError("load data first")
        config = self.value
        prepared = prepare_dataset(self.frame, replace(config, split=None))
        report = prepared.reports[f"all/{self._format()}"]
        self.inferred_labels = prepared.labels
        self._set_report(report, sanitize=prepared.sanitize.summary())
        return report

    def _set_report(self, report: ValidationReport | None, *, stale: bool = False,
                    sanitize: dict | None = None) -> None:
        self.report_data = report
        if report is None:
            self.report.value = message_html(
                f"{len(self.frame):,} rows: click 'Validate all rows' to check them all" if stale and self.frame
                is not None else "no report (fix the mapping first)")
            self.problems.value = ""
            return
        kind = "ok" if report.ok else "error"
        head = (f"{report.fmt}: {report.n_rows:,} rows, {len(report.errors)} errors, {len(report.warnings)} "
                f"warnings" + (" — OK" if report.ok else " — FAILED"))
        parts = [message_html(head, kind)]
        if self.inferred_labels and not self.labels.value.strip():
            parts.append(message_html("labels (inferred): " + ", ".join(self.inferred_labels)))
        if sanitize and (sanitize["changes"] or sanitize["rows_dropped"]):
            changes = ", ".join(f"{rule} {count}" for rule, count in sanitize["changes"].items())
            parts.append(message_html(f"sanitizer: {changes} on {sanitize['rows_changed']} rows, "
                                      f"{sanitize['rows_dropped']} rows dropped"))
        if report.problems:
            frame = report.to_frame()
            counts = frame.groupby(["rule", "severity"]).size().unstack(fill_value=0)
            counts.insert(0, "what it checks", [RULES.get(rule, "") for rule in counts.index])
            parts.append(frame_html(counts))
        self.report.value = "".join(parts)
        self._on_show_problems_change()

    def _on_show_problems_change(self, change: Any = None) -> None:
        report = self.report_data
        if not self.show_problems.value or report is None:
            self.problems.value = ""
            return
        if not report.problems:
            self.problems.value = message_html("no offending rows", "ok")
            return
        self.problems.value = frame_html(report.to_frame(), max_rows=PROBLEM_ROWS_SHOWN)

    # -- events -----------------------------------------------------------------------------------------------

    def _show_method_fields(self) -> None:
        method = self.method.value
        keys = METHOD_KEYS[method]
        by_attribute = {attribute: key for key, attribute in keys.items()}
        for name, row in self._rows.items():
            row.layout.display = "" if name in by_attribute else "none"
            if name in COLUMN_FIELDS:
                key = by_attribute.get(name, name)
                dropdown = getattr(self, name)
                dropdown.description = key
                required = key in REQUIRED_KEYS[method]
                help_text = ColumnMapping.__dataclass_fields__[name].metadata["help"]
                dropdown.tooltip = f"{help_text}{' (required)' if required else ''}"
        uses_prompt = method != "cpt"
        self.system_prompt.layout.display = "" if uses_prompt else "none"
        self.labels.layout.display = "" if uses_prompt else "none"

    def _on_method_change(self, change: Any) -> None:
        self._show_method_fields()
        self.refresh()

    def _on_field_change(self, change: Any) -> None:
        self.refresh()

    def _on_save_click(self, button: Any) -> None:
        from IPython.display import HTML

        self.output.clear_output()
        try:
            prepared = self.save_prepared()
        except (NbtoolkitError, ValueError, OSError) as error:
            self.output.append_display_data(HTML(message_html(str(error), "error")))
            return
        self.output.append_display_data(HTML(message_html(f"saved to {prepared.out_dir}", "ok" if prepared.ok
                                                          else "warning")))
        self.output.append_stdout(prepared.summary() + "\n")

    def _guard(self, action) -> None:
        try:
            action()
        except (NbtoolkitError, ValueError, OSError) as error:
            self.status.value = message_html(str(error), "error")

    # -- saving -----------------------------------------------------------------------------------------------

    def save_prepared(self, out_dir: str | os.PathLike | None = None, *, overwrite: bool | None = None
                      ) -> PreparedData:
        """Write the prepared files (what Save does) and return the PreparedData."""
        if self.frame is None:
            raise NbtoolkitError("load data first")
        target = Path(out_dir if out_dir is not None else self.out_dir.value.strip() or "prepared")
        self.prepared = prepare_dataset(self.frame, self.value, out_dir=target,
                                        overwrite=self.overwrite.value if overwrite is None else overwrite)
        return self.prepared

    def fallback_html(self) -> str:
        snapshot = ""
        try:
            snapshot = f"<pre>{html.escape(self.value.mapping.to_json())}</pre>" if self.frame is not None else ""
        except (ValueError, NbtoolkitError):
            pass
        return widgets_missing_html("ColumnMappingForm", snapshot)

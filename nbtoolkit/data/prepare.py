"""Prepare a dataset end to end: load, map, sanitize, split, transform, validate, write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.data.formats import FORMATS, standard_rows, transform, write_jsonl
from nbtoolkit.data.loaders import KNOWN_SCHEMAS, detect_schema, load_table
from nbtoolkit.data.mapping import ColumnMapping, infer_mapping
from nbtoolkit.data.rows import number_rows, row_numbers
from nbtoolkit.data.sanitize import RESERVED_MODES, SanitizeResult, sanitize_frame
from nbtoolkit.data.splits import SPLIT_PRESETS, label_distribution, split_with_preset
from nbtoolkit.data.tasks import TASKS
from nbtoolkit.data.validation import PLATFORMS, ValidationReport, validate_records
from nbtoolkit.errors import DataError, unknown_name_message

# Formats written for each split; other split names get every format.
SPLIT_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("converse", "chat"),
    "eval": ("gen_qa", "chat"),
    "validation": ("gen_qa", "chat"),
    "rft": ("rft", "chat"),
    "all": ("converse", "rft", "gen_qa", "chat"),
}
MAX_INFERRED_LABELS = 50


@dataclass(frozen=True)
class PrepareConfig:
    """How to turn one raw table into training and evaluation files."""

    mapping: ColumnMapping | None = field(default=None, metadata={
        "help": "column mapping; None: identity when names match, else the known schema's suggestion"})
    labels: tuple[str, ...] | None = field(default=None, metadata={
        "help": "declared label set; None: inferred when the answers look categorical"})
    split: str | None = field(default="sft-eval-rft", metadata={
        "help": "split preset name, or None for one 'all' split"})
    seed: int = field(default=0, metadata={"help": "seed for the split"})
    scale_to_fit: bool = field(default=True, metadata={"help": "shrink the preset's sizes to fit a smaller dataset"})
    reserved: str = field(default="rewrite", metadata={"help": "reserved strings: rewrite, drop or reject"})
    html_columns: tuple[str, ...] | None = field(default=None, metadata={
        "help": "columns converted from HTML to text; None: Body for the Kaggle Stack Overflow schema"})
    platform: str = field(default="local", metadata={"help": "row-count bounds to check: local, sagemaker, bedrock"})
    cpt: bool = field(default=False, metadata={"help": "also write CPT text files"})

    def __post_init__(self) -> None:
        if self.reserved not in RESERVED_MODES:
            raise ValueError(unknown_name_message("reserved mode", self.reserved, RESERVED_MODES))
        if self.platform not in PLATFORMS:
            raise ValueError(unknown_name_message("platform", self.platform, PLATFORMS))
        if self.split is not None and self.split not in SPLIT_PRESETS:
            raise ValueError(unknown_name_message("split preset", self.split, SPLIT_PRESETS))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
            if not self.labels or any(not str(label).strip() for label in self.labels):
                raise ValueError(f"labels must be non-empty names, got {list(self.labels)}")
        if self.html_columns is not None:
            object.__setattr__(self, "html_columns", tuple(self.html_columns))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mapping"] = self.mapping.to_dict() if self.mapping else None
        return data


@dataclass
class PreparedData:
    """Everything `prepare_dataset` produced, in memory and (when written) on disk."""

    source: str
    schema: str | None
    mapping: ColumnMapping
    labels: tuple[str, ...] | None
    config: PrepareConfig
    splits: dict[str, pd.DataFrame]
    reports: dict[str, ValidationReport]
    sanitize: SanitizeResult
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports.values())

    def records(self, split: str, fmt: str) -> list[dict]:
        return transform(self.splits[split], fmt)

    def label_table(self) -> pd.DataFrame | None:
        return label_distribution(self.splits, "answer") if self.labels else None

    def summary(self) -> str:
        keys = self.mapping.method_keys("sft")
        if len(keys.get("system_prompt", "")) > 60:
            keys["system_prompt"] = keys["system_prompt"][:57] + "..."
        lines = [f"source: {self.source}" + (f" (schema: {self.schema})" if self.schema else ""),
                 f"mapping: {json.dumps(keys)}"]
        lines.append("rows per split: " + ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items()))
        table = self.label_table()
        if table is not None:
            lines.append("labels:\n" + table.to_string())
        sanitized = self.sanitize.summary()
        if sanitized["changes"] or sanitized["rows_dropped"]:
            lines.append(f"sanitizer: {sanitized['changes']} on {sanitized['rows_changed']} rows, "
                         f"{sanitized['rows_dropped']} rows dropped")
        for name, report in self.reports.items():
            if report.problems:
                lines.append(report.summary(limit=3, title=name))
        n_errors = sum(len(r.errors) for r in self.reports.values())
        n_warnings = sum(len(r.warnings) for r in self.reports.values())
        lines.append(f"validation: {'OK' if self.ok else 'FAILED'} ({n_errors} errors, {n_warnings} warnings)")
        if self.out_dir:
            lines.append(f"written to: {self.out_dir}")
        return "\n".join(lines)


def suggested_mapping(frame: pd.DataFrame, schema: str | None) -> ColumnMapping:
    """The known schema's mapping, else identity when the column names already match."""
    if schema in KNOWN_SCHEMAS and KNOWN_SCHEMAS[schema].get("mapping"):
        return ColumnMapping.from_dict(KNOWN_SCHEMAS[schema]["mapping"])
    try:
        return infer_mapping(frame, "sft")
    except DataError:
        return infer_mapping(frame, "cpt")


def infer_labels(answers: pd.Series) -> tuple[str, ...] | None:
    """The label set when answers look categorical (few distinct values, each repeated), else None."""
    values = answers.dropna().astype(str).str.strip()
    counts = values.value_counts()
    if len(counts) == 0 or len(counts) > MAX_INFERRED_LABELS or len(counts) > len(values) / 2:
        return None
    return tuple(sorted(counts.index))


def _task_for(schema: str | None) -> str | None:
    return "stackoverflow-quality" if schema and schema.startswith(("kaggle-stackoverflow",
                                                                    "stackoverflow")) else None


def prepare_dataset(
    data: str | os.PathLike | pd.DataFrame,
    config: PrepareConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> PreparedData:
    """Load `data`, apply `config` and return the prepared splits with their validation reports.

    With `out_dir`, writes `<split>/<format>.jsonl`, `validation.json`, `sanitize.json` and `manifest.json`
    atomically: the directory appears complete or not at all. The input is never modified.
    """
    config = config or PrepareConfig()
    frame = load_table(data)
    source = str(frame.attrs.get("source", "DataFrame"))
    schema = detect_schema(frame)
    mapping = config.mapping or suggested_mapping(frame, schema)
    task = TASKS.get(_task_for(schema) or "")
    if task and not (mapping.system or mapping.system_prompt):
        mapping = ColumnMapping(**{**mapping.to_dict(), "system_prompt": task.system_prompt})
    method = "sft" if mapping.answer else "cpt"
    mapping.check(frame, method, source=source)

    frame = number_rows(frame)
    frame.attrs["source"] = source
    html_columns = config.html_columns if config.html_columns is not None else (
        ("Body",) if schema == "kaggle-stackoverflow" else ())
    for column in html_columns:
        if column not in frame.columns:
            raise DataError(unknown_name_message("column", column, list(frame.columns)), source=source)
    text_columns = [c for c in mapping.input_columns() if c not in mapping.metadata and c != mapping.id]
    cleaned = sanitize_frame(frame, text_columns, html_columns=html_columns, reserved=config.reserved)
    rows = standard_rows(cleaned.frame, mapping, method)

    labels = config.labels
    if labels is None and method == "sft":
        labels = infer_labels(rows["answer"])
        if task and (labels is None or set(labels) == set(task.labels)):
            labels = task.labels  # the task's own order, e.g. HQ, LQ_EDIT, LQ_CLOSE
    if config.split:
        parts = split_with_preset(rows, config.split, label_column="answer" if labels else None,
                                  seed=config.seed, scale_to_fit=config.scale_to_fit)
    else:
        parts = {"all": rows}

    reports: dict[str, ValidationReport] = {}
    for split, part in parts.items():
        formats = ("cpt",) if method == "cpt" else SPLIT_FORMATS.get(split, SPLIT_FORMATS["all"])
        if config.cpt and "cpt" not in formats:
            formats = (*formats, "cpt")
        for fmt in formats:
            reports[f"{split}/{fmt}"] = validate_records(
                transform(part, fmt), fmt, rows=row_numbers(part), labels=labels, platform=config.platform)

    prepared = PreparedData(source, schema, mapping, labels, config, parts, reports, cleaned)
    if out_dir is not None:
        write_prepared(prepared, out_dir, overwrite=overwrite)
    return prepared


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_prepared(prepared: PreparedData, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write every split and format plus reports into `out_dir` (built in a temp dir, then moved in place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"output directory {out_dir} is not empty; choose another or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        files: dict[str, str] = {}
        manifest_files = {}
        for key, report in prepared.reports.items():
            split, fmt = key.split("/")
            path = write_jsonl(prepared.records(split, fmt), staging / split / f"{fmt}.jsonl")
            files[key] = str(out_dir / split / f"{fmt}.jsonl")
            manifest_files[key] = {"path": f"{split}/{fmt}.jsonl", "rows": report.n_rows,
                                   "format": fmt, "serves": FORMATS[fmt][0], "sha256": _sha256(path)}
        validation = {key: report.to_dict() for key, report in prepared.reports.items()}
        (staging / "validation.json").write_text(json.dumps(validation, indent=2, ensure_ascii=False))
        sanitize = {"summary": prepared.sanitize.summary(),
                    "changes": [c.to_dict() for c in prepared.sanitize.changes],
                    "dropped_rows": prepared.sanitize.dropped_rows}
        (staging / "sanitize.json").write_text(json.dumps(sanitize, indent=2, ensure_ascii=False))
        table = prepared.label_table()
        manifest = {
            "source": prepared.source, "schema": prepared.schema, "config": prepared.config.to_dict(),
            "mapping": prepared.mapping.to_dict(), "labels": list(prepared.labels) if prepared.labels else None,
            "splits": {k: len(v) for k, v in prepared.splits.items()},
            "label_distribution": table.to_dict() if table is not None else None,
            "files": manifest_files, "ok": prepared.ok,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prepared.out_dir = out_dir
    prepared.files = files
    return out_dir

"""Prepare a dataset end to end: load, map, sanitize, split, transform, validate, write."""

from __future__ import annotations

import codecs
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
from nbtoolkit.data.sanitize import (
    RESERVED_MODES,
    SanitizeResult,
    find_control_characters,
    remove_control_characters,
    sanitize_frame,
    strip_text,
)
from nbtoolkit.data.splits import SPLIT_PRESETS, label_distribution, split_with_preset
from nbtoolkit.data.tasks import TASKS
from nbtoolkit.data.validation import PLATFORMS, ValidationReport, closest_label, label_key, validate_records
from nbtoolkit.errors import ConfigError, DataError, file_error, unknown_name_message

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
    split: str | None = field(default="holdout", metadata={
        "help": "split preset name (holdout: sft, validation for choices, unseen rft prompts, eval), or None for one "
                "'all' split"})
    seed: int = field(default=0, metadata={"help": "seed for the split"})
    scale_to_fit: bool = field(default=True, metadata={"help": "shrink the preset's sizes to fit a smaller dataset"})
    reserved: str = field(default="rewrite", metadata={"help": "reserved strings: rewrite, drop or reject"})
    html_columns: tuple[str, ...] | None = field(default=None, metadata={
        "help": "columns converted from HTML to text; None: Body for the Kaggle Stack Overflow schema"})
    platform: str = field(default="local", metadata={"help": "row-count bounds to check: local, sagemaker, bedrock"})
    cpt: bool = field(default=False, metadata={"help": "also write CPT text files"})
    encoding: str | None = field(default=None, metadata={
        "help": "text encoding of the input file, e.g. cp1252 for Excel on Windows; None: UTF-8 (or UTF-16 with a BOM)"})

    def __post_init__(self) -> None:
        if isinstance(self.mapping, dict):
            try:
                object.__setattr__(self, "mapping", ColumnMapping.from_dict(self.mapping))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"mapping: {error}") from None
        if self.mapping is not None and not isinstance(self.mapping, ColumnMapping):
            raise ConfigError(f"mapping must be a ColumnMapping (or a dict of its fields) or None, got "
                              f"{type(self.mapping).__name__}")
        if self.reserved not in RESERVED_MODES:
            raise ConfigError(unknown_name_message("reserved mode", str(self.reserved), RESERVED_MODES))
        if self.platform not in PLATFORMS:
            raise ConfigError(unknown_name_message("platform", str(self.platform), PLATFORMS))
        if self.split is not None and self.split not in SPLIT_PRESETS:
            raise ConfigError(unknown_name_message("split preset", str(self.split), SPLIT_PRESETS))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ConfigError(f"seed must be a whole number from 0 to 2**64 - 1, got {self.seed!r}")
        for name in ("scale_to_fit", "cpt"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.labels is not None:
            object.__setattr__(self, "labels", _label_names(self.labels))
        if self.html_columns is not None:
            columns = (self.html_columns,) if isinstance(self.html_columns, str) else self.html_columns
            if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
                raise ConfigError(f"html_columns must be column names, got {self.html_columns!r}")
            object.__setattr__(self, "html_columns", tuple(columns))
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except (LookupError, TypeError):
                raise ConfigError(f"unknown encoding {self.encoding!r}; e.g. 'utf-8', 'cp1252' or 'latin-1'") from None

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
    labels_inferred: bool = False
    label_findings: list[LabelFinding] = field(default_factory=list)

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
            kind = "inferred labels (from the answers; declare them with labels= / --labels)" \
                if self.labels_inferred else "labels"
            lines.append(f"{kind}:\n" + table.to_string())
        if self.label_findings:
            what = "not in the inferred labels" if self.labels_inferred else "not in the declared labels"
            lines.append(f"answers {what} (fix them, or declare the labels you mean):")
            lines.extend(f"  {finding}" for finding in self.label_findings[:10])
            if len(self.label_findings) > 10:
                lines.append(f"  ... {len(self.label_findings) - 10} more")
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


def _label_names(labels: Any) -> tuple[str, ...]:
    """Declared labels as stripped names; a bare string is refused rather than split into characters."""
    if isinstance(labels, str):
        raise ConfigError(f"labels takes a list of names, e.g. labels=({labels!r},) or ('yes', 'no'); got the "
                          f"string {labels!r}")
    if not isinstance(labels, (list, tuple, set, frozenset)):
        raise ConfigError(f"labels must be a list of names or None, got {type(labels).__name__}")
    names = tuple(strip_text(label) if isinstance(label, str) else label for label in labels)
    if not names or any(not isinstance(name, str) or not name for name in names):
        raise ConfigError(f"labels must be non-empty names, got {list(labels)}")
    if any(find_control_characters(name) for name in names):
        raise ConfigError(f"labels must not hold control characters, got {[ascii(n) for n in names]}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"labels are repeated: {duplicates}")
    return names


def suggested_mapping(frame: pd.DataFrame, schema: str | None) -> ColumnMapping:
    """The known schema's mapping, else identity or common names (text/label, ...), else CPT for a lone text.

    A table that fits none of these is an error that says how to map it, never a silent pre-training set that
    drops the other columns.
    """
    if schema in KNOWN_SCHEMAS and KNOWN_SCHEMAS[schema].get("mapping"):
        return ColumnMapping.from_dict(KNOWN_SCHEMAS[schema]["mapping"])
    try:
        return infer_mapping(frame, "sft")
    except DataError as sft_error:
        columns = [str(c) for c in frame.columns]
        if "text" in columns and len(columns) == 1:
            return infer_mapping(frame, "cpt")
        shown = ", ".join(map(repr, columns))
        raise DataError(
            f"cannot tell which of the columns {shown} hold the question and the answer ({sft_error.message}); "
            "pass mapping=ColumnMapping(question=..., answer=...) (command line: --question/--answer), or "
            "ColumnMapping(text=...) for pre-training text", source=frame.attrs.get("source")) from None


@dataclass(frozen=True)
class LabelFinding:
    """An answer value kept out of an inferred label set (or outside the declared one), with its count."""

    value: str
    count: int
    reason: str
    closest: str | None = None

    def __str__(self) -> str:
        closest = f"; closest label: {self.closest!r}" if self.closest else ""
        return f"{self.value!r} x{self.count}: {self.reason}{closest}"


def inspect_labels(answers: pd.Series, declared: tuple[str, ...] | None = None
                   ) -> tuple[tuple[str, ...] | None, list[LabelFinding]]:
    """(labels, findings): the declared labels, or those inferred from categorical answers, and the values
    that do not belong: variants (case, spacing, punctuation), control characters, typos, truncations and
    values far rarer than the rest. Stray values become findings, never classes of their own."""
    values = answers.dropna().astype(str).map(strip_text)
    counts = values.value_counts()
    if declared is not None:
        findings = [LabelFinding(v, int(n), "not a declared label", closest_label(v, declared))
                    for v, n in counts.items() if v not in declared]
        return declared, findings
    findings: list[LabelFinding] = []
    kept: dict[str, int] = {}
    if len(counts) == 0 or len(counts) > 2 * MAX_INFERRED_LABELS:
        return None, []  # free text, not labels (and no pairwise comparison of thousands of answers)
    typical = int(counts.median())
    for value, count in counts.items():  # most frequent first: a variant is judged against the main spelling
        count = int(count)
        closest = closest_label(value, kept) if kept else None
        if find_control_characters(value):
            reason = "holds control characters"
            closest = closest_label(remove_control_characters(value), kept) if kept else None
        elif closest and label_key(closest) == label_key(value):
            reason = "a variant (case, spacing or punctuation)"
        elif closest and count * 5 <= kept[closest]:
            reason = "a rare value close to a frequent one (typo or truncated row?)"
        elif count == 1 and typical >= 5:
            reason = f"appears once; the typical label appears {typical} times"
        else:
            kept[value] = count
            continue
        findings.append(LabelFinding(value, count, reason, closest))
    n_kept = sum(kept.values())
    if not kept or len(kept) > MAX_INFERRED_LABELS or len(kept) > n_kept / 2:
        return None, []
    return tuple(sorted(kept)), findings


def infer_labels(answers: pd.Series) -> tuple[str, ...] | None:
    """The label set when answers look categorical (few distinct values, each repeated), else None.

    Stray values (variants, typos, rare values: see `inspect_labels`) are left out, not made classes.
    """
    return inspect_labels(answers)[0]


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
    if out_dir is not None:  # before reading anything: a bad output folder should not cost a long load
        inputs = (data,) if isinstance(data, (str, os.PathLike)) else ()
        check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)
    frame = load_table(data, encoding=config.encoding)
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
    cleaned = sanitize_frame(frame, text_columns, html_columns=html_columns, reserved=config.reserved,
                             control_columns=mapping.input_columns())
    rows = standard_rows(cleaned.frame, mapping, method)

    labels, findings = config.labels, []
    if method == "sft":
        labels, findings = inspect_labels(rows["answer"], config.labels)
        if config.labels is None and task and (labels is None or set(labels) == set(task.labels)):
            # the task's own order, e.g. HQ, LQ_EDIT, LQ_CLOSE
            labels, findings = inspect_labels(rows["answer"], task.labels)
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

    prepared = PreparedData(source, schema, mapping, labels, config, parts, reports, cleaned,
                            labels_inferred=labels is not None and config.labels is None, label_findings=findings)
    if out_dir is not None:
        write_prepared(prepared, out_dir, overwrite=overwrite)
    return prepared


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False,
                     inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse, before anything is read or written, an output that would fail or destroy data.

    `out_dir` must be a folder (or not exist yet) and empty unless `overwrite`; with `overwrite`, none of
    `inputs` may lie inside it, because replacing the folder would delete them.
    """
    out_dir = Path(out_dir).expanduser()
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise DataError("is a file, not a folder; choose a folder for the prepared data", source=str(out_dir))
        parent = next((p for p in out_dir.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise DataError(f"cannot be created: {parent} is a file, not a folder", source=str(out_dir))
        if out_dir.is_dir() and any(out_dir.iterdir()):
            if not overwrite:
                raise DataError("is not empty; choose another folder or pass overwrite=True (--overwrite)",
                                source=str(out_dir))
            resolved = out_dir.resolve()
            for item in inputs:
                text = os.fspath(item)
                if "://" in text:
                    continue
                path = Path(text).expanduser().resolve()
                if path == resolved or resolved in path.parents:
                    raise DataError(f"holds the input {text}, and overwriting would delete it; choose another "
                                    "output folder", source=str(out_dir))
    except OSError as error:
        raise file_error(error, "use it as the output folder", out_dir) from None
    return out_dir


def write_prepared(prepared: PreparedData, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write every split and format plus reports into `out_dir`: built in a temp folder beside it, then
    swapped in, so a failure leaves the previous contents (and an input inside it) untouched."""
    sources = () if prepared.source == "DataFrame" else (prepared.source,)
    out_dir = check_output_dir(out_dir, overwrite=overwrite, inputs=sources)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    except OSError as error:
        raise file_error(error, "write the prepared data", out_dir) from None
    try:
        files = _write_into(prepared, staging, out_dir)
        if out_dir.exists():
            # Rename, not delete, first: the old folder is only removed once the new one is in place.
            previous = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, previous / out_dir.name)
            os.replace(staging, out_dir)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise file_error(error, "write the prepared data", out_dir) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prepared.out_dir = out_dir
    prepared.files = files
    return out_dir


def _write_into(prepared: PreparedData, staging: Path, out_dir: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    manifest_files = {}
    for key, report in prepared.reports.items():
        split, fmt = key.split("/")
        path = write_jsonl(prepared.records(split, fmt), staging / split / f"{fmt}.jsonl")
        files[key] = str(out_dir / split / f"{fmt}.jsonl")
        manifest_files[key] = {"path": f"{split}/{fmt}.jsonl", "rows": report.n_rows,
                               "format": fmt, "serves": FORMATS[fmt][0], "sha256": _sha256(path)}
    validation = {key: report.to_dict() for key, report in prepared.reports.items()}
    (staging / "validation.json").write_text(json.dumps(validation, indent=2, ensure_ascii=False), encoding="utf-8")
    sanitize = {"summary": prepared.sanitize.summary(),
                "changes": [c.to_dict() for c in prepared.sanitize.changes],
                "dropped_rows": prepared.sanitize.dropped_rows}
    (staging / "sanitize.json").write_text(json.dumps(sanitize, indent=2, ensure_ascii=False), encoding="utf-8")
    table = prepared.label_table()
    manifest = {
        "source": prepared.source, "schema": prepared.schema, "config": prepared.config.to_dict(),
        "mapping": prepared.mapping.to_dict(), "labels": list(prepared.labels) if prepared.labels else None,
        "labels_inferred": prepared.labels_inferred,
        "splits": {k: len(v) for k, v in prepared.splits.items()},
        "label_distribution": table.to_dict() if table is not None else None,
        "files": manifest_files, "ok": prepared.ok,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return files

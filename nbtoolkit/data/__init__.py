"""Data preparation: load, map columns, sanitize, transform, validate, split (pure pandas, no widgets)."""

from nbtoolkit.data.formats import FORMATS, read_jsonl, standard_rows, transform, write_jsonl
from nbtoolkit.data.loaders import KNOWN_SCHEMAS, as_text_column, detect_schema, load_table, require_columns
from nbtoolkit.data.mapping import ColumnMapping, infer_mapping
from nbtoolkit.data.prepare import PrepareConfig, PreparedData, prepare_dataset, write_prepared
from nbtoolkit.data.sanitize import RESERVED_STRINGS, html_to_text, rewrite_reserved, sanitize_frame
from nbtoolkit.data.splits import SPLIT_PRESETS, SplitPreset, label_distribution, split_frame, split_with_preset
from nbtoolkit.data.synthetic import SYNTHETIC_NOTE, make_stackoverflow_dataset, write_stackoverflow_csv
from nbtoolkit.data.tasks import STACKOVERFLOW_SYSTEM_PROMPT, TASKS, TaskPreset
from nbtoolkit.data.validation import Problem, ValidationReport, validate_records

__all__ = [
    "FORMATS", "KNOWN_SCHEMAS", "RESERVED_STRINGS", "SPLIT_PRESETS", "STACKOVERFLOW_SYSTEM_PROMPT",
    "SYNTHETIC_NOTE", "TASKS", "ColumnMapping", "PrepareConfig", "PreparedData", "Problem", "SplitPreset",
    "TaskPreset", "ValidationReport", "as_text_column", "detect_schema", "html_to_text", "infer_mapping",
    "label_distribution", "load_table", "make_stackoverflow_dataset", "prepare_dataset", "read_jsonl",
    "require_columns", "rewrite_reserved", "sanitize_frame", "split_frame", "split_with_preset", "standard_rows",
    "transform", "validate_records", "write_jsonl", "write_prepared", "write_stackoverflow_csv",
]

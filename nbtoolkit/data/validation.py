"""Validate method records and return a structured report: row, field, rule, offending text."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

from nbtoolkit.data.formats import SFT_SCHEMA_VERSION
from nbtoolkit.data.sanitize import RESERVED_STRINGS, find_control_characters, find_reserved, strip_text
from nbtoolkit.errors import DataError, closest_name

Severity = Literal["error", "warning"]
PLATFORMS = ("local", "sagemaker", "bedrock")

# (platform, method) -> (min rows, max rows); Amazon Bedrock's limits for Nova 2 Lite (docs/nova-data-formats.md).
ROW_BOUNDS: dict[tuple[str, str], tuple[int, int]] = {
    ("bedrock", "sft"): (200, 20_000),
    ("bedrock", "rft"): (100, 20_000),
}
# Method of each record format; "chat" is the local trainer's form.
FORMAT_METHODS = {"converse": "sft", "rft": "rft", "gen_qa": "eval", "cpt": "cpt", "chat": "chat"}
RULES = {
    "schema": "record structure and keys",
    "blank": "required text is empty",
    "role_order": "roles start with user and alternate user/assistant",
    "reserved_string": "text contains a string reserved by the chat template",
    "control_character": "text contains NUL, another control character or a BOM",
    "label_not_in_set": "answer is not one of the declared labels",
    "optional_field_consistency": "an optional field is present in some rows but not all",
    "row_count": "number of rows outside the platform's bounds",
    "duplicate": "row repeats an earlier row",
}


@dataclass(frozen=True)
class Problem:
    """One finding: `row` is the 1-based input row (None for dataset-level findings)."""

    rule: str
    message: str
    row: int | None = None
    field: str | None = None
    text: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "dataset"
        if self.field:
            where += f", {self.field}"
        excerpt = f": {self.text!r}" if self.text else ""
        return f"[{self.severity}] {where}: {self.message}{excerpt}"


@dataclass
class ValidationReport:
    """All findings for one set of records."""

    fmt: str
    platform: str
    n_rows: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.rule for p in self.problems))

    def to_frame(self) -> pd.DataFrame:
        columns = ["severity", "rule", "row", "field", "message", "text"]
        frame = pd.DataFrame([asdict(p) for p in self.problems], columns=columns)
        return frame.astype({"row": "Int64"})

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.fmt, "platform": self.platform, "rows": self.n_rows, "ok": self.ok,
                "counts": self.counts(), "problems": [asdict(p) for p in self.problems]}

    def summary(self, limit: int = 5, title: str | None = None) -> str:
        head = f"{title or self.fmt}: {self.n_rows} rows, {len(self.errors)} errors, {len(self.warnings)} warnings"
        lines = [head] + [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... {len(self.problems) - limit} more (see validation.json)")
        return "\n".join(lines)

    def raise_for_errors(self, source: str | None = None) -> None:
        if self.errors:
            first = self.errors[0]
            raise DataError(f"{len(self.errors)} validation errors; first: {first}", source=source, row=first.row,
                            column=first.field)


def label_key(text: str) -> str:
    """How near-duplicate labels compare: case, whitespace, punctuation and control characters ignored."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def closest_label(value: str, labels: Any) -> str | None:
    """The label `value` most likely means: same `label_key`, else a close spelling or a prefix of it."""
    labels = sorted(labels)
    key = label_key(value)
    same = [label for label in labels if label_key(label) == key]
    if same:
        return same[0]
    if key:
        prefixed = [label for label in labels if label_key(label).startswith(key)]
        if len(prefixed) == 1:
            return prefixed[0]
    by_key = {label_key(label): label for label in labels}
    match = closest_name(key, list(by_key)) if key else None
    return by_key[match] if match else None


def _excerpt(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Checker:
    """Collects problems for one record at a time."""

    def __init__(self, report: ValidationReport, labels: set[str] | None, reserved_severity: Severity):
        self.report = report
        self.labels = labels
        self.reserved_severity = reserved_severity
        self.row: int | None = None

    def add(self, rule: str, message: str, field: str | None = None, text: Any = None,
            severity: Severity = "error") -> None:
        self.report.problems.append(Problem(rule, message, self.row, field,
                                            None if text is None else _excerpt(text), severity))

    def text(self, value: Any, field: str, *, label: bool = False) -> None:
        if not isinstance(value, str):
            self.add("schema", f"expected text, got {type(value).__name__}", field, value)
            return
        if not value.strip():
            self.add("blank", "is empty", field)
            return
        found = find_reserved(value)
        if found:
            self.add("reserved_string", "contains " + ", ".join(found) + " (sanitize with reserved='rewrite')",
                     field, value, self.reserved_severity)
        controls = find_control_characters(value)
        if controls:
            shown = ", ".join(ascii(c)[1:-1] for c in controls)
            self.add("control_character", f"contains {shown} (prepare_dataset removes them)", field, value)
        if label and self.labels is not None and strip_text(value) not in self.labels:
            closest = closest_label(strip_text(value), self.labels)
            hint = f"; closest: {closest!r}" if closest else ""
            self.add("label_not_in_set", f"not one of {sorted(self.labels)}{hint}", field, value)

    def keys(self, record: dict, required: tuple[str, ...], allowed: tuple[str, ...] | None) -> bool:
        missing = [k for k in required if k not in record]
        for key in missing:
            self.add("schema", "missing key", key)
        if allowed is not None:
            for key in record:
                if key not in allowed:
                    self.add("schema", f"unexpected key (allowed: {', '.join(allowed)})", key)
        return not missing


def _check_converse(c: _Checker, record: dict) -> None:
    if not c.keys(record, ("schemaVersion", "messages"), ("schemaVersion", "system", "messages")):
        return
    if record["schemaVersion"] != SFT_SCHEMA_VERSION:
        c.add("schema", f"schemaVersion must be {SFT_SCHEMA_VERSION!r}", "schemaVersion", record["schemaVersion"])
    if "system" in record:
        system = record["system"]
        if not (isinstance(system, list) and system and all(isinstance(s, dict) and "text" in s for s in system)):
            c.add("schema", 'system must be a list of {"text": ...}', "system", system)
        else:
            for part in system:
                c.text(part["text"], "system")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        c.add("schema", "messages must be a non-empty list", "messages", messages)
        return
    roles = []
    for i, message in enumerate(messages):
        name = f"messages[{i}]"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            c.add("schema", "each message needs role and content", name, message)
            return
        roles.append(message["role"])
        content = message["content"]
        if not (isinstance(content, list) and content and all(isinstance(p, dict) and "text" in p for p in content)):
            c.add("schema", 'content must be a list of {"text": ...}', name, content)
            continue
        is_last_answer = i == len(messages) - 1 and message["role"] == "assistant"
        for part in content:
            c.text(part["text"], f"{name}.{message['role']}", label=is_last_answer)
    _check_roles(c, roles)


def _check_roles(c: _Checker, roles: list[str]) -> None:
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or roles[-1:] != ["assistant"]:
        c.add("role_order", "roles must start with user, alternate, and end with assistant", "messages",
              " -> ".join(map(str, roles)))


def _check_rft(c: _Checker, record: dict) -> None:
    if not c.keys(record, ("messages", "reference_answer"), None):
        return
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        c.add("schema", "messages must be a non-empty list", "messages", messages)
    else:
        roles = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                c.add("schema", "each message needs role and content", f"messages[{i}]", message)
                return
            roles.append(message["role"])
            c.text(message["content"], f"messages[{i}].{message['role']}")
        if roles[-1] != "user" or any(r not in ("system", "user", "assistant") for r in roles) or \
                "system" in roles[1:]:
            c.add("role_order", "an optional system message first, ending with the user prompt", "messages",
                  " -> ".join(map(str, roles)))
    c.text(record["reference_answer"], "reference_answer", label=True)


def _check_gen_qa(c: _Checker, record: dict) -> None:
    if not c.keys(record, ("query", "response"), ("query", "response", "system", "metadata")):
        return
    c.text(record["query"], "query")
    c.text(record["response"], "response", label=True)
    if "system" in record:
        c.text(record["system"], "system")
    if "metadata" in record and not isinstance(record["metadata"], str):
        c.add("schema", "metadata must be a string", "metadata", record["metadata"])


def _check_cpt(c: _Checker, record: dict) -> None:
    if c.keys(record, ("text",), ("text",)):
        c.text(record["text"], "text")


def _check_chat(c: _Checker, record: dict) -> None:
    if not c.keys(record, ("messages",), None):
        return
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        c.add("schema", "messages must be a non-empty list", "messages", messages)
        return
    roles = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            c.add("schema", "each message needs role and content", f"messages[{i}]", message)
            return
        roles.append(message["role"])
        is_answer = i == len(messages) - 1 and message["role"] == "assistant"
        c.text(message["content"], f"messages[{i}].{message['role']}", label=is_answer)
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if turns != expected:
        c.add("role_order", "an optional system message, then user/assistant turns starting with user",
              "messages", " -> ".join(map(str, roles)))


_FORMAT_CHECKS = {"converse": _check_converse, "rft": _check_rft, "gen_qa": _check_gen_qa, "cpt": _check_cpt,
                  "chat": _check_chat}
# Optional top-level keys that must be present in every row or in none.
_OPTIONAL_KEYS = {"converse": ("system",), "rft": ("id",), "gen_qa": ("system", "metadata"), "cpt": (),
                  "chat": ("id",)}


def validate_records(
    records: list[dict],
    fmt: str,
    *,
    rows: list[int] | None = None,
    labels: list[str] | tuple[str, ...] | set[str] | None = None,
    platform: str = "local",
    global_batch_size: int | None = None,
) -> ValidationReport:
    """Check `records` of format `fmt` ("converse", "rft", "gen_qa", "cpt", "chat").

    `rows` gives the input row number of each record (default 1..n). Reserved strings are errors for SFT
    (they corrupt training turns) and warnings elsewhere.
    """
    if fmt not in _FORMAT_CHECKS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {list(_FORMAT_CHECKS)}")
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; choose one of {PLATFORMS}")
    rows = rows if rows is not None else list(range(1, len(records) + 1))
    if len(rows) != len(records):
        raise ValueError("rows and records differ in length")
    report = ValidationReport(fmt, platform, len(records))
    checker = _Checker(report, set(labels) if labels is not None else None,
                       "error" if fmt == "converse" else "warning")
    check = _FORMAT_CHECKS[fmt]
    seen: dict[str, int] = {}
    for row, record in zip(rows, records):
        checker.row = row
        if not isinstance(record, dict):
            checker.add("schema", "each row must be a JSON object", None, record)
            continue
        check(checker, record)
        key = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
        if key in seen:
            checker.add("duplicate", f"same as row {seen[key]}", None, None, "warning")
        else:
            seen[key] = row
    checker.row = None
    for key in _OPTIONAL_KEYS[fmt]:
        having = [r for r, rec in zip(rows, records) if isinstance(rec, dict) and key in rec]
        if having and len(having) < len(records):
            lacking = [r for r, rec in zip(rows, records) if isinstance(rec, dict) and key not in rec]
            checker.add("optional_field_consistency",
                        f"{len(having)} rows have {key!r} and {len(lacking)} do not (first without: row {lacking[0]})",
                        key)
    _check_row_count(checker, len(records), FORMAT_METHODS[fmt], platform, global_batch_size)
    return report


def _check_row_count(c: _Checker, n: int, method: str, platform: str, global_batch_size: int | None) -> None:
    if n == 0:
        c.add("row_count", "no rows")
        return
    bounds = ROW_BOUNDS.get((platform, method))
    if bounds and not bounds[0] <= n <= bounds[1]:
        c.add("row_count", f"{platform} {method} needs {bounds[0]:,} to {bounds[1]:,} rows, got {n:,}")
    if global_batch_size is not None and method in ("sft", "rft", "chat") and n < global_batch_size:
        c.add("row_count", f"fewer rows ({n}) than global_batch_size ({global_batch_size})")


__all__ = ["Problem", "ValidationReport", "validate_records", "RULES", "ROW_BOUNDS", "PLATFORMS",
           "RESERVED_STRINGS", "closest_label", "label_key"]

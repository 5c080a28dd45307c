"""Standard rows and the method formats written to disk (docs/nova-data-formats.md) or fed to the local trainer."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.data.loaders import as_text_column
from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.rows import row_numbers
from nbtoolkit.data.sanitize import strip_text

SFT_SCHEMA_VERSION = "bedrock-conversation-2024"
DEFAULT_RFT_SYSTEM_PROMPT = "You are a helpful AI assistant."
STANDARD_COLUMNS = ("question", "answer", "system", "id", "metadata", "text")
# Output formats: name -> (training method it serves, description)
FORMATS = {
    "converse": ("sft", "SFT, Bedrock Converse schema"),
    "rft": ("rft", "RFT prompts with reference answers"),
    "gen_qa": ("eval", "evaluation, gen_qa (query/response)"),
    "cpt": ("cpt", "continued pre-training text"),
    "chat": ("local", "chat messages for the local trainer and evaluator"),
}


def _combine(frame: pd.DataFrame, columns: tuple[str, ...], separator: str, source: str | None) -> list[str]:
    parts = [as_text_column(frame, column, source=source).tolist() for column in columns]
    return [separator.join(p for p in values if p.strip()) for values in zip(*parts)]


def _optional_text(frame: pd.DataFrame, column: str) -> list[str | None]:
    return [None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            for value in frame[column].tolist()]


def standard_rows(frame: pd.DataFrame, mapping: ColumnMapping, method: str) -> pd.DataFrame:
    """One row per input row with the standard fields (question, answer, system, id, metadata, text).

    Keeps the input row numbers as the index so validation can name them. Missing optional fields are None.
    Answers lose surrounding whitespace and zero-width characters ("HQ\u00a0" -> "HQ"): what is validated
    against the label set is what is written.
    """
    source = frame.attrs.get("source")
    mapping.check(frame, method, source=source)
    n = len(frame)
    out = pd.DataFrame(index=pd.Index(row_numbers(frame), name="row"))
    out["question"] = _combine(frame, mapping.question, mapping.separator, source) if mapping.question else [None] * n
    out["answer"] = ([strip_text(a) for a in _combine(frame, mapping.answer, mapping.separator, source)]
                     if mapping.answer else [None] * n)
    if mapping.system:
        out["system"] = _optional_text(frame, mapping.system)
    else:
        out["system"] = [mapping.system_prompt] * n
    out["id"] = _optional_text(frame, mapping.id) if mapping.id else [None] * n
    if mapping.metadata:
        records = frame[list(mapping.metadata)].to_dict(orient="records")
        out["metadata"] = [{k: _jsonable(v) for k, v in r.items()} for r in records]
    else:
        out["metadata"] = [None] * n
    out["text"] = _combine(frame, mapping.text, mapping.separator, source) if mapping.text else [None] * n
    out.attrs["source"] = source
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and pd.isna(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def to_converse(row: dict) -> dict:
    """SFT row in the Bedrock Converse schema."""
    record: dict[str, Any] = {"schemaVersion": SFT_SCHEMA_VERSION}
    if row.get("system"):
        record["system"] = [{"text": row["system"]}]
    record["messages"] = [
        {"role": "user", "content": [{"text": row["question"]}]},
        {"role": "assistant", "content": [{"text": row["answer"]}]},
    ]
    return record


def to_rft(row: dict) -> dict:
    """RFT row: system + user messages, the reference answer, and metadata columns as extra keys.

    Unlike the SDK, the question is not copied into an extra field.
    """
    record: dict[str, Any] = {}
    if row.get("id") is not None:
        record["id"] = row["id"]
    record["messages"] = [
        {"role": "system", "content": row.get("system") or DEFAULT_RFT_SYSTEM_PROMPT},
        {"role": "user", "content": row["question"]},
    ]
    record["reference_answer"] = row["answer"]
    for key, value in (row.get("metadata") or {}).items():
        if key not in record:
            record[key] = value
    return record


def to_gen_qa(row: dict) -> dict:
    """Evaluation row (gen_qa): query, response, optional system and metadata (a string); no other keys."""
    record: dict[str, Any] = {"query": row["question"], "response": row["answer"]}
    if row.get("system"):
        record["system"] = row["system"]
    metadata = row.get("metadata")
    if metadata:
        values = list(metadata.values())
        record["metadata"] = str(values[0]) if len(values) == 1 else json.dumps(metadata, ensure_ascii=False)
    return record


def to_cpt(row: dict) -> dict:
    """CPT row: raw text (falls back to question + answer when no text column is mapped)."""
    text = row.get("text")
    if text is None:
        text = "\n\n".join(p for p in (row.get("question"), row.get("answer")) if p)
    return {"text": text}


def to_chat(row: dict) -> dict:
    """Chat messages for the local trainer and evaluator; the answer is the last assistant message."""
    messages = []
    if row.get("system"):
        messages.append({"role": "system", "content": row["system"]})
    messages.append({"role": "user", "content": row["question"]})
    if row.get("answer") is not None:
        messages.append({"role": "assistant", "content": row["answer"]})
    record: dict[str, Any] = {"messages": messages}
    if row.get("id") is not None:
        record["id"] = row["id"]
    if row.get("metadata"):
        record["metadata"] = row["metadata"]
    return record


_TRANSFORMS = {"converse": to_converse, "rft": to_rft, "gen_qa": to_gen_qa, "cpt": to_cpt, "chat": to_chat}


def transform(rows: pd.DataFrame, fmt: str) -> list[dict]:
    """Turn standard rows into records of format `fmt` (see FORMATS)."""
    if fmt not in _TRANSFORMS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {list(_TRANSFORMS)}")
    convert = _TRANSFORMS[fmt]
    return [convert(row) for row in rows.to_dict(orient="records")]


def dumps_record(record: dict) -> str:
    """One JSONL line: UTF-8 text, keys in the service's order."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write records atomically (temp file then rename): a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600); this one gets the umask's permissions, like any file written here.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(dumps_record(record) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Records of a JSONL file written by `write_jsonl`."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)

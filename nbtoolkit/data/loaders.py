"""Load a table from CSV, TSV, JSON, JSONL, Parquet, S3 or a DataFrame, with errors that point at the bad spot.

Every loader returns a non-empty `pandas.DataFrame` with unique, whitespace-stripped string column names and
`df.attrs["source"]` / `df.attrs["format"]` set, so later steps can name the file in their own errors.
Row numbers in errors are 1-based data rows (the first record is row 1); line-based formats also give the
file line. The user's file is only ever opened for reading.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as _dt
import decimal
import gzip
import io
import json
import math
import numbers
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbtoolkit.errors import DataError, closest_name, file_error, unknown_name_message

__all__ = [
    "FORMATS",
    "JSON_WRAPPER_KEYS",
    "KNOWN_SCHEMAS",
    "MAX_FIELD_CHARS",
    "as_text_column",
    "detect_schema",
    "load_table",
    "require_columns",
]

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
MAX_FIELD_CHARS = 1_000_000

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_FORMAT_ALIASES = {"ndjson": "jsonl", "jsonlines": "jsonl", "pq": "parquet", "tab": "tsv"}

# Keys accepted as the wrapper of a record list in a JSON object, e.g. {"version": 2, "data": [{...}, ...]}.
JSON_WRAPPER_KEYS = ("data", "records", "rows", "items", "examples", "instances")

# csv.field_size_limit is stored in a C long; 2**31 - 1 fits on every platform (Windows longs are 32-bit).
_CSV_NO_LIMIT = 2**31 - 1


# --------------------------------------------------------------------------------------------------- public API


def load_table(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    format: str | None = None,  # noqa: A002 - the natural name for callers
    encoding: str | None = None,
    max_field_chars: int | None = MAX_FIELD_CHARS,
    s3_client: Any = None,
) -> pd.DataFrame:
    """Load a path, an `s3://bucket/key` URI or a DataFrame (copied) into a DataFrame.

    The format comes from the extension (`.csv .tsv .json .jsonl .ndjson .parquet`, optionally `.gz`) or from
    `format=`. CSV/TSV values stay strings exactly as written ("" stays "", "NA" stays "NA"). Text formats are
    read as UTF-8 (a BOM is dropped) unless `encoding=` is given. A string value longer than
    `max_field_chars` is an error (None disables the check). `s3_client` replaces `boto3.client("s3")`.

    JSON files may hold a list of objects; an object wrapping such a list under one of `JSON_WRAPPER_KEYS`
    (other keys are ignored as metadata); a column-oriented object (`{"col": [...]}` with equal lengths, or
    pandas' `{"col": {"0": ...}}`); or a single record (any other object, or one whose `messages` is a list of
    chat turns). A `.json` file that is really JSON Lines is read as JSON Lines.
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy()
        name = str(source.attrs.get("source", "DataFrame"))
        return _finish(df, name, source.attrs.get("format", "dataframe"), max_field_chars)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"cannot load a {type(source).__name__}; pass a file path, an s3:// URI or a pandas DataFrame"
        )

    text_source = os.fspath(source)
    if isinstance(text_source, bytes):
        text_source = os.fsdecode(text_source)
    if text_source.startswith("s3://"):
        name = text_source
        data = _read_s3(text_source, s3_client)
        key = text_source.rstrip("/").rsplit("/", 1)[-1]
    else:
        path = Path(text_source).expanduser()
        name = str(source)
        data = _read_local(path, name)
        key = path.name

    fmt, compressed = _resolve_format(key, format, name)
    if compressed:
        data = _gunzip(data, name)
    if not data:
        raise DataError("is empty", source=name)
    if fmt == "parquet":
        df = _parse_parquet(data, name)
        return _finish(df, name, fmt, max_field_chars)
    text = _decode(data, name, encoding)
    if not text.strip():
        raise DataError("is empty", source=name)
    if fmt in ("csv", "tsv"):
        df = _parse_delimited(text, name, "," if fmt == "csv" else "\t", max_field_chars)
        # Field sizes were checked while parsing, with line numbers.
        return _finish(df, name, fmt, None)
    if fmt == "jsonl":
        df = _parse_jsonl(text, name)
    else:
        df, fmt = _parse_json(text, name)
    return _finish(df, name, fmt, max_field_chars)


def require_columns(df: pd.DataFrame, columns: str | Iterable[str], *, source: str | None = None) -> None:
    """Raise a DataError naming every column of `columns` that `df` lacks, with the closest existing name."""
    wanted = [columns] if isinstance(columns, str) else list(columns)
    available = [str(c) for c in df.columns]
    missing = [c for c in wanted if c not in df.columns]
    if not missing:
        return
    source = source if source is not None else df.attrs.get("source")
    if len(missing) == 1:
        raise DataError(unknown_name_message("column", missing[0], available), source=source)
    parts = []
    for name in missing:
        suggestion = closest_name(name, available)
        parts.append(f"{name!r} (did you mean {suggestion!r}?)" if suggestion else repr(name))
    raise DataError(
        f"unknown columns {', '.join(parts)} (available: {', '.join(map(repr, available))})", source=source
    )


def as_text_column(df: pd.DataFrame, column: str, *, source: str | None = None) -> pd.Series:
    """Return `df[column]` as strings: ints and integral floats as digits ("3"), bools as "True"/"False".

    Missing values (None, NaN), non-finite floats, bytes, lists, dicts and arrays are errors naming the
    1-based row and the column, because silently turning them into "nan" or "[...]" would train on garbage.
    """
    require_columns(df, [column], source=source)
    source = source if source is not None else df.attrs.get("source")
    series = df[column]
    if isinstance(series, pd.DataFrame):
        raise DataError("column name is not unique", source=source, column=column)
    # infer_dtype calls a pandas string column "string" even when it holds NaN, hence the isna check.
    if pd.api.types.infer_dtype(series, skipna=False) == "string" and not series.isna().any():
        return series.astype(str)
    out = []
    for row, value in enumerate(series.tolist(), start=1):
        try:
            out.append(_cell_text(value))
        except _NotText as reason:
            raise DataError(str(reason), source=source, row=row, column=str(column)) from None
    return pd.Series(out, index=series.index, name=series.name, dtype=str)


KNOWN_SCHEMAS: dict[str, dict[str, Any]] = {
    "kaggle-stackoverflow": {
        "description": "Kaggle '60k Stack Overflow Questions with Quality Rating' (train.csv / valid.csv); "
        "Body is HTML, Y is the quality label.",
        "columns": ["Id", "Title", "Body", "Tags", "CreationDate", "Y"],
        "labels": ["HQ", "LQ_EDIT", "LQ_CLOSE"],
        # ColumnMapping fields; a list of columns is joined with "separator".
        "mapping": {"question": ["Title", "Body"], "answer": "Y", "separator": "\n\n"},
    },
    "stackoverflow-preprocessed": {
        "description": "Preprocessed Stack Overflow quality data (text = lowercased title + body without HTML "
        "or stop words, rating = label), e.g. so_quality_6750.parquet.",
        "columns": ["text", "rating"],
        "labels": ["HQ", "LQ_EDIT", "LQ_CLOSE"],
        "mapping": {"question": "text", "answer": "rating"},
    },
    "sft-converse": {
        "description": "SFT rows in Bedrock Converse format (schemaVersion, system, messages).",
        "columns": ["schemaVersion", "messages"],
        "optional": ["system"],
    },
    "rft": {
        "description": "RFT rows: messages (system + user) and reference_answer, plus optional id/metadata.",
        "columns": ["messages", "reference_answer"],
        "optional": ["id"],
    },
    "eval": {
        "description": "Evaluation (gen_qa) rows: query and response, optional system and metadata.",
        "columns": ["query", "response"],
        "optional": ["system", "metadata"],
    },
    "cpt": {
        "description": "Continued pre-training rows: a single text column.",
        "columns": ["text"],
    },
    "chat": {
        "description": "Chat rows with a messages list only (no schemaVersion, no reference_answer).",
        "columns": ["messages"],
    },
}


def detect_schema(df: pd.DataFrame) -> str | None:
    """Name the KNOWN_SCHEMAS entry `df` matches (checked most specific first), or None."""
    cols = {str(c) for c in df.columns}
    if set(KNOWN_SCHEMAS["kaggle-stackoverflow"]["columns"]) <= cols:
        return "kaggle-stackoverflow"
    if cols == {"text", "rating"}:
        return "stackoverflow-preprocessed"
    if {"schemaVersion", "messages"} <= cols:
        return "sft-converse"
    if {"messages", "reference_answer"} <= cols:
        return "rft"
    if {"query", "response"} <= cols:
        return "eval"
    if cols == {"text"}:
        return "cpt"
    if "messages" in cols:
        return "chat"
    return None


# ---------------------------------------------------------------------------------------------------- reading


def _read_local(path: Path, name: str) -> bytes:
    try:
        if path.is_dir():
            inside = sorted(p.name for p in path.iterdir() if _format_of(p.name)[0] is not None)
            hint = f"; data files inside: {', '.join(inside[:10])}" if inside else ""
            raise DataError(f"is a directory, not a file{hint}", source=name)
        if not path.exists():
            raise DataError(_not_found_message(path), source=name)
    except DataError:
        raise
    except (OSError, ValueError) as exc:  # e.g. a name that is too long or holds a NUL byte
        raise DataError(f"is not a usable path: {exc}", source=name) from None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise file_error(exc, "read it", name) from None


def _not_found_message(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return f"file not found (the folder {str(folder)!r} does not exist)"
    try:
        siblings = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        siblings = []
    suggestion = closest_name(path.name, siblings)
    return f"file not found; did you mean {str(folder / suggestion)!r}?" if suggestion else "file not found"


def _read_s3(uri: str, client: Any) -> bytes:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise DataError("is not an S3 object URI; expected s3://bucket/path/to/file.csv", source=uri)
    import boto3
    import botocore.exceptions

    try:
        client = client if client is not None else boto3.client("s3")
        response = client.get_object(Bucket=bucket, Key=key)
        return response["Body"].read()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "ClientError")
        raise DataError(f"cannot read from S3 ({code}): {error.get('Message', exc)}", source=uri) from None
    except botocore.exceptions.BotoCoreError as exc:
        # NoCredentialsError -> "NoCredentials", EndpointConnectionError -> "EndpointConnection", ...
        code = type(exc).__name__.removesuffix("Error")
        raise DataError(f"cannot read from S3 ({code}): {exc}", source=uri) from None


def _format_of(filename: str) -> tuple[str | None, bool]:
    lower = filename.lower()
    compressed = lower.endswith(".gz")
    if compressed:
        lower = lower[: -len(".gz")]
    return _EXTENSIONS.get(os.path.splitext(lower)[1]), compressed


def _resolve_format(filename: str, requested: str | None, name: str) -> tuple[str, bool]:
    detected, compressed = _format_of(filename)
    if requested is None:
        if detected is None:
            ext = "".join(Path(filename).suffixes) or "(none)"
            raise DataError(
                f"cannot tell the format from the extension {ext}; pass format= one of {', '.join(FORMATS)}",
                source=name,
            )
        return detected, compressed
    fmt = requested.lower().lstrip(".")
    fmt = _FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise DataError(unknown_name_message("format", requested, FORMATS), source=name)
    return fmt, compressed


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"is not a valid gzip file: {exc}", source=name) from None


def _decode(data: bytes, name: str, encoding: str | None) -> str:
    if encoding is None:
        # Excel's "Unicode Text" export is UTF-16 with a BOM; UTF-8 would fail on its first byte.
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        else:
            encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", source=name) from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1]
        shown = encoding.removesuffix("-sig").upper()
        raise DataError(
            f"is not valid {shown}: byte 0x{bad.hex()} at byte offset {exc.start}; if the file was saved by "
            "Excel or on Windows pass encoding='cp1252' (or 'latin-1'; on the command line: --encoding cp1252)",
            source=name,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


def _parse_parquet(data: bytes, name: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
        df = table.to_pandas()
    # pyarrow raises a family of its own types (ArrowInvalid, ArrowIOError, OSError, ...) on bad files.
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"is not a readable Parquet file: {exc}", source=name) from None
    # Keep a named index written by pandas (e.g. "Id") as a column; drop an anonymous one. Check the values,
    # not the type: an index of 7, 9 comes back as RangeIndex(7, 11, 2).
    named = [n for n in df.index.names if n is not None]
    for level in [n for n in named if n in df.columns]:
        # pandas writes the index next to the columns; an index named like a column is kept only once.
        index_values = pd.Series(df.index.get_level_values(level), index=df.index)
        if not index_values.equals(df[level]):
            raise DataError(
                f"the Parquet index {level!r} has the same name as a column but different values; write the "
                "file with index=False (pandas: df.to_parquet(path, index=False)) or rename one of them",
                source=name, column=str(level))
        named.remove(level)
        df = df.reset_index(level=level, drop=True)
    if named:
        df = df.reset_index(level=named)
    if not df.index.equals(pd.RangeIndex(len(df))):
        df = df.reset_index(drop=True)
    return df


# -------------------------------------------------------------------------------------------------- CSV / TSV


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    # The limit is process-wide; raise it only while parsing so other csv users keep theirs.
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, limit))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _parse_delimited(text: str, name: str, delimiter: str, max_field_chars: int | None) -> pd.DataFrame:
    try:
        return _parse_quoted(text, name, delimiter, max_field_chars)
    except DataError as quoted_error:
        if delimiter != "\t":
            raise
        # Many NLP TSV files are not quoted at all and contain stray quotes ('"funny" movie<TAB>1').
        # If a plain split on tabs gives a consistent table, that is what the file means.
        plain = _parse_unquoted_tsv(text, name, max_field_chars)
        if plain is None:
            raise quoted_error from None
        return plain


def _parse_quoted(text: str, name: str, delimiter: str, max_field_chars: int | None) -> pd.DataFrame:
    what = "comma" if delimiter == "," else "tab"
    # strict=True: an unclosed quote otherwise swallows the rest of the file into one field without a word.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    end = 0  # last line consumed by the reader
    with _csv_field_limit(_CSV_NO_LIMIT):
        while True:
            start = end + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(_csv_error_message(exc, what), source=name, line=start,
                                row=len(rows) + 1 if header is not None else None) from None
            end = reader.line_num
            if not record or (
                len(record) == 1 and not record[0].strip() and (header is None or len(header) > 1)
            ):
                continue  # a blank line
            if header is None:
                header, header_line = _clean_header(record, name, start), start
                continue
            if len(record) != len(header):
                raise DataError(
                    f"expected {len(header)} fields (as in the header) but found {len(record)}; a value that "
                    f"contains a {what} or a line break must be in double quotes",
                    source=name, row=len(rows) + 1, line=start,
                )
            if max_field_chars is not None and max(map(len, record)) > max_field_chars:
                col = next(j for j, value in enumerate(record) if len(value) > max_field_chars)
                raise _huge_field(name, len(rows) + 1, header[col], len(record[col]), max_field_chars, line=start)
            rows.append(record)
    if header is None:
        raise DataError("is empty", source=name)
    if not rows:
        raise DataError(f"is empty: it has a header (line {header_line}) but no data rows", source=name)
    columns = list(zip(*rows))
    return pd.DataFrame({col: list(values) for col, values in zip(header, columns)}, dtype=str)


def _parse_unquoted_tsv(text: str, name: str, max_field_chars: int | None) -> pd.DataFrame | None:
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    records = [(i, line.split("\t")) for i, line in enumerate(lines, start=1) if line.strip()]
    if len(records) < 2 or any(len(r) != len(records[0][1]) for _, r in records):
        return None
    header = _clean_header(records[0][1], name, records[0][0])
    rows = [r for _, r in records[1:]]
    if max_field_chars is not None:
        for row, (line, record) in enumerate(records[1:], start=1):
            for col, value in zip(header, record):
                if len(value) > max_field_chars:
                    raise _huge_field(name, row, col, len(value), max_field_chars, line=line)
    return pd.DataFrame({col: list(values) for col, values in zip(header, zip(*rows))}, dtype=str)


def _csv_error_message(exc: csv.Error, what: str) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        return "a quoted value that starts on this line is never closed (missing '\"')"
    if "expected after" in message:
        return (f"bad quoting ({message}): a quote that opens a value must close it right before the next "
                f"{what} or line break; write a quote inside a value as two quotes (\"\")")
    return f"malformed CSV: {message}"


def _clean_header(record: list[str], name: str, line: int) -> list[str]:
    header = _clean_names(record)
    duplicates = _duplicates(header)
    if duplicates:
        raise DataError(
            f"duplicate column names in the header: {', '.join(map(repr, duplicates))}", source=name, line=line
        )
    return header


def _huge_field(name: str, row: int, column: str, length: int, limit: int, *, line: int | None = None) -> DataError:
    return DataError(
        f"value has {length:,} characters, more than max_field_chars={limit:,}; raise max_field_chars if "
        "this is intended (a missing closing quote can also glue many rows into one value)",
        source=name, row=row, line=line, column=column,
    )


# ------------------------------------------------------------------------------------------------ JSON / JSONL


def _parse_jsonl(text: str, name: str) -> pd.DataFrame:
    records: list[dict[str, Any]] = []
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends, which JSON strings may hold.
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        row = len(records) + 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if row == 1 and line.strip() in ("[", "{"):
                hint = "; the file looks like one JSON document, so use format='json'"
            raise DataError(
                f"invalid JSON: {exc.msg} (character {exc.colno}){hint}", source=name, row=row, line=line_no
            ) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"invalid JSON: {_short(exc)}", source=name, row=row, line=line_no) from None
        if not isinstance(value, dict):
            raise DataError(
                f"expected a JSON object per line, got {_json_kind(value)}", source=name, row=row, line=line_no
            )
        for key, item in value.items():
            _check_unicode(item, name, row, str(key), line=line_no)
        records.append(value)
    if not records:
        raise DataError("is empty", source=name)
    return _records_frame(records)


def _parse_json(text: str, name: str) -> tuple[pd.DataFrame, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            return _parse_jsonl(text, name), "jsonl"
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=name, line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"invalid JSON: {_short(exc)}", source=name) from None
    return _json_frame(value, name), "json"


def _first_line_is_object(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def _json_frame(value: Any, name: str) -> pd.DataFrame:
    if isinstance(value, list):
        return _records_frame(_check_records(value, name))
    if not isinstance(value, dict):
        raise DataError(f"expected a list of objects or an object at the top level, got {_json_kind(value)}",
                        source=name)
    if not value:
        raise DataError("is empty", source=name)
    wrapped = [k for k in JSON_WRAPPER_KEYS if isinstance(value.get(k), list) and value[k]
               and all(isinstance(item, dict) for item in value[k])]
    if len(wrapped) == 1:
        return _records_frame(_check_records(value[wrapped[0]], name))
    if _is_chat_record(value):
        return _records_frame([value])
    values = list(value.values())
    if all(isinstance(v, list) for v in values):
        lengths = {k: len(v) for k, v in value.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k!r} has {n}" for k, n in lengths.items())
            raise DataError(
                f"a column-oriented JSON object needs lists of equal length ({shown}); for a single record "
                "wrap the object in a list: [{...}]",
                source=name,
            )
        return _columns_frame(value)
    if all(isinstance(v, dict) for v in values):
        # pandas' DataFrame.to_json() default: {"col": {"<index>": value}}; rows keep first-seen index order.
        index: dict[str, None] = {}
        for column in values:
            index.update(dict.fromkeys(column))
        return _columns_frame({k: [col.get(i) for i in index] for k, col in value.items()})
    return _records_frame([value])


def _is_chat_record(value: dict[str, Any]) -> bool:
    messages = value.get("messages")
    return (isinstance(messages, list) and bool(messages)
            and all(isinstance(m, dict) and "role" in m for m in messages))


def _check_records(items: list[Any], name: str) -> list[dict[str, Any]]:
    if not items:
        raise DataError("is empty", source=name)
    for row, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataError(f"expected a JSON object, got {_json_kind(item)}", source=name, row=row)
    return items


def _records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return _columns_frame({k: [r.get(k) for r in records] for k in keys})


def _columns_frame(columns: Mapping[str, list[Any]]) -> pd.DataFrame:
    data = {key: pd.Series(values, dtype=_json_dtype(values)) for key, values in columns.items()}
    # Column labels are set afterwards so that duplicate names after stripping are reported, not merged.
    df = pd.DataFrame(dict(enumerate(data.values())))
    df.columns = list(data)
    return df


def _json_dtype(values: list[Any]) -> Any:
    """A dtype that holds `values` exactly; object unless every value has the same simple type."""
    # object keeps JSON values as parsed: [1, None] must not become [1.0, nan], nor 2**70 a float.
    kinds = {type(v) for v in values}
    if kinds == {str}:
        # A lone surrogate cannot enter pandas' Arrow-backed strings; object keeps it for _finish to report.
        return object if any(_SURROGATE.search(v) for v in values) else str
    if kinds == {bool}:
        return bool
    if kinds == {float}:
        return "float64"
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values):
        return "int64"
    return object


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object", int: "a number",
             float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _short(thing: object) -> str:
    text = str(thing)
    return text if len(text) < 200 else text[:200] + "..."


# ------------------------------------------------------------------------------------------------ finishing


def _clean_names(names: Sequence[Any]) -> list[str]:
    """Strip names; an empty name becomes pandas' 'Unnamed: <position>' (e.g. an index written by to_csv)."""
    cleaned = [str(n).strip() for n in names]
    return [n if n else f"Unnamed: {i}" for i, n in enumerate(cleaned)]


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for n in names:
        if n in seen and n not in duplicates:
            duplicates.append(n)
        seen.add(n)
    return duplicates


def _finish(df: pd.DataFrame, name: str, fmt: str, max_field_chars: int | None) -> pd.DataFrame:
    original = list(df.columns)
    df.columns = _clean_names(original)
    duplicates = _duplicates(list(df.columns))
    if duplicates:
        spelled = [repr(o) for o, n in zip(original, df.columns) if n in duplicates]
        raise DataError(
            f"duplicate column names {', '.join(map(repr, duplicates))} (as written: {', '.join(spelled)})",
            source=name,
        )
    if len(df.columns) == 0:
        raise DataError("is empty: it has no columns", source=name)
    if len(df) == 0:
        raise DataError("is empty: it has no rows", source=name)
    if max_field_chars is not None:
        _check_field_sizes(df, name, max_field_chars)
    _check_frame_unicode(df, name)
    df.attrs["source"] = name
    df.attrs["format"] = fmt
    return df


def _check_field_sizes(df: pd.DataFrame, name: str, limit: int) -> None:
    for position, column in enumerate(df.columns):
        series = df.iloc[:, position]
        if pd.api.types.is_string_dtype(series.dtype) and not pd.api.types.is_object_dtype(series.dtype):
            lengths = series.str.len().fillna(0).to_numpy()
        elif pd.api.types.is_object_dtype(series.dtype):
            lengths = np.fromiter((len(v) if isinstance(v, str) else 0 for v in series), dtype=np.int64,
                                  count=len(series))
        else:
            continue
        if len(lengths) and lengths.max() > limit:
            row = int(np.argmax(lengths > limit))
            raise _huge_field(name, row + 1, column, int(lengths[row]), limit)


# A lone UTF-16 surrogate (e.g. from a JSON escape "\ud800" without its pair) cannot be written as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(value: Any, name: str, row: int, column: str, *, line: int | None = None) -> None:
    """Raise a DataError naming the cell when `value` (or text nested in it) holds a lone surrogate."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found:
            raise DataError(
                f"holds a lone surrogate {found.group().encode('unicode_escape').decode()} at character "
                f"{found.start() + 1}: invalid Unicode (often half of a broken JSON escape such as \\ud83d); "
                "remove it or write the whole character", source=name, row=row, line=line, column=column)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, name, row, column, line=line)
            _check_unicode(item, name, row, column, line=line)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_unicode(item, name, row, column, line=line)


def _check_frame_unicode(df: pd.DataFrame, name: str) -> None:
    for column in df.columns:
        if _SURROGATE.search(str(column)):
            raise DataError(f"the column name {ascii(column)} holds a lone surrogate (invalid Unicode); rename it",
                            source=name)
    for position, column in enumerate(df.columns):
        series = df.iloc[:, position]
        if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            continue
        for row, value in enumerate(series.tolist(), start=1):
            _check_unicode(value, name, row, str(column))


class _NotText(Exception):
    """Why a cell has no safe text form."""


def _cell_text(value: Any) -> str:
    """The text for one cell; raises _NotText when converting it would invent or lose information."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        raise _NotText("missing value")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        number = float(value)
        if math.isnan(number):
            raise _NotText("missing value")
        if math.isinf(number):
            raise _NotText(f"not a finite number ({number})")
        return str(int(number)) if number.is_integer() else str(value)
    if isinstance(value, (_dt.date, _dt.time, pd.Timestamp)):
        return str(value)
    if isinstance(value, (dict, list, tuple, set, np.ndarray)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise _NotText(f"is {kind}, not text: {_short(repr(value))}")
    if isinstance(value, (bytes, bytearray)):
        raise _NotText("is bytes, not text; decode it first")
    raise _NotText(f"is of type {type(value).__name__}, not text")

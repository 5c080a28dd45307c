"""Property tests for load_table: any input gives a DataFrame or a DataError, and string tables round-trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtoolkit.data.loaders import load_table
from nbtoolkit.errors import DataError

EXTENSIONS = ["csv", "tsv", "json", "jsonl", "parquet", "csv.gz"]
# database=None: no .hypothesis/ folder in the repository; a failure prints its example anyway.
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=100, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    # Module-scoped: hypothesis reruns the test body many times within one fixture instance.
    return tmp_path_factory.mktemp("fuzz")


def load_or_data_error(path: Path, **kwargs) -> pd.DataFrame | None:
    """Load, accepting only a DataFrame or a DataError; any other exception fails the test."""
    try:
        df = load_table(path, **kwargs)
    except DataError as error:
        assert error.source == str(path)
        return None
    assert isinstance(df, pd.DataFrame)
    assert len(df) > 0 and len(df.columns) > 0
    assert df.columns.is_unique
    assert df.attrs["source"] == str(path)
    return df


# Text biased toward the characters and tokens that matter to the parsers.
TOKENS = list(',\t"\n\r{}[]:\\ \ufeff\u2028\x00') + ['{"a": ', '"b"', "null", "1e999", "-0", '""', "\r\n"]
tricky_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=80).map("".join)


@FUZZ
@given(data=st.binary(max_size=400), extension=st.sampled_from(EXTENSIONS))
def test_arbitrary_bytes(workdir, data, extension):
    path = workdir / f"bytes.{extension}"
    path.write_bytes(data)
    load_or_data_error(path)


@FUZZ
@given(text=tricky_text, extension=st.sampled_from(EXTENSIONS[:4]), latin=st.booleans())
def test_arbitrary_text(workdir, text, extension, latin):
    path = workdir / f"text.{extension}"
    path.write_bytes(text.encode("utf-8"))
    load_or_data_error(path, encoding="latin-1" if latin else None)


def _valid_csv() -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["Id", "Title", "Body", "Y"])
    for i in range(6):
        writer.writerow([str(i), f"title {i}, with comma", f'<p>line one\n"quoted" {i}</p>\r\nend', "HQ"])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def _valid_jsonl() -> bytes:
    rows = [{"query": f"q{i}\n", "response": "é" * i, "n": i, "m": [{"role": "user"}]} for i in range(6)]
    return "\n".join(json.dumps(r, ensure_ascii=i % 2 == 0) for i, r in enumerate(rows)).encode("utf-8")


def _valid_parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"text": ["a", "b" * 50, "c"], "rating": ["HQ", "LQ_EDIT", "LQ_CLOSE"]}).to_parquet(buffer)
    return buffer.getvalue()


VALID = {"csv": _valid_csv(), "jsonl": _valid_jsonl(), "json": b"[" + _valid_jsonl().replace(b"\n", b",\n") + b"]",
         "parquet": _valid_parquet()}


@FUZZ
@given(extension=st.sampled_from(sorted(VALID)), cut=st.floats(0, 1), flip=st.one_of(st.none(), st.integers(0)))
def test_truncated_or_corrupted_valid_files(workdir, extension, cut, flip):
    data = bytearray(VALID[extension][: int(len(VALID[extension]) * cut)])
    if flip is not None and data:
        data[flip % len(data)] ^= 0xFF
    path = workdir / f"cut.{extension}"
    path.write_bytes(bytes(data))
    load_or_data_error(path)


# ------------------------------------------------------------------------------------------------ round trips

column_names = st.text(min_size=1, max_size=12).filter(lambda n: n == n.strip() and not n.startswith("\ufeff"))
cell_text = st.text(max_size=30)


@st.composite
def string_tables(draw, cells=cell_text) -> pd.DataFrame:
    names = draw(st.lists(column_names, min_size=1, max_size=4, unique=True))
    rows = draw(st.lists(st.lists(cells, min_size=len(names), max_size=len(names)), min_size=1, max_size=8))
    return pd.DataFrame(rows, columns=names, dtype=object)


def assert_same_table(loaded: pd.DataFrame, original: pd.DataFrame) -> None:
    assert list(loaded.columns) == list(original.columns)
    assert loaded.astype(object).values.tolist() == original.values.tolist()


@ROUND_TRIP
@given(table=string_tables())
def test_csv_round_trip_with_csv_module(workdir, table):
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([list(table.columns), *table.values.tolist()])
    path = workdir / "round.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    assert_same_table(load_table(path), table)


# pandas' to_csv uses "\n" line endings and leaves a value holding a lone "\r" unquoted, so no pandas-written
# CSV can round-trip "\r" (pandas' own reader splits there too); keep it out of this test.
@ROUND_TRIP
@given(table=string_tables(cells=st.text(max_size=30).filter(lambda v: "\r" not in v)).filter(
    lambda t: not any("\r" in n for n in t.columns)))
def test_csv_round_trip_with_pandas(workdir, table):
    path = workdir / "round_pandas.csv"
    table.to_csv(path, index=False)
    assert_same_table(load_table(path), table)


@ROUND_TRIP
@given(table=string_tables(), ascii_only=st.booleans())
def test_jsonl_round_trip(workdir, table, ascii_only):
    path = workdir / "round.jsonl"
    lines = [json.dumps(record, ensure_ascii=ascii_only) for record in table.to_dict(orient="records")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_same_table(load_table(path), table)


@ROUND_TRIP
@given(table=string_tables())
def test_json_round_trip(workdir, table):
    path = workdir / "round.json"
    path.write_text(json.dumps(table.to_dict(orient="records"), ensure_ascii=False, indent=1), encoding="utf-8")
    assert_same_table(load_table(path), table)


@ROUND_TRIP
@given(table=string_tables())
def test_parquet_round_trip(workdir, table):
    path = workdir / "round.parquet"
    table.to_parquet(path, index=False)
    assert_same_table(load_table(path), table)

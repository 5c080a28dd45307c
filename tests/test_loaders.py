"""Unit tests for nbtoolkit.data.loaders: every format, every error path, S3 through moto."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbtoolkit.data.loaders import (
    KNOWN_SCHEMAS,
    as_text_column,
    detect_schema,
    load_table,
    require_columns,
)
from nbtoolkit.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SO_PARQUET = SHARED_DATA / "stackoverflow-quality" / "so_quality_6750.parquet"


def write(path: Path, content: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def values(df: pd.DataFrame) -> list[list[object]]:
    return df.astype(object).values.tolist()


# ------------------------------------------------------------------------------------------------------- CSV


def test_csv_values_stay_strings(tmp_path):
    path = write(tmp_path / "t.csv", "id,label,note\n1,NA,\n2,null,3.50\n")
    df = load_table(path)
    assert list(df.columns) == ["id", "label", "note"]
    assert values(df) == [["1", "NA", ""], ["2", "null", "3.50"]]
    assert all(pd.api.types.is_string_dtype(t) for t in df.dtypes)
    assert df.attrs == {"source": str(path), "format": "csv"}


def test_csv_multiline_quoted_html_bodies(tmp_path):
    body1 = "<p>How do I\nsplit a string?</p>\n<pre><code>a, b = s.split(\",\")\n</code></pre>"
    body2 = "<p>Windows\r\nline endings</p>"
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerows([["Id", "Title", "Body"], ["1", "Split", body1], ["2", "CRLF", body2]])
    path = write(tmp_path / "so.csv", buffer.getvalue())
    df = load_table(path)
    assert df["Body"].tolist() == [body1, body2]
    assert df["Title"].tolist() == ["Split", "CRLF"]


def test_csv_crlf_and_blank_lines(tmp_path):
    df = load_table(write(tmp_path / "t.csv", "a,b\r\n\r\n1,2\r\n   \r\n3,4\r\n\r\n"))
    assert values(df) == [["1", "2"], ["3", "4"]]


def test_single_column_csv_keeps_empty_values(tmp_path):
    df = load_table(write(tmp_path / "t.csv", 'text\n""\nhello\n'))
    assert df["text"].tolist() == ["", "hello"]


def test_tsv(tmp_path):
    df = load_table(write(tmp_path / "t.tsv", 'sentence\tlabel\nit has, commas\t1\n"quoted\ttab"\t0\n'))
    assert values(df) == [["it has, commas", "1"], ["quoted\ttab", "0"]]
    assert df.attrs["format"] == "tsv"


def test_unquoted_tsv_with_stray_quotes(tmp_path):
    # Typical NLP TSV: no quoting, quotes are part of the text.
    df = load_table(write(tmp_path / "t.tsv", 'sentence\tlabel\n"funny" movie\t1\nsays "hi\t0\n'))
    assert values(df) == [['"funny" movie', "1"], ['says "hi', "0"]]


def test_bom_does_not_break_first_column(tmp_path):
    path = write(tmp_path / "t.csv", "\ufeffId,Title\n1,x\n")
    df = load_table(path)
    assert list(df.columns) == ["Id", "Title"]
    assert list(load_table(path, encoding="utf-8").columns) == ["Id", "Title"]


def test_utf16_with_bom(tmp_path):
    df = load_table(write(tmp_path / "t.tsv", "a\tb\ncafé\t1\n", encoding="utf-16"))
    assert values(df) == [["café", "1"]]


def test_latin1_needs_encoding(tmp_path):
    path = write(tmp_path / "t.csv", "name,city\nx,Zürich\ny,Montréal\n", encoding="latin-1")
    with pytest.raises(DataError) as info:
        load_table(path)
    error = info.value
    assert error.source == str(path)
    assert error.line == 2
    assert "UTF-8" in error.message and "encoding=" in error.message and "0xfc" in error.message
    assert load_table(path, encoding="latin-1")["city"].tolist() == ["Zürich", "Montréal"]


def test_cp1252_override(tmp_path):
    path = write(tmp_path / "t.csv", "q\n“smart quotes”\n", encoding="cp1252")
    assert load_table(path, encoding="cp1252")["q"].tolist() == ["“smart quotes”"]


def test_unknown_encoding(tmp_path):
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        load_table(write(tmp_path / "t.csv", "a\n1\n"), encoding="klingon")


@pytest.mark.parametrize(
    ("content", "line", "row", "fragment"),
    [
        ("a,b\n1,2\n3,4,5\n", 3, 2, "expected 2 fields (as in the header) but found 3"),
        ("a,b\n1,2\n\n3\n", 4, 2, "expected 2 fields (as in the header) but found 1"),
        ('a,b\n1,2\n"open,3\n4,5\n', 3, 2, "never closed"),
        ('a,b\n"x"y,2\n', 2, 1, "bad quoting"),
    ],
)
def test_malformed_csv_names_line_and_row(tmp_path, content, line, row, fragment):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError) as info:
        load_table(path)
    assert (info.value.source, info.value.line, info.value.row) == (str(path), line, row)
    assert fragment in info.value.message


def test_wrong_field_count_after_multiline_record_names_its_first_line(tmp_path):
    path = write(tmp_path / "bad.csv", 'a,b\n"x\ny\nz",1\n2,3,4\n')
    with pytest.raises(DataError) as info:
        load_table(path)
    assert (info.value.row, info.value.line) == (2, 5)


def test_duplicate_columns(tmp_path):
    with pytest.raises(DataError, match="duplicate column names in the header: 'a'") as info:
        load_table(write(tmp_path / "t.csv", "a,b,a\n1,2,3\n"))
    assert info.value.line == 1
    with pytest.raises(DataError, match="'b'"):
        load_table(write(tmp_path / "t.csv", "a,b, b \n1,2,3\n"))


def test_column_names_stripped_and_blank_names_numbered(tmp_path):
    df = load_table(write(tmp_path / "t.csv", ", question ,answer\t\n0,q,a\n"))
    assert list(df.columns) == ["Unnamed: 0", "question", "answer"]


def test_header_only_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="is empty: it has a header"):
        load_table(write(tmp_path / "h.csv", "a,b\n"))
    for name in ("e.csv", "e.tsv", "e.json", "e.jsonl"):
        with pytest.raises(DataError, match="is empty"):
            load_table(write(tmp_path / name, ""))
        with pytest.raises(DataError, match="is empty"):
            load_table(write(tmp_path / name, "\n  \n"))
    with pytest.raises(DataError, match="is empty"):
        load_table(write(tmp_path / "e.parquet", b""))


def test_huge_field_names_row_and_column(tmp_path):
    path = write(tmp_path / "big.csv", "a,b\n1,2\n3," + "x" * 500 + "\n")
    with pytest.raises(DataError) as info:
        load_table(path, max_field_chars=100)
    assert (info.value.row, info.value.line, info.value.column) == (2, 3, "b")
    assert "max_field_chars=100" in info.value.message
    assert len(load_table(path, max_field_chars=None).loc[1, "b"]) == 500


def test_field_above_csv_module_default_limit_loads(tmp_path):
    # csv's own default limit is 131,072 characters; ours is 1,000,000 and must not leak a _csv.Error.
    limit_before = csv.field_size_limit()
    big = "y" * 300_000
    df = load_table(write(tmp_path / "big.csv", f'text,label\n"{big}",HQ\n'))
    assert df.loc[0, "text"] == big
    assert csv.field_size_limit() == limit_before
    with pytest.raises(DataError, match="more than max_field_chars=1,000,000") as info:
        load_table(write(tmp_path / "bigger.csv", "text\n" + "z" * 1_000_001 + "\n"))
    assert info.value.column == "text"


def test_huge_field_in_jsonl_and_parquet(tmp_path):
    write(tmp_path / "big.jsonl", json.dumps({"a": "ok"}) + "\n" + json.dumps({"a": "x" * 50}) + "\n")
    with pytest.raises(DataError) as info:
        load_table(tmp_path / "big.jsonl", max_field_chars=10)
    assert (info.value.row, info.value.column) == (2, "a")
    pd.DataFrame({"a": ["ok", "x" * 50]}).to_parquet(tmp_path / "big.parquet")
    with pytest.raises(DataError) as info:
        load_table(tmp_path / "big.parquet", max_field_chars=10)
    assert (info.value.row, info.value.column) == (2, "a")


def test_gzip_csv(tmp_path):
    path = write(tmp_path / "t.csv.gz", gzip.compress(b"a,b\n1,2\n"))
    assert values(load_table(path)) == [["1", "2"]]
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_table(write(tmp_path / "bad.csv.gz", b"not gzip"))


# ------------------------------------------------------------------------------------------------------ JSON


def test_json_list_of_records_preserves_types(tmp_path):
    records = [{"q": "a", "label": 1, "score": 0.5}, {"q": "b", "label": None, "extra": [1]}]
    df = load_table(write(tmp_path / "t.json", json.dumps(records)))
    assert list(df.columns) == ["q", "label", "score", "extra"]
    assert df["label"].tolist() == [1, None]  # not [1.0, nan]
    assert df["score"].tolist() == [0.5, None]
    assert df["extra"].tolist() == [None, [1]]
    assert df.attrs["format"] == "json"


def test_json_simple_columns_get_simple_dtypes(tmp_path):
    df = load_table(write(tmp_path / "t.json", json.dumps([{"i": 1, "f": 0.5, "b": True, "s": "x"}] * 2)))
    assert str(df["i"].dtype) == "int64" and str(df["f"].dtype) == "float64" and str(df["b"].dtype) == "bool"
    assert pd.api.types.is_string_dtype(df["s"].dtype)


def test_json_column_oriented_lists(tmp_path):
    df = load_table(write(tmp_path / "t.json", json.dumps({"question": ["q1", "q2"], "answer": ["a1", "a2"]})))
    assert values(df) == [["q1", "a1"], ["q2", "a2"]]


def test_json_column_oriented_pandas_default(tmp_path):
    original = pd.DataFrame({"text": [f"t{i}" for i in range(12)], "rating": ["HQ"] * 12})
    path = tmp_path / "t.json"
    original.to_json(path)  # {"text": {"0": ..., "1": ..., ..., "11": ...}, ...}
    pd.testing.assert_frame_equal(load_table(path), original, check_dtype=False)


def test_json_unequal_columns(tmp_path):
    with pytest.raises(DataError, match="equal length .*'a' has 2, 'b' has 1"):
        load_table(write(tmp_path / "t.json", json.dumps({"a": [1, 2], "b": [3]})))


@pytest.mark.parametrize("key", ["data", "records", "rows"])
def test_json_records_wrapper(tmp_path, key):
    content = {"version": "1.0", key: [{"q": "a"}, {"q": "b"}]}
    assert load_table(write(tmp_path / "t.json", json.dumps(content)))["q"].tolist() == ["a", "b"]


def test_json_single_record(tmp_path):
    df = load_table(write(tmp_path / "t.json", json.dumps({"query": "2+2?", "response": "4"})))
    assert values(df) == [["2+2?", "4"]]


def test_json_single_chat_record(tmp_path):
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    df = load_table(write(tmp_path / "t.json", json.dumps(record)))
    assert len(df) == 1 and df.loc[0, "messages"] == record["messages"]
    assert detect_schema(df) == "chat"


def test_invalid_json_names_line_and_column(tmp_path):
    path = write(tmp_path / "t.json", '[\n  {"a": 1},\n  {"a": 2,,}\n]')
    with pytest.raises(DataError) as info:
        load_table(path)
    assert info.value.line == 3
    assert "column 11" in info.value.message


def test_json_bad_shapes(tmp_path):
    with pytest.raises(DataError, match="expected a list of objects or an object .* got a number"):
        load_table(write(tmp_path / "t.json", "42"))
    with pytest.raises(DataError, match="expected a JSON object, got a string") as info:
        load_table(write(tmp_path / "t.json", '[{"a": 1}, "b"]'))
    assert info.value.row == 2
    for content in ("[]", "{}", "[{}]"):
        with pytest.raises(DataError, match="is empty"):
            load_table(write(tmp_path / "t.json", content))


def test_json_file_holding_json_lines(tmp_path):
    df = load_table(write(tmp_path / "t.json", '{"a": 1}\n{"a": 2}\n'))
    assert df["a"].tolist() == [1, 2] and df.attrs["format"] == "jsonl"


def test_json_deep_nesting_and_huge_numbers_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="invalid JSON"):
        load_table(write(tmp_path / "t.json", "[" * 100_000))
    with pytest.raises(DataError, match="invalid JSON"):
        load_table(write(tmp_path / "t.jsonl", '{"a": ' + "9" * 5000 + "}\n"))


# ----------------------------------------------------------------------------------------------------- JSONL


def test_jsonl_bad_line_names_line_3(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"a": 1}\n{"a": 2}\n{"a": oops}\n{"a": 4}\n')
    with pytest.raises(DataError) as info:
        load_table(path)
    assert (info.value.line, info.value.row) == (3, 3)
    assert "invalid JSON: Expecting value" in info.value.message
    assert str(info.value).startswith(f"{path}, row 3, line 3: ")


def test_jsonl_blank_lines_skipped_and_rows_counted(tmp_path):
    path = write(tmp_path / "t.ndjson", '\n{"a": 1}\r\n\n  \n{"a": 2}\n[1, 2]\n')
    with pytest.raises(DataError, match="expected a JSON object per line, got a list") as info:
        load_table(path)
    assert (info.value.line, info.value.row) == (6, 3)
    df = load_table(write(tmp_path / "ok.ndjson", '\n{"a": 1}\r\n\n  \n{"b": "x"}\n'))
    assert df["a"].tolist() == [1, None] and df["b"].tolist() == [None, "x"]
    assert df.attrs["format"] == "jsonl"


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    text = "first\u2028second\x85third"
    df = load_table(write(tmp_path / "t.jsonl", json.dumps({"t": text}, ensure_ascii=False) + "\n"))
    assert df["t"].tolist() == [text]


def test_jsonl_holding_a_json_array_hints_format(tmp_path):
    with pytest.raises(DataError, match="format='json'"):
        load_table(write(tmp_path / "t.jsonl", '[\n  {"a": 1}\n]\n'))


# --------------------------------------------------------------------------------------------------- Parquet


def test_parquet_round_trip(tmp_path):
    original = pd.DataFrame({"text": ["a", "b\nc"], "rating": ["HQ", "LQ_EDIT"], "n": [1, 2]})
    original.to_parquet(tmp_path / "t.parquet", index=False)
    df = load_table(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(df, original)
    assert df.attrs == {"source": str(tmp_path / "t.parquet"), "format": "parquet"}


def test_parquet_named_index_becomes_column(tmp_path):
    original = pd.DataFrame({"Id": [7, 9], "q": ["a", "b"]}).set_index("Id")
    original.to_parquet(tmp_path / "t.parquet")
    df = load_table(tmp_path / "t.parquet")
    assert list(df.columns) == ["Id", "q"] and isinstance(df.index, pd.RangeIndex)


def test_corrupt_parquet(tmp_path):
    path = write(tmp_path / "t.parquet", b"PAR1 this is not parquet PAR1")
    with pytest.raises(DataError, match="not a readable Parquet file") as info:
        load_table(path)
    assert info.value.source == str(path)


# ------------------------------------------------------------------------------------------- paths & formats


def test_missing_file_suggests_close_name(tmp_path):
    write(tmp_path / "train.csv", "a\n1\n")
    with pytest.raises(DataError, match="file not found; did you mean") as info:
        load_table(tmp_path / "trian.csv")
    assert str(tmp_path / "train.csv") in info.value.message
    assert info.value.source == str(tmp_path / "trian.csv")
    with pytest.raises(DataError, match="file not found$"):
        load_table(tmp_path / "completely-different.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_table(tmp_path / "no-such-folder" / "train.csv")


def test_directory_is_a_clear_error(tmp_path):
    write(tmp_path / "train.jsonl", '{"a": 1}\n')
    write(tmp_path / "notes.txt", "x")
    with pytest.raises(DataError, match="is a directory, not a file; data files inside: train.jsonl$"):
        load_table(tmp_path)


def test_format_from_argument_and_unknown_extension(tmp_path):
    path = write(tmp_path / "data.txt", "a\tb\n1\t2\n")
    with pytest.raises(DataError, match="cannot tell the format from the extension .txt"):
        load_table(path)
    assert values(load_table(path, format="tsv")) == [["1", "2"]]
    assert load_table(path, format="TSV").attrs["format"] == "tsv"
    with pytest.raises(DataError, match="unknown format 'jsnl'; did you mean 'jsonl'"):
        load_table(path, format="jsnl")


def test_unsupported_source_type():
    with pytest.raises(DataError, match="cannot load a list"):
        load_table([{"a": 1}])  # type: ignore[arg-type]


def test_dataframe_input_is_copied():
    original = pd.DataFrame({" question ": ["q"], "answer": ["a"]})
    df = load_table(original)
    df.loc[0, "answer"] = "changed"
    assert original.loc[0, "answer"] == "a"
    assert list(original.columns) == [" question ", "answer"]
    assert list(df.columns) == ["question", "answer"]
    assert df.attrs == {"source": "DataFrame", "format": "dataframe"}
    with pytest.raises(DataError, match="no rows"):
        load_table(pd.DataFrame({"a": []}))


def test_reloading_a_loaded_frame_keeps_its_source(tmp_path):
    df = load_table(write(tmp_path / "t.csv", "a\n1\n"))
    assert load_table(df).attrs == {"source": str(tmp_path / "t.csv"), "format": "csv"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.csv", "a,b\n1,2\n"),
        ("bad.csv", "a,b\n1,2,3\n"),
        ("t.json", '[{"a": 1}]'),
        ("t.jsonl", '{"a": 1}\nbroken\n'),
        ("latin.csv", "a\ncaf\xe9\n".encode("latin-1")),
    ],
)
def test_file_unchanged_on_disk(tmp_path, name, content):
    path = write(tmp_path / name, content)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    path.chmod(0o444)
    try:
        load_table(path)
    except DataError:
        pass
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_parquet_unchanged_on_disk(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": ["x"]}).to_parquet(path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    load_table(path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


# -------------------------------------------------------------------------------------------------------- S3


@pytest.fixture
def s3(monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="nbt-data")
        yield client


def test_s3_csv_jsonl_parquet(s3):
    s3.put_object(Bucket="nbt-data", Key="in/train.csv", Body=b'q,a\n"multi\nline",HQ\n')
    s3.put_object(Bucket="nbt-data", Key="in/train.jsonl", Body=b'{"q": "x", "a": "LQ_EDIT"}\n')
    buffer = io.BytesIO()
    pd.DataFrame({"text": ["t"], "rating": ["LQ_CLOSE"]}).to_parquet(buffer, index=False)
    s3.put_object(Bucket="nbt-data", Key="in/so.parquet", Body=buffer.getvalue())

    df = load_table("s3://nbt-data/in/train.csv")  # default client
    assert values(df) == [["multi\nline", "HQ"]]
    assert df.attrs == {"source": "s3://nbt-data/in/train.csv", "format": "csv"}
    assert values(load_table("s3://nbt-data/in/train.jsonl", s3_client=s3)) == [["x", "LQ_EDIT"]]
    df = load_table("s3://nbt-data/in/so.parquet", s3_client=s3)
    assert values(df) == [["t", "LQ_CLOSE"]] and detect_schema(df) == "stackoverflow-preprocessed"


def test_s3_missing_key_and_bucket(s3):
    with pytest.raises(DataError, match=r"NoSuchKey") as info:
        load_table("s3://nbt-data/missing.csv", s3_client=s3)
    assert info.value.source == "s3://nbt-data/missing.csv"
    with pytest.raises(DataError, match=r"NoSuchBucket"):
        load_table("s3://other-bucket/x.csv", s3_client=s3)


def test_s3_bad_data_names_uri(s3):
    s3.put_object(Bucket="nbt-data", Key="bad.jsonl", Body=b'{"a": 1}\n{oops\n')
    with pytest.raises(DataError) as info:
        load_table("s3://nbt-data/bad.jsonl", s3_client=s3)
    assert (info.value.source, info.value.line) == ("s3://nbt-data/bad.jsonl", 2)


def test_s3_without_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    with pytest.raises(DataError, match=r"\(NoCredentials\)") as info:
        load_table("s3://nbt-data/train.csv")
    assert info.value.source == "s3://nbt-data/train.csv"


@pytest.mark.parametrize("uri", ["s3://", "s3://bucket", "s3://bucket/", "s3://bucket/folder/"])
def test_s3_bad_uri(uri):
    with pytest.raises(DataError, match="not an S3 object URI"):
        load_table(uri)


# --------------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["Id", "Title", "Body", "Tags", "CreationDate", "Y"], "kaggle-stackoverflow"),
        (["text", "rating"], "stackoverflow-preprocessed"),
        (["schemaVersion", "system", "messages"], "sft-converse"),
        (["id", "messages", "reference_answer", "difficulty"], "rft"),
        (["query", "response", "system", "metadata"], "eval"),
        (["text"], "cpt"),
        (["messages"], "chat"),
        (["question", "answer"], None),
        (["text", "rating", "extra"], None),
        (["Title", "Body", "Y"], None),
    ],
)
def test_detect_schema(columns, expected):
    assert detect_schema(pd.DataFrame(columns=columns)) == expected


def test_known_schemas_describe_every_detected_name():
    assert set(KNOWN_SCHEMAS) == {
        "kaggle-stackoverflow", "stackoverflow-preprocessed", "sft-converse", "rft", "eval", "cpt", "chat"
    }
    for name, schema in KNOWN_SCHEMAS.items():
        assert schema["description"] and schema["columns"], name
        assert detect_schema(pd.DataFrame(columns=schema["columns"])) == name
        for target, column in schema.get("mapping", {}).items():
            if target == "separator":
                continue
            wanted = column if isinstance(column, list) else [column]
            assert set(wanted) <= set(schema["columns"]), (name, target)
    kaggle = {"question": ["Title", "Body"], "answer": "Y", "separator": "\n\n"}
    assert KNOWN_SCHEMAS["kaggle-stackoverflow"]["mapping"] == kaggle
    assert KNOWN_SCHEMAS["stackoverflow-preprocessed"]["mapping"] == {"question": "text", "answer": "rating"}


def test_require_columns():
    df = pd.DataFrame(columns=["Id", "Title", "Body"])
    df.attrs["source"] = "train.csv"
    require_columns(df, ["Title", "Body"])
    with pytest.raises(DataError) as info:
        require_columns(df, ["Titel", "Body"])
    assert str(info.value) == (
        "train.csv: unknown column 'Titel'; did you mean 'Title'? (available: 'Id', 'Title', 'Body')"
    )
    with pytest.raises(DataError, match=r"'Titel' \(did you mean 'Title'\?\), 'Y' \(available"):
        require_columns(df, ["Titel", "Y"], source="other.csv")
    with pytest.raises(DataError, match="did you mean 'Body'"):
        require_columns(df, "body")


# ------------------------------------------------------------------------------------------ as_text_column


def test_as_text_column_converts_safe_values():
    df = pd.DataFrame({"label": pd.Series([3, 2.0, 0.25, True, "HQ", np.int64(7), np.float32(0.5)],
                                          dtype=object)})
    assert as_text_column(df, "label").tolist() == ["3", "2", "0.25", "True", "HQ", "7", "0.5"]
    assert as_text_column(pd.DataFrame({"n": [1, 2]}), "n").tolist() == ["1", "2"]
    assert as_text_column(pd.DataFrame({"f": [1.0, 2.0]}), "f").tolist() == ["1", "2"]
    strings = pd.DataFrame({"s": ["a", "b"]})
    assert as_text_column(strings, "s").tolist() == ["a", "b"]
    others = pd.Series([Decimal("4.0"), Decimal("0.10"), pd.Timestamp("2016-01-02")], dtype=object)
    assert as_text_column(pd.DataFrame({"o": others}), "o").tolist() == ["4", "0.10", "2016-01-02 00:00:00"]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [(None, "missing value"), (float("nan"), "missing value"), (float("inf"), "not a finite number"),
     ({"a": 1}, "is an object, not text"), ([1, 2], "is a list, not text"), (b"x", "bytes"),
     (np.array([1]), "is a list, not text"), (Decimal("NaN"), "missing value"), (object(), "is of type object")],
)
def test_as_text_column_rejects_unsafe_values(bad, fragment):
    df = pd.DataFrame({"label": pd.Series(["HQ", bad], dtype=object)})
    df.attrs["source"] = "rows.json"
    with pytest.raises(DataError) as info:
        as_text_column(df, "label")
    assert (info.value.source, info.value.row, info.value.column) == ("rows.json", 2, "label")
    assert fragment in info.value.message


@pytest.mark.parametrize("dtype", [str, "string", object])
def test_as_text_column_rejects_missing_in_string_columns(dtype):
    with pytest.raises(DataError, match="missing value") as info:
        as_text_column(pd.DataFrame({"text": pd.Series(["a", None], dtype=dtype)}), "text")
    assert info.value.row == 2


def test_as_text_column_on_loaded_json_labels(tmp_path):
    path = write(tmp_path / "t.jsonl", '{"y": 1}\n{"y": 2.0}\n{"y": null}\n')
    df = load_table(path)
    with pytest.raises(DataError) as info:
        as_text_column(df, "y")
    assert str(info.value) == f"{path}, row 3, column 'y': missing value"
    with pytest.raises(DataError, match="unknown column 'Y'; did you mean 'y'"):
        as_text_column(df, "Y")


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.shared
def test_shared_stackoverflow_parquet():
    if not SO_PARQUET.is_file():
        pytest.skip(f"shared data not present: {SO_PARQUET}")
    df = load_table(SO_PARQUET)
    assert len(df) == 6750
    assert list(df.columns) == ["text", "rating"]
    assert detect_schema(df) == "stackoverflow-preprocessed"
    assert df["rating"].value_counts().to_dict() == {"HQ": 2250, "LQ_EDIT": 2250, "LQ_CLOSE": 2250}
    assert as_text_column(df, "text").str.len().min() > 0


@pytest.mark.shared
def test_shared_unquoted_tsv():
    path = SHARED_DATA / "sst2" / "train.tsv"
    if not path.is_file():
        pytest.skip(f"shared data not present: {path}")
    df = load_table(path)
    assert list(df.columns) == ["sentence", "label"]
    assert len(df) == 67_349
    assert set(df["label"]) == {"0", "1"}

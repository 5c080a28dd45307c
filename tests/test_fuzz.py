"""Property-based fuzzing of everything a user feeds in: files to load, tables to prepare, chat requests.

Each test asserts that only success or one of nbtoolkit's own errors (`NbtoolkitError`) comes out, and that
success never writes a NUL, a BOM or an unstripped answer and never touches the input. The default example
counts (30 each) keep each test at a few seconds; `NBTOOLKIT_FUZZ_EXAMPLES=1000` raises them, and
`NBTOOLKIT_FUZZ_CENSUS=path.json` counts outcomes (raw exceptions included) instead of failing on the first.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtoolkit.data.loaders import load_table
from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.prepare import PrepareConfig, prepare_dataset
from nbtoolkit.errors import NbtoolkitError

EXAMPLES = int(os.environ.get("NBTOOLKIT_FUZZ_EXAMPLES", "30"))
CENSUS_PATH = os.environ.get("NBTOOLKIT_FUZZ_CENSUS")
# database=None: no .hypothesis/ folder in the repository; a failure prints its example anyway.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CENSUS: Counter[str] = Counter()


def _write_census() -> None:
    if CENSUS_PATH and CENSUS:
        previous = json.loads(Path(CENSUS_PATH).read_text()) if Path(CENSUS_PATH).exists() else {}
        merged = Counter(previous) + CENSUS
        Path(CENSUS_PATH).write_text(json.dumps(dict(sorted(merged.items())), indent=2))


atexit.register(_write_census)


def outcome(target: str, call) -> object | None:
    """Run `call`; return its result, None for an NbtoolkitError; anything else fails (or is counted)."""
    try:
        result = call()
    except NbtoolkitError as error:
        CENSUS[f"{target}: {type(error).__name__}"] += 1
        return None
    except Exception as error:  # noqa: BLE001 - what the fuzzer looks for
        CENSUS[f"{target}: RAW {type(error).__name__}"] += 1
        if CENSUS_PATH:
            return None
        raise
    CENSUS[f"{target}: ok"] += 1
    return result


# ------------------------------------------------------------------------------------------------ strategies

# Characters and pieces that have broken parsers, writers or the chat template before.
NASTY = ["\x00", "\ufeff", "\u200b", "\u00a0", "\t", "\r", "\n", "\r\n", '"', ",", "\\", "\ud800", "\udfff",
         "User:", "currentUser:", "Assistant:", "<im<unk>age>", "<image>", "[EOS]", "<unk>", "Thought:",
         "é", "€", "\u2028", "{", "}", "[", "]", "null", " ", "HQ", "hq", "HQ ", "LQ-EDIT", "LQ_EDIT"]
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=3)), max_size=12).map("".join)
COLUMNS = ["question", "answer", "text", "label", "sentence", "prompt", "completion", "Id", "Y", "Title",
           "Body", "query", "response", "", " answer", "__index_level_0__"]
# Column sets users really have; the first names the text, the last the label.
SHAPES = [("question", "answer"), ("text", "label"), ("sentence", "label"), ("prompt", "completion"),
          ("Title", "Body", "Y"), ("text",), ("query", "response"), ("text", "rating")]
LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE", "yes", "no", "positive", "negative"]
# Mostly clean labels, sometimes a stray variant: what a real label column looks like.
label_cells = st.sampled_from(["HQ"] * 6 + ["LQ_EDIT"] * 6 + ["LQ_CLOSE"] * 6 + [
    "HQ ", " HQ", "HQ\t", "HQ\u00a0", "\u200bHQ", "hq", "LQ-EDIT", "LQ_EDTI", "LQ_CLOS", "H", "HQ\x00", "\ufeffHQ"])
text_cells = st.one_of(nasty_text, st.sampled_from(["How do I sort a list?", "Why is my loop slow?", "<p>hi</p>"]),
                       st.text(min_size=1, max_size=12))
odd_cells = st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.just(""))


@st.composite
def tables(draw) -> pd.DataFrame:
    """Small tables: usually a real shape with mostly clean labels, sometimes anything."""
    if draw(st.integers(0, 3)):
        columns = list(draw(st.sampled_from(SHAPES)))
    else:
        columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4, unique=True))
    n_rows = draw(st.integers(1, 24))
    data = {}
    for position, column in enumerate(columns):
        is_label = position == len(columns) - 1 and len(columns) > 1
        cells = st.one_of(label_cells if is_label else text_cells, odd_cells) if draw(st.integers(0, 4)) == 0 \
            else (label_cells if is_label else text_cells)
        data[column] = draw(st.lists(cells, min_size=n_rows, max_size=n_rows))
    return pd.DataFrame(data, dtype=object)


mappings = st.one_of(
    st.none(),
    st.builds(lambda q, a: ColumnMapping(question=q, answer=a),
              st.sampled_from(["question", "text", "sentence", "Title"]), st.sampled_from(["answer", "label", "Y"])),
    st.builds(lambda t: ColumnMapping(text=t), st.sampled_from(["text", "question"])),
    st.fixed_dictionaries({"question": st.just("question"), "answer": st.just("answer")}),
)
config_kwargs = st.fixed_dictionaries({}, optional={
    "mapping": mappings,
    "labels": st.one_of(st.none(), st.just("yes"), st.lists(st.sampled_from(LABELS), max_size=3).map(tuple),
                        st.lists(nasty_text, max_size=2)),
    "split": st.sampled_from([None, "sft-eval-rft"]),
    "seed": st.one_of(st.integers(-(2**70), 2**70), st.just("1"), st.just(1.5), st.just(True), st.none()),
    "reserved": st.sampled_from(["rewrite", "drop", "reject"]),
    "encoding": st.sampled_from([None, "utf-8", "cp1252", "latin-1", "no-such-codec"]),
})
FILE_KINDS = ["csv", "tsv", "jsonl", "json", "parquet"]


def _plain(value):
    return None if isinstance(value, float) and value != value else value


def write_table(frame: pd.DataFrame, path: Path, kind: str, encoding: str | None) -> None:
    """Write `frame` as a user's tool would, lone surrogates and all (Parquet cannot hold them)."""
    records = [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def cell(value):
            return None if value is None else str(value).encode("utf-8", "replace").decode("utf-8")

        columns = {c: pa.array([cell(r[c]) for r in records], type=pa.string()) for c in frame.columns}
        pq.write_table(pa.table(columns), path)
        return
    if kind == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif kind == "json":
        text = json.dumps(records, ensure_ascii=False)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if kind == "csv" else "\t")
        writer.writerow(frame.columns)
        writer.writerows([["" if v is None else v for v in r.values()] for r in records])
        text = buffer.getvalue()
    path.write_bytes(text.encode(encoding or "utf-8", "surrogatepass" if encoding is None else "replace"))


# ------------------------------------------------------------------------------------------------ loaders


@FUZZ
@given(frame=tables(), kind=st.sampled_from(FILE_KINDS), encoding=st.sampled_from([None, "cp1252", "utf-16"]),
       read_encoding=st.sampled_from([None, "utf-8", "cp1252", "latin-1", "bogus"]))
def test_loading_any_table_file_gives_a_frame_or_a_data_error(tmp_path, frame, kind, encoding, read_encoding):
    path = tmp_path / f"input.{kind}"
    write_table(frame, path, kind, encoding)
    outcome("load_table", lambda: load_table(path, encoding=read_encoding))


@FUZZ
@given(data=st.binary(max_size=300), kind=st.sampled_from(["csv", "jsonl", "json", "parquet"]),
       prefix=st.sampled_from([b"", codecs.BOM_UTF8, b'{"text": "\\ud800"}\n', b"text,label\n"]))
def test_loading_any_bytes_gives_a_frame_or_a_data_error(tmp_path, data, kind, prefix):
    path = tmp_path / f"bytes.{kind}"
    path.write_bytes(prefix + data)
    outcome("load_table", lambda: load_table(path))


# ------------------------------------------------------------------------------------------------ prepare


def check_written(out: Path) -> None:
    """Written JSONL is strict UTF-8 without NUL or BOM, and every chat answer is stripped."""
    for path in out.rglob("*.jsonl"):
        text = path.read_bytes().decode("utf-8")
        assert "\x00" not in text and "\ufeff" not in text, path
        for line in text.split("\n")[:-1]:  # not splitlines(): JSON strings may hold U+2028
            record = json.loads(line)
            json.dumps(record).encode("utf-8")  # no lone surrogates
            if path.name == "chat.jsonl" and record["messages"][-1]["role"] == "assistant":
                answer = record["messages"][-1]["content"]
                assert answer == answer.strip() and "\u200b" not in answer, (path, answer)


@FUZZ
@given(frame=tables(), kind=st.sampled_from(FILE_KINDS), kwargs=config_kwargs, inside=st.booleans(),
       overwrite=st.booleans())
def test_prepare_any_table_gives_files_or_a_clear_error_and_never_touches_the_input(
        tmp_path, frame, kind, kwargs, inside, overwrite):
    out = tmp_path / "out"
    folder = out if inside else tmp_path / "in"
    folder.mkdir(exist_ok=True)
    path = folder / f"input.{kind}"
    write_table(frame, path, kind, None)
    before = path.read_bytes()
    config = outcome("PrepareConfig", lambda: PrepareConfig(**kwargs))
    if config is None:
        return
    prepared = outcome("prepare_dataset", lambda: prepare_dataset(path, config, out_dir=out, overwrite=overwrite))

    def input_kept() -> None:
        assert path.exists() and path.read_bytes() == before, "the input file changed"

    outcome("input kept", input_kept)
    if prepared is not None:
        outcome("output clean", lambda: check_written(out))


@FUZZ
@given(frame=tables(), kwargs=config_kwargs)
def test_prepare_any_dataframe_in_memory(frame, kwargs):
    config = outcome("PrepareConfig", lambda: PrepareConfig(**kwargs))
    if config is not None:
        outcome("prepare_dataset", lambda: prepare_dataset(frame, config))


# ------------------------------------------------------------------------------------------------ server


class FakeEngine:
    """Stands in for the model: the schema and checks are what is fuzzed, not generation."""

    name = "fuzz-model"
    created = 0
    context_length = 64
    sampling = {"temperature": 1.0, "top_p": 1.0, "source": "test"}

    def settings(self, **values):
        from nbtoolkit.serve.engine import ChatEngine

        return ChatEngine.settings(self, **values)

    def encode(self, messages):
        return [1] * sum(1 + len(m["content"]) // 8 for m in messages)

    def check(self, prompt, settings):
        from nbtoolkit.serve.engine import ChatEngine

        return ChatEngine.check(self, prompt, settings)

    def stream(self, prompt, settings, completion):
        import torch

        # What the real engine does with these: a bool max_tokens or an out-of-range seed fails here.
        assert type(settings.max_tokens) is int and settings.max_tokens >= 1
        if settings.seed is not None:
            torch.Generator().manual_seed(settings.seed)
        completion.text, completion.finish_reason = "ok", "stop"
        yield "ok"


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nbtoolkit.serve.app import create_app

    with TestClient(create_app(FakeEngine(), default_max_tokens=8, max_tokens_limit=32),
                    raise_server_exceptions=False) as test_client:
        yield test_client


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), nasty_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "developer", "tool", 1]),
                                 "content": st.one_of(nasty_text, json_values)})
request_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"messages": st.lists(message, max_size=3)}, optional={
        key: json_values for key in ("model", "stream", "max_tokens", "max_completion_tokens", "temperature",
                                     "top_p", "stop", "seed", "n", "logprobs", "tools", "stream_options")}),
    st.fixed_dictionaries({"messages": st.just([{"role": "user", "content": "hi"}])}, optional={
        "max_tokens": st.one_of(st.booleans(), st.integers(-2, 40), st.floats(0, 40), st.just("8")),
        "seed": st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.floats()),
        "temperature": st.one_of(st.floats(-1, 3), st.booleans()),
        "stream": st.booleans()}),
)


@FUZZ
@given(body=request_bodies)
def test_any_chat_request_gets_a_reply_or_an_openai_shaped_4xx(client, body):
    def post():
        response = client.post("/v1/chat/completions", content=json.dumps(body, allow_nan=True),
                               headers={"Content-Type": "application/json"})
        if response.status_code >= 500:
            raise AssertionError(f"{response.status_code}: {response.text}")
        if response.status_code != 200:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], error
            assert 400 <= response.status_code < 500
            CENSUS[f"server status: {response.status_code}"] += 1
        return response

    outcome("server", post)


@FUZZ
@given(junk=st.binary(max_size=200))
def test_any_bytes_posted_get_a_4xx_not_a_500(client, junk):
    response = client.post("/v1/chat/completions", content=junk, headers={"Content-Type": "application/json"})
    CENSUS[f"server bytes status: {response.status_code}"] += 1
    if not CENSUS_PATH:
        assert 400 <= response.status_code < 500 and "error" in response.json()


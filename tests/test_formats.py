import json
import os

import pandas as pd
import pytest

from nbtoolkit.data.formats import dumps_record, read_jsonl, standard_rows, transform, write_jsonl
from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.rows import number_rows
from nbtoolkit.errors import DataError

FRAME = pd.DataFrame({"Title": ["Loop fails"], "Body": ["for i in x: pass"], "Y": ["HQ"], "Id": [7],
                      "Tags": ["<python>"]})
MAPPING = ColumnMapping(question=("Title", "Body"), answer="Y", system_prompt="Classify.", id="Id",
                        metadata=("Tags",))


@pytest.fixture
def rows():
    return standard_rows(number_rows(FRAME), MAPPING, "sft")


# Golden lines: the exact bytes written for each service format (docs/nova-data-formats.md).
GOLDEN = {
    "converse": '{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Classify."}], "messages": '
                '[{"role": "user", "content": [{"text": "Loop fails\\n\\nfor i in x: pass"}]}, {"role": '
                '"assistant", "content": [{"text": "HQ"}]}]}',
    "rft": '{"id": "7", "messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": '
           '"Loop fails\\n\\nfor i in x: pass"}], "reference_answer": "HQ", "Tags": "<python>"}',
    "gen_qa": '{"query": "Loop fails\\n\\nfor i in x: pass", "response": "HQ", "system": "Classify.", '
              '"metadata": "<python>"}',
    "cpt": '{"text": "Loop fails\\n\\nfor i in x: pass\\n\\nHQ"}',
    "chat": '{"messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": "Loop fails'
            '\\n\\nfor i in x: pass"}, {"role": "assistant", "content": "HQ"}], "id": "7", "metadata": '
            '{"Tags": "<python>"}}',
}


@pytest.mark.parametrize("fmt", sorted(GOLDEN))
def test_golden_rows(rows, fmt):
    (record,) = transform(rows, fmt)
    assert dumps_record(record) == GOLDEN[fmt]


def test_rft_does_not_leak_the_question_into_extra_fields(rows):
    (record,) = transform(rows, "rft")
    extras = set(record) - {"id", "messages", "reference_answer"}
    assert extras == {"Tags"}
    assert all("Loop fails" not in str(record[k]) for k in extras)


def test_rft_default_system_prompt_and_no_id_when_unmapped():
    frame = number_rows(pd.DataFrame({"question": ["q"], "answer": ["a"]}))
    (record,) = transform(standard_rows(frame, ColumnMapping(question="question", answer="answer"), "rft"), "rft")
    assert record == {"messages": [{"role": "system", "content": "You are a helpful AI assistant."},
                                   {"role": "user", "content": "q"}], "reference_answer": "a"}


def test_converse_without_system_omits_the_key():
    frame = number_rows(pd.DataFrame({"question": ["q"], "answer": ["a"]}))
    (record,) = transform(standard_rows(frame, ColumnMapping(question="question", answer="answer"), "sft"),
                          "converse")
    assert list(record) == ["schemaVersion", "messages"]


def test_gen_qa_with_several_metadata_columns_is_a_json_string():
    frame = number_rows(pd.DataFrame({"q": ["x"], "a": ["y"], "m1": [1], "m2": ["b"]}))
    mapping = ColumnMapping(question="q", answer="a", metadata=("m1", "m2"))
    (record,) = transform(standard_rows(frame, mapping, "eval"), "gen_qa")
    assert set(record) == {"query", "response", "metadata"}
    assert json.loads(record["metadata"]) == {"m1": 1, "m2": "b"}


def test_integer_labels_become_text_and_missing_ones_name_the_row():
    frame = number_rows(pd.DataFrame({"q": ["x", "y"], "a": [1, 2]}))
    rows = standard_rows(frame, ColumnMapping(question="q", answer="a"), "sft")
    assert rows["answer"].tolist() == ["1", "2"]
    bad = number_rows(pd.DataFrame({"q": ["x", "y"], "a": [1.0, None]}))
    with pytest.raises(DataError, match="row 2"):
        standard_rows(bad, ColumnMapping(question="q", answer="a"), "sft")


def test_write_jsonl_is_atomic_and_round_trips(tmp_path, rows):
    path = tmp_path / "out" / "sft.jsonl"
    records = transform(rows, "converse")
    write_jsonl(records, path)
    assert list(read_jsonl(path)) == records
    assert path.read_bytes().endswith(b"\n") and b"\r" not in path.read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by whoever may read this folder, not 0600

    def broken():
        yield records[0]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(broken(), path)
    assert list(read_jsonl(path)) == records  # the old file survived
    assert [p.name for p in path.parent.iterdir()] == ["sft.jsonl"]


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        transform(pd.DataFrame(), "sharegpt")

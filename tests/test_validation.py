import copy

import pytest

from nbtoolkit.data.validation import validate_records

CONVERSE = {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Classify."}],
            "messages": [{"role": "user", "content": [{"text": "question"}]},
                         {"role": "assistant", "content": [{"text": "HQ"}]}]}
RFT = {"id": "1", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
       "reference_answer": "HQ"}
GEN_QA = {"query": "q", "response": "HQ", "system": "s"}


def rules(report):
    return [(p.rule, p.row, p.field, p.severity) for p in report.problems]


def many(record, n=3):
    out = []
    for i in range(n):
        r = copy.deepcopy(record)
        if "messages" in r and r["messages"][0]["role"] == "user":
            r["messages"][0]["content"][0]["text"] = f"question {i}"
        elif "query" in r:
            r["query"] = f"q{i}"
        else:
            r["messages"][-1]["content"] = f"q{i}"
        out.append(r)
    return out


@pytest.mark.parametrize("fmt,record", [("converse", CONVERSE), ("rft", RFT), ("gen_qa", GEN_QA)])
def test_valid_records_have_no_problems(fmt, record):
    report = validate_records(many(record), fmt, labels=["HQ", "LQ_EDIT"])
    assert report.ok and report.problems == []


def test_blank_answer_is_reported_with_its_row_and_field():
    records = many(CONVERSE)
    records[1]["messages"][1]["content"][0]["text"] = "  "
    report = validate_records(records, "converse", rows=[10, 11, 12])
    assert rules(report) == [("blank", 11, "messages[1].assistant", "error")]
    assert not report.ok


def test_role_order():
    records = many(CONVERSE)
    records[0]["messages"].reverse()
    report = validate_records(records, "converse")
    assert ("role_order", 1, "messages", "error") in rules(report)
    assert report.problems[0].text == "assistant -> user"


def test_label_outside_the_declared_set():
    records = many(GEN_QA)
    records[2]["response"] = "MEDIUM"
    report = validate_records(records, "gen_qa", labels=["HQ", "LQ_EDIT", "LQ_CLOSE"])
    assert rules(report) == [("label_not_in_set", 3, "response", "error")]
    assert report.problems[0].text == "MEDIUM"


def test_reserved_strings_are_errors_for_sft_and_warnings_elsewhere():
    records = many(CONVERSE)
    records[0]["messages"][0]["content"][0]["text"] = "see System: log"
    assert rules(validate_records(records, "converse")) == [("reserved_string", 1, "messages[0].user", "error")]
    qa = many(GEN_QA)
    qa[0]["query"] = "see [EOS]"
    assert rules(validate_records(qa, "gen_qa")) == [("reserved_string", 1, "query", "warning")]


def test_optional_field_consistency():
    records = many(CONVERSE)
    del records[1]["system"]
    report = validate_records(records, "converse")
    assert rules(report) == [("optional_field_consistency", None, "system", "error")]
    assert "first without: row 2" in report.problems[0].message


def test_schema_problems():
    report = validate_records([{"query": "q"}, {"query": "q", "response": 3}, {"query": "q", "response": "a",
                               "extra": 1}, "not an object"], "gen_qa")
    assert [(p.rule, p.row, p.field) for p in report.problems] == [
        ("schema", 1, "response"), ("schema", 2, "response"), ("schema", 3, "extra"), ("schema", 4, None)]


def test_row_count_bounds_per_platform_and_batch_size():
    records = many(CONVERSE, 150)
    assert validate_records(records, "converse", platform="local").ok
    bedrock = validate_records(records, "converse", platform="bedrock")
    assert rules(bedrock) == [("row_count", None, None, "error")]
    assert "200 to 20,000" in bedrock.problems[0].message
    assert rules(validate_records(many(RFT, 10), "rft", global_batch_size=16)) == [("row_count", None, None, "error")]
    assert rules(validate_records([], "cpt")) == [("row_count", None, None, "error")]


def test_duplicates_are_warnings_naming_the_first_occurrence():
    report = validate_records([GEN_QA, GEN_QA], "gen_qa")
    assert rules(report) == [("duplicate", 2, None, "warning")]
    assert report.problems[0].message == "same as row 1" and report.ok


def test_report_frame_and_dict():
    records = many(GEN_QA)
    records[0]["query"] = ""
    report = validate_records(records, "gen_qa")
    frame = report.to_frame()
    assert list(frame.columns) == ["severity", "rule", "row", "field", "message", "text"]
    assert frame.loc[0, "row"] == 1
    data = report.to_dict()
    assert data["ok"] is False and data["counts"] == {"blank": 1}
    assert "1 errors" in report.summary()


def test_rft_must_end_with_the_user_prompt():
    record = copy.deepcopy(RFT)
    record["messages"].append({"role": "assistant", "content": "HQ"})
    assert ("role_order", 1, "messages", "error") in rules(validate_records([record], "rft"))


def test_unknown_format_and_platform():
    with pytest.raises(ValueError):
        validate_records([], "alpaca")
    with pytest.raises(ValueError):
        validate_records([], "gen_qa", platform="azure")

import pandas as pd
import pytest

from nbtoolkit.data.mapping import ColumnMapping, infer_mapping
from nbtoolkit.errors import DataError


def test_for_method_translates_service_key_names():
    mapping = ColumnMapping.for_method("eval", query="Body", response="Y", system="sys")
    assert mapping.question == ("Body",) and mapping.answer == ("Y",) and mapping.system == "sys"
    assert mapping.method_keys("eval") == {"query": ["Body"], "response": ["Y"], "system": "sys"}
    assert mapping.method_keys("rft") == {"question": ["Body"], "reference_answer": ["Y"], "system": "sys"}


def test_for_method_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean 'response'"):
        ColumnMapping.for_method("eval", query="q", respnse="a")


def test_system_column_and_constant_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        ColumnMapping(question="q", answer="a", system="s", system_prompt="be brief")


def test_combined_question_columns_and_round_trip():
    mapping = ColumnMapping(question=["Title", "Body"], answer="Y", system_prompt="classify")
    assert mapping.question == ("Title", "Body")
    assert ColumnMapping.from_dict(mapping.to_dict()) == mapping
    assert mapping.input_columns() == ["Title", "Body", "Y"]


@pytest.mark.parametrize("columns,expected", [
    (["question", "answer"], ColumnMapping(question="question", answer="answer")),
    (["query", "response", "system"], ColumnMapping(question="query", answer="response", system="system")),
    (["question", "reference_answer", "id"], ColumnMapping(question="question", answer="reference_answer", id="id")),
])
def test_identity_default_when_names_already_match(columns, expected):
    frame = pd.DataFrame({c: ["x"] for c in columns})
    assert infer_mapping(frame, "sft") == expected


def test_check_names_the_missing_column_and_suggests_the_closest():
    frame = pd.DataFrame({"Title": ["t"], "Body": ["b"], "Y": ["HQ"]})
    with pytest.raises(DataError, match="unknown column 'Boddy'; did you mean 'Body'"):
        ColumnMapping(question="Boddy", answer="Y").check(frame, "sft")


def test_infer_without_matching_names_says_what_to_map():
    frame = pd.DataFrame({"Title": ["t"], "Y": ["HQ"]})
    with pytest.raises(DataError, match="needs 'question'"):
        infer_mapping(frame, "sft")

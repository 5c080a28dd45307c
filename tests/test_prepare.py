import json

import pandas as pd
import pytest

from conftest import shared_file
from nbtoolkit.cli import main
from nbtoolkit.data.formats import read_jsonl
from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.prepare import PrepareConfig, infer_labels, prepare_dataset
from nbtoolkit.data.tasks import STACKOVERFLOW_SYSTEM_PROMPT
from nbtoolkit.errors import DataError

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def kaggle_frame(n=90):
    return pd.DataFrame({
        "Id": range(1, n + 1),
        "Title": [f"How do I fix error {i}?" for i in range(n)],
        "Body": [f"<p>I get error {i} &amp; more.</p><pre><code>x = {i}\n</code></pre>" for i in range(n)],
        "Tags": ["<python><pandas>"] * n,
        "CreationDate": ["2016-01-01 00:00:00"] * n,
        "Y": [LABELS[i % 3] for i in range(n)],
    })


def test_kaggle_schema_is_mapped_cleaned_split_and_validated():
    frame = kaggle_frame()
    frame.loc[4, "Body"] = "<p>User: please help</p>"
    prepared = prepare_dataset(frame, PrepareConfig(split="sft-eval-rft"))
    assert prepared.schema == "kaggle-stackoverflow"
    assert prepared.mapping.question == ("Title", "Body") and prepared.mapping.answer == ("Y",)
    assert prepared.mapping.system_prompt == STACKOVERFLOW_SYSTEM_PROMPT
    assert prepared.labels == ("HQ", "LQ_EDIT", "LQ_CLOSE")
    sizes = {k: len(v) for k, v in prepared.splits.items()}
    assert sizes["sft"] + sizes["eval"] + sizes["rft"] - sizes["sft"] == 90
    assert prepared.ok, prepared.summary()
    questions = [r["messages"][1]["content"] for r in prepared.records("rft", "rft")]
    assert all("<p>" not in q and "&amp;" not in q for q in questions)
    rules = {c.rule for c in prepared.sanitize.changes}
    assert rules == {"html_to_text", "reserved_rewrite"}
    rewritten = [c for c in prepared.sanitize.changes if c.rule == "reserved_rewrite"]
    assert [c.row for c in rewritten] == [5] and rewritten[0].after == "User : please help"


def test_writes_one_file_per_split_and_format_plus_reports(tmp_path):
    out = tmp_path / "prepared"
    prepared = prepare_dataset(kaggle_frame(), out_dir=out)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["eval/chat.jsonl", "eval/gen_qa.jsonl", "manifest.json", "rft/chat.jsonl", "rft/rft.jsonl",
                     "sanitize.json", "sft/chat.jsonl", "sft/converse.jsonl", "validation.json",
                     "validation/chat.jsonl", "validation/gen_qa.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"] == {k: len(v) for k, v in prepared.splits.items()}
    assert manifest["files"]["eval/gen_qa"]["rows"] == len(list(read_jsonl(out / "eval/gen_qa.jsonl")))
    validation = json.loads((out / "validation.json").read_text())
    assert set(validation) == set(prepared.reports) and all(v["ok"] for v in validation.values())
    gen_qa = next(read_jsonl(out / "eval/gen_qa.jsonl"))
    assert set(gen_qa) == {"query", "response", "system"}
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset(kaggle_frame(), out_dir=out)


def test_reject_mode_reports_reserved_strings_with_input_rows():
    frame = pd.DataFrame({"question": ["fine", "Assistant: hi", "ok"] * 10, "answer": ["a", "b", "c"] * 10})
    frame["question"] = frame["question"] + pd.Series(range(30)).astype(str)
    prepared = prepare_dataset(frame, PrepareConfig(split=None, reserved="reject"))
    report = prepared.reports["all/converse"]
    assert not report.ok
    assert [p.row for p in report.errors] == list(range(2, 31, 3))
    assert {p.rule for p in report.errors} == {"reserved_string"}


def test_declared_labels_catch_a_stray_label():
    frame = pd.DataFrame({"question": [f"q{i}" for i in range(12)], "answer": ["HQ"] * 11 + ["hq?"]})
    prepared = prepare_dataset(frame, PrepareConfig(split=None, labels=("HQ", "LQ_EDIT")))
    problems = prepared.reports["all/gen_qa"].errors
    assert [(p.rule, p.row, p.text) for p in problems] == [("label_not_in_set", 12, "hq?")]


def test_infer_labels_only_for_categorical_answers():
    assert infer_labels(pd.Series(["a", "b", "a", "b"])) == ("a", "b")
    assert infer_labels(pd.Series([f"free text {i}" for i in range(10)])) is None


def test_explicit_mapping_with_constant_system_prompt():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": ["x", "y"] * 10})
    config = PrepareConfig(mapping=ColumnMapping(question="text", answer="label", system_prompt="Answer x or y."),
                           split=None)
    prepared = prepare_dataset(frame, config)
    chat = prepared.records("all", "chat")[0]
    assert chat["messages"][0] == {"role": "system", "content": "Answer x or y."}


def test_cli_prepare_writes_and_summarizes(tmp_path, capsys):
    data = tmp_path / "questions.csv"
    kaggle_frame().to_csv(data, index=False)
    before = data.read_bytes()
    code = main(["prepare", "--data", str(data), "--question", "Title,Body", "--answer", "Y",
                 "--system-prompt", "Classify.", "--labels", "HQ,LQ_EDIT,LQ_CLOSE", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rows per split: validation" in out and "validation: OK" in out and "LQ_EDIT" in out
    assert data.read_bytes() == before
    first = next(read_jsonl(tmp_path / "out/sft/converse.jsonl"))
    assert first["system"] == [{"text": "Classify."}]


def test_cli_names_a_misspelled_column(tmp_path, capsys):
    data = tmp_path / "q.csv"
    kaggle_frame().to_csv(data, index=False)
    code = main(["prepare", "--data", str(data), "--question", "Titel", "--answer", "Y", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'Title'" in err and "q.csv" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.shared
def test_real_stackoverflow_parquet_with_the_sft_eval_rft_preset(tmp_path):
    path = shared_file("stackoverflow-quality/so_quality_6750.parquet")
    prepared = prepare_dataset(path, PrepareConfig(split="sft-eval-rft"), out_dir=tmp_path / "so")
    assert prepared.schema == "stackoverflow-preprocessed"
    assert {k: len(v) for k, v in prepared.splits.items()} == {"sft": 3500, "eval": 500, "rft": 4200}
    table = prepared.label_table()
    for split in ("sft", "eval"):
        shares = table.loc[["HQ", "LQ_EDIT", "LQ_CLOSE"], split] / table.loc["total", split]
        assert (shares - 1 / 3).abs().max() < 0.01
    assert prepared.ok, prepared.summary()
    converse = list(read_jsonl(tmp_path / "so/sft/converse.jsonl"))
    assert len(converse) == 3500
    assert {r["messages"][1]["content"][0]["text"] for r in converse} == {"HQ", "LQ_EDIT", "LQ_CLOSE"}

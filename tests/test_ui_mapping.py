"""ColumnMappingForm without a browser: set widget values, click buttons, check the config, preview and report."""

from __future__ import annotations

import html
import json

import pandas as pd
import pytest

pytest.importorskip("ipywidgets")

from nbtoolkit.data import ColumnMapping, PrepareConfig, make_stackoverflow_dataset, read_jsonl  # noqa: E402
from nbtoolkit.ui import ColumnMappingForm  # noqa: E402


@pytest.fixture(scope="module")
def stackoverflow() -> pd.DataFrame:
    return make_stackoverflow_dataset(120, seed=0)


def _texts(output) -> str:
    return json.dumps(output.outputs)


def _plain(widget) -> str:
    return html.unescape(widget.value)


def test_known_schema_is_suggested_and_previewed(stackoverflow):
    form = ColumnMappingForm(stackoverflow)
    assert (form.question.value, list(form.question_more.value), form.answer.value) == ("Title", ["Body"], "Y")
    assert form.system_prompt.value.startswith("This is a stack overflow question")
    config = form.value
    assert isinstance(config, PrepareConfig) and config.split == "sft-eval-rft"
    assert config.mapping == ColumnMapping(question=("Title", "Body"), answer="Y",
                                           system_prompt=form.system_prompt.value)
    assert "schemaVersion" in form.preview.value and "rows 1-3 of 120" in form.preview.value
    assert "converse: 120 rows, 0 errors" in form.report.value
    assert "labels (inferred): HQ, LQ_EDIT, LQ_CLOSE" in form.report.value
    assert "html_to_text" in form.report.value  # the sanitizer's work is reported
    for css in ("nbt-mapping-form",):
        assert css in form.widget._dom_classes
    assert "nbt-field-question" in form.question._dom_classes and "nbt-preview" in form.preview._dom_classes


def test_changing_a_dropdown_updates_preview_and_report(stackoverflow):
    form = ColumnMappingForm(stackoverflow)
    form.question_more.value = []
    preview = form.preview.value
    assert "Body" not in form.value.mapping.question and preview
    form.answer.value = "Tags"  # not a label column: every row breaks the declared label set
    assert form.value.mapping.answer == ("Tags",)
    assert "FAILED" in form.report.value and "label_not_in_set" in form.report.value
    assert form.problems.value == ""
    form.show_problems.value = True  # the offending rows, on demand
    assert "label_not_in_set" in form.problems.value and "<td>1</td>" in form.problems.value


def test_method_switch_relabels_fields_and_changes_the_format(stackoverflow):
    form = ColumnMappingForm(stackoverflow, method="eval")
    assert (form.question.description, form.answer.description) == ("query", "response")
    assert "gen_qa records" in form.preview.value and "&quot;query&quot;" in form.preview.value
    form.method.value = "rft"
    assert form.answer.description == "reference_answer" and form._rows["id"].layout.display == ""
    assert "reference_answer" in form.preview.value
    form.method.value = "cpt"
    assert form._rows["question"].layout.display == "none" and form.system_prompt.layout.display == "none"
    assert "needs 'text'" in _plain(form.status)  # an unmapped required key is shown, not raised
    form.text.value = "Body"
    assert form.status.value == "" and form.value.mapping == ColumnMapping(text="Body")
    assert "cpt records" in form.preview.value


def test_invalid_mapping_is_reported_and_value_raises(stackoverflow):
    form = ColumnMappingForm(stackoverflow)
    form.answer.value = None
    assert "needs 'answer'" in _plain(form.status) and form.preview.value == ""
    form.answer.value = "Y"
    form.system.value = "Tags"  # a system column wins over the prompt box
    assert form.system_prompt.disabled and form.value.mapping.system == "Tags"
    assert form.value.mapping.system_prompt is None


def test_declared_labels_and_options_reach_the_config(stackoverflow):
    form = ColumnMappingForm(stackoverflow, labels=("HQ", "LQ_EDIT"))
    assert form.value.labels == ("HQ", "LQ_EDIT")
    assert "label_not_in_set" in form.report.value  # LQ_CLOSE rows are outside the declared set
    form.labels.value = ""
    form.split.value = None
    form.reserved.value = "drop"
    form.seed.value = 3
    config = form.value
    assert (config.labels, config.split, config.reserved, config.seed) == (None, None, "drop", 3)
    other = ColumnMappingForm(stackoverflow)
    other.value = config
    assert other.value == config


def test_save_writes_the_prepared_files(stackoverflow, tmp_path):
    form = ColumnMappingForm(stackoverflow, out_dir=tmp_path / "prepared")
    form.save.click()
    assert "saved to" in _texts(form.output) and "rows per split" in _texts(form.output)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["ok"] and set(manifest["splits"]) == {"sft", "eval", "rft"}
    first = next(read_jsonl(tmp_path / "prepared" / "sft" / "converse.jsonl"))
    assert first["system"][0]["text"] == form.system_prompt.value
    assert form.prepared is not None and form.prepared.out_dir == tmp_path / "prepared"
    form.save.click()  # the directory is not empty now: the error shows in the output, nothing raises
    assert "not empty" in _texts(form.output)
    form.overwrite.value = True
    form.save.click()
    assert "saved to" in _texts(form.output)


def test_load_button_reads_a_file_and_reports_a_missing_one(stackoverflow, tmp_path):
    path = tmp_path / "so.csv"
    stackoverflow.head(30).to_csv(path, index=False)
    form = ColumnMappingForm()
    assert "load a file" in form.preview.value
    form.path.value = str(tmp_path / "nope.csv")
    form.load.click()
    assert "nope.csv" in form.status.value
    form.path.value = str(path)
    form.load.click()
    assert form.frame is not None and len(form.frame) == 30 and "30 rows" in form.source_info.value
    assert form.answer.value == "Y" and "schemaVersion" in form.preview.value


def test_large_data_is_validated_on_demand():
    frame = pd.DataFrame({"question": [f"q{i}" for i in range(2500)], "answer": ["yes", "no"] * 1250})
    form = ColumnMappingForm(frame)
    assert form.report_data is None and "Validate all rows" in form.report.value
    form.validate.click()
    assert form.report_data is not None and form.report_data.n_rows == 2500 and form.report_data.ok

import pandas as pd

from nbtoolkit.metrics import confusion_matrix
from nbtoolkit.report import write_report


def test_report_is_self_contained_html_with_every_section(tmp_path):
    confusion = confusion_matrix(["HQ", "LQ_EDIT"], ["HQ", "HQ"], ["HQ", "LQ_EDIT"])
    curve = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})
    path = write_report(tmp_path / "report.html", "Run <1>",
                        {"baseline": {"exact_match": 0.0}, "sft": {"exact_match": 0.5}},
                        confusions={"baseline": confusion, "sft": confusion},
                        reply_lengths={"baseline": [20, 24], "sft": [2, 2]}, max_new_tokens=24,
                        curves={"SFT loss": (curve, "loss")}, notes=["synthetic data"])
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "Run &lt;1&gt;" in text
    assert text.count("data:image/png;base64,") == 4
    for heading in ("Metrics by stage", "Confusion matrices", "Response lengths", "Training curves"):
        assert heading in text
    assert "0.500" in text and "synthetic data" in text and "src=\"http" not in text

import numpy as np
import pytest
import pandas as pd
from matplotlib.figure import Figure

from nbtoolkit.metrics import confusion_matrix
from nbtoolkit.plots import (
    confusion_matrix_figure, response_length_figure, stage_table, stage_table_styler, training_curve_figure,
)

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def test_confusion_matrix_figure_annotates_counts_with_truth_on_rows():
    table = confusion_matrix(["HQ", "HQ", "LQ_EDIT"], ["HQ", "LQ_CLOSE", "LQ_EDIT"], LABELS)
    figure = confusion_matrix_figure(table, title="baseline")
    ax = figure.axes[0]
    assert isinstance(figure, Figure)
    assert ax.get_ylabel() == "true label" and ax.get_xlabel() == "predicted label"
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("1") == 3 and len(texts) == table.size
    assert [t.get_text() for t in ax.get_yticklabels()] == LABELS


def test_normalized_confusion_rows_sum_to_one():
    table = confusion_matrix(["HQ", "HQ"], ["HQ", "LQ_EDIT"], LABELS)
    texts = [t.get_text() for t in confusion_matrix_figure(table, normalize=True).axes[0].texts]
    assert texts[:2] == ["0.50", "0.50"]


def test_response_length_figure_draws_one_series_per_stage_and_the_limit():
    figure = response_length_figure({"baseline": [24, 24, 20], "sft": [2, 3, 2]}, limit=24)
    ax = figure.axes[0]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"baseline", "sft"}
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())


def test_training_curve_includes_eval_points():
    metrics = pd.DataFrame({"step": [1, 2, 3], "loss": [2.0, 1.5, 1.0], "eval_loss": [np.nan, np.nan, 1.2]})
    ax = training_curve_figure(metrics).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "eval_loss"]


def test_stage_table_has_deltas_and_the_styler_renders_them():
    stages = {"baseline": {"exact_match": 0.1, "label_accuracy": 0.5},
              "sft": {"exact_match": 0.7, "label_accuracy": 0.75}}
    table = stage_table(stages)
    assert list(table.columns) == ["baseline", "sft", "Δ sft"]
    assert table.loc["exact_match", "Δ sft"] == pytest.approx(0.6)
    html = stage_table_styler(table).to_html()
    assert "0.600" in html and "Metrics by stage" in html

import math

import pytest

from nbtoolkit.metrics import NO_LABEL, classification_metrics, confusion_matrix, mean_and_stderr, normalize_answer

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def test_normalize_answer():
    assert normalize_answer("  The  Answer: HQ. ") == "answer hq"


def test_mean_and_stderr_uses_n_minus_one():
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and stderr == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert math.isnan(mean_and_stderr([1.0])[1])


def test_classification_metrics():
    replies = ["HQ", "hq.", "The answer is LQ_EDIT", "no idea"]
    references = ["HQ", "HQ", "LQ_EDIT", "LQ_CLOSE"]
    metrics = classification_metrics(replies, references, LABELS)
    assert metrics["exact_match"] == 0.25
    assert metrics["quasi_exact_match"] == 0.5
    assert metrics["label_accuracy"] == 0.75
    assert metrics["no_valid_prediction"] == 1 and metrics["n"] == 4


def test_confusion_matrix_rows_are_truth_columns_predictions():
    table = confusion_matrix(["HQ", "HQ", "LQ_EDIT"], ["HQ", "LQ_CLOSE", NO_LABEL], LABELS)
    assert table.loc["HQ", "HQ"] == 1 and table.loc["HQ", "LQ_CLOSE"] == 1 and table.loc["LQ_EDIT", NO_LABEL] == 1
    assert table.to_numpy().sum() == 3 and list(table.columns) == [*LABELS, NO_LABEL]

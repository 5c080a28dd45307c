"""Metrics on (prediction, reference) pairs: exact match, quasi exact match, label accuracy, confusion matrix."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

import pandas as pd

from nbtoolkit.labels import extract_label

NO_LABEL = "(none)"
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """lighteval/HELM quasi-exact normalization: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std with n-1, over sqrt(n))."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def label_predictions(replies: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The label extracted from each reply, NO_LABEL where none was found."""
    return [extract_label(reply, labels) or NO_LABEL for reply in replies]


def classification_metrics(replies: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> dict:
    """Exact match, quasi exact match, extracted-label accuracy and the no-valid-prediction count, with stderr."""
    if len(replies) != len(references):
        raise ValueError(f"{len(replies)} replies but {len(references)} references")
    exact = [float(p.strip() == r.strip()) for p, r in zip(replies, references)]
    quasi = [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(replies, references)]
    predicted = label_predictions(replies, labels)
    correct = [float(p == r.strip()) for p, r in zip(predicted, references)]
    out: dict[str, float | int] = {"n": len(replies)}
    for name, values in (("exact_match", exact), ("quasi_exact_match", quasi), ("label_accuracy", correct)):
        out[name], out[f"{name}_stderr"] = mean_and_stderr(values)
    out["no_valid_prediction"] = predicted.count(NO_LABEL)
    return out


def confusion_matrix(references: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """Counts with true labels as rows and predicted labels as columns (plus a NO_LABEL column)."""
    columns = [*labels, NO_LABEL]
    table = pd.DataFrame(0, index=pd.Index(list(labels), name="true"), columns=pd.Index(columns, name="predicted"))
    for truth, guess in zip(references, predicted):
        if truth in table.index:
            table.loc[truth, guess if guess in columns else NO_LABEL] += 1
    return table

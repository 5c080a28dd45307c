"""The synthetic Stack Overflow generator: Kaggle schema, determinism, realism, a learnable but not trivial signal."""

from __future__ import annotations

import html
import random
import re
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbtoolkit.data import synthetic
from nbtoolkit.data.synthetic import (
    COLUMNS,
    LABELS,
    RESERVED_ROW_RATE,
    SYNTHETIC_NOTE,
    make_stackoverflow_dataset,
    write_stackoverflow_csv,
)
from nbtoolkit.data.sanitize import RESERVED_STRINGS



@pytest.fixture(scope="module")
def questions() -> pd.DataFrame:
    return make_stackoverflow_dataset(1500, seed=0)


def _words(html_text: str) -> list[str]:
    """Lowercase words of an HTML fragment, tags stripped and entities decoded."""
    return re.findall(r"[a-z0-9_']+|[?!]", html.unescape(re.sub(r"<[^>]+>", " ", html_text)).lower())


def _naive_bayes_accuracy(texts: list[str], labels: np.ndarray, n_train: int) -> float:
    """Multinomial naive Bayes on word counts (Laplace smoothing): train on the first rows, score the rest."""
    docs = [_words(t) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for doc in docs[:n_train] for w in doc}))}
    counts = np.zeros((len(docs), len(vocab)))
    for row, doc in enumerate(docs):
        for word in doc:
            if word in vocab:
                counts[row, vocab[word]] += 1
    classes = sorted(set(labels[:n_train]))
    log_likelihood, log_prior = [], []
    for label in classes:
        in_class = labels[:n_train] == label
        word_totals = counts[:n_train][in_class].sum(axis=0) + 1.0
        log_likelihood.append(np.log(word_totals / word_totals.sum()))
        log_prior.append(np.log(in_class.mean()))
    scores = counts[n_train:] @ np.array(log_likelihood).T + np.array(log_prior)
    predicted = np.array(classes)[scores.argmax(axis=1)]
    return float((predicted == labels[n_train:]).mean())


class _TagBalance(HTMLParser):
    """Records elements closed out of order or never closed (void elements excepted)."""

    VOID = {"br", "img", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.mismatched: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.mismatched.append(tag)


# --- schema --------------------------------------------------------------------------------------------------------


def test_schema_column_order_and_dtypes(questions):
    assert list(questions.columns) == ["Id", "Title", "Body", "Tags", "CreationDate", "Y"] == list(COLUMNS)
    assert questions["Id"].dtype == np.int64
    for column in COLUMNS[1:]:
        assert pd.api.types.is_string_dtype(questions[column]), column
    assert not questions.isna().any().any()
    assert (questions[list(COLUMNS[1:])].map(len) > 0).all().all()
    assert questions["Id"].is_unique and questions["Id"].is_monotonic_increasing
    assert questions["Tags"].str.fullmatch(r"(<[a-z0-9.#+-]+>){1,5}").all()
    assert set(questions["Y"]) == set(LABELS)
    assert questions["Body"].str.startswith("<").all() and questions["Body"].str.contains("<p>").all()


def test_clearly_labeled_synthetic(questions):
    assert questions.attrs["synthetic"] is True
    assert questions.attrs["description"] == SYNTHETIC_NOTE
    assert "synthetic" in SYNTHETIC_NOTE.lower()
    assert "synthetic" in synthetic.__doc__.lower() and "invented" in synthetic.__doc__


def test_dates_between_2016_and_2020_in_kaggle_format(questions):
    assert questions["CreationDate"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    dates = pd.to_datetime(questions["CreationDate"], format="%Y-%m-%d %H:%M:%S")
    assert dates.min() >= pd.Timestamp("2016-01-01") and dates.max() <= pd.Timestamp("2020-12-31 23:59:59")
    assert dates.is_monotonic_increasing  # rows come in Id order, and ids grow with time
    assert dates.dt.year.nunique() == 5


# --- labels --------------------------------------------------------------------------------------------------------


def test_labels_balanced_by_default(questions):
    assert questions["Y"].value_counts().to_dict() == {"HQ": 500, "LQ_EDIT": 500, "LQ_CLOSE": 500}


def test_label_balance_weights():
    df = make_stackoverflow_dataset(400, seed=3, label_balance={"HQ": 2, "LQ_EDIT": 1, "LQ_CLOSE": 1})
    assert df["Y"].value_counts().to_dict() == {"HQ": 200, "LQ_EDIT": 100, "LQ_CLOSE": 100}
    only_two = make_stackoverflow_dataset(90, seed=3, label_balance={"HQ": 1, "LQ_CLOSE": 1})
    assert only_two["Y"].value_counts().to_dict() == {"HQ": 45, "LQ_CLOSE": 45}


@pytest.mark.parametrize(
    ("balance", "message"),
    [({"HQ": 1, "LQ_EDITED": 1}, "did you mean 'LQ_EDIT'"), ({"HQ": -1, "LQ_EDIT": 2}, "non-negative"),
     ({"HQ": 0}, "positive sum")],
)
def test_label_balance_errors_are_actionable(balance, message):
    with pytest.raises(ValueError, match=message):
        make_stackoverflow_dataset(30, label_balance=balance)


@pytest.mark.parametrize("n_rows", [-1, 2.5, "100", True])
def test_rejects_bad_row_counts(n_rows):
    with pytest.raises(ValueError, match="n_rows"):
        make_stackoverflow_dataset(n_rows)


def test_zero_rows_keeps_the_schema():
    empty = make_stackoverflow_dataset(0)
    assert empty.empty and list(empty.columns) == list(COLUMNS)


@settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(min_value=1, max_value=60), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_size_and_seed_gives_near_equal_classes(n_rows, seed):
    df = make_stackoverflow_dataset(n_rows, seed=seed)
    counts = Counter(df["Y"])
    assert len(df) == n_rows and sum(counts.values()) == n_rows
    assert max(counts[label] for label in LABELS) - min(counts[label] for label in LABELS) <= 1


# --- randomness ----------------------------------------------------------------------------------------------------


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = make_stackoverflow_dataset(200, seed=7)
    pd.testing.assert_frame_equal(first, make_stackoverflow_dataset(200, seed=7))
    other = make_stackoverflow_dataset(200, seed=8)
    assert (first["Title"] != other["Title"]).mean() > 0.95
    assert (first["Body"] != other["Body"]).mean() > 0.95
    assert not first["Id"].equals(other["Id"])


def test_leaves_global_random_state_alone():
    np.random.seed(1234)
    random.seed(1234)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    make_stackoverflow_dataset(300, seed=5)
    numpy_after = np.random.get_state()
    assert numpy_before[0] == numpy_after[0] and np.array_equal(numpy_before[1], numpy_after[1])
    assert numpy_before[2:] == numpy_after[2:]
    assert random.getstate() == python_before


def test_global_seeding_does_not_change_the_output():
    np.random.seed(1)
    random.seed(1)
    first = make_stackoverflow_dataset(100, seed=11)
    np.random.seed(2)
    random.seed(2)
    pd.testing.assert_frame_equal(first, make_stackoverflow_dataset(100, seed=11))


# --- realism -------------------------------------------------------------------------------------------------------


def test_rows_are_diverse(questions):
    assert questions["Title"].duplicated().mean() < 0.01
    assert questions["Body"].duplicated().mean() < 0.01
    assert questions["Tags"].str.extract(r"^<([^>]+)>")[0].nunique() >= 15  # many topics


def test_body_lengths_differ_by_class(questions):
    length = questions["Body"].str.len().groupby(questions["Y"])
    median = length.median()
    assert 400 <= median["HQ"] <= 1500
    assert length.quantile(0.9)["HQ"] <= 1500
    assert median["LQ_CLOSE"] < 300 and median["LQ_CLOSE"] < median["LQ_EDIT"] < median["HQ"]


def test_html_is_well_formed(questions):
    for body in questions["Body"]:
        assert body.count("<pre>") == body.count("</pre>") == body.count("<pre><code>") == body.count("</code></pre>")
        parser = _TagBalance()
        parser.feed(body)
        parser.close()
        assert not parser.open and not parser.mismatched, body


def test_includes_realistic_messiness(questions):
    bodies = questions["Body"]
    assert bodies.str.contains("&lt;|&gt;|&amp;").mean() > 0.05  # escaped code and prose
    assert 0.01 < bodies.str.contains("<br>").mean() < 0.3
    assert bodies.str.contains(r"<p>[^\n]*<code>").mean() > 0.1  # inline code in a sentence
    # Titles are plain text, as in Kaggle: raw "<" (as in Vec<String>) is fine, markup and escapes are not.
    assert not questions["Title"].str.contains(r"</?(?:p|code|pre|br)>|&amp;|&lt;|`").any()


def test_reserved_strings_appear_at_a_low_rate(questions):
    has_reserved = (questions["Title"] + questions["Body"]).map(lambda text: any(s in text for s in RESERVED_STRINGS))
    assert has_reserved.sum() == round(len(questions) * RESERVED_ROW_RATE)  # none slip in by accident
    assert 0.003 <= has_reserved.mean() <= 0.03
    found = {s for s in RESERVED_STRINGS if questions["Body"].str.contains(s, regex=False).any()}
    assert {"User:", "[EOS]"} <= found


# --- signal --------------------------------------------------------------------------------------------------------


def test_learnable_but_not_trivial(questions):
    """Naive Bayes on 1,200 rows, scored on the 300 others: well above chance (0.33), well below perfect."""
    texts = (questions["Title"] + " " + questions["Body"]).tolist()
    accuracy = _naive_bayes_accuracy(texts, questions["Y"].to_numpy(), n_train=1200)
    print(f"naive Bayes held-out accuracy: {accuracy:.3f}")
    assert 0.6 <= accuracy <= 0.95


def test_body_alone_carries_the_signal(questions):
    """The case study prompts with the Body only; it must be learnable on its own too."""
    accuracy = _naive_bayes_accuracy(questions["Body"].tolist(), questions["Y"].to_numpy(), n_train=1200)
    print(f"naive Bayes held-out accuracy, Body only: {accuracy:.3f}")
    assert 0.6 <= accuracy <= 0.95


def test_a_keyword_rule_is_not_enough(questions):
    body = questions["Body"].str.lower()
    pleading = body.str.contains(r"plz|pls|urgent|help me|\?\?")
    rule = np.where(body.str.contains("<pre>") & ~pleading, "HQ",
                    np.where(body.str.contains("<pre>|<br>") | pleading, "LQ_EDIT", "LQ_CLOSE"))
    accuracy = float((rule == questions["Y"]).mean())
    print(f"keyword rule accuracy: {accuracy:.3f}")
    assert accuracy < 0.85


# --- files and speed -----------------------------------------------------------------------------------------------


def test_write_csv_round_trips(tmp_path):
    path = write_stackoverflow_csv(tmp_path / "nested" / "so.csv", n_rows=120, seed=4)
    assert path == tmp_path / "nested" / "so.csv" and path.exists()
    back = pd.read_csv(path, keep_default_na=False)
    expected = make_stackoverflow_dataset(120, seed=4)
    assert list(back.columns) == list(COLUMNS)
    assert back["Id"].dtype == np.int64
    for column in COLUMNS:
        assert back[column].tolist() == expected[column].tolist(), column



def test_the_vocabulary_ships_as_package_data():
    import tomllib
    from importlib import resources
    from pathlib import Path

    folder = resources.files("nbtoolkit.data").joinpath("resources")
    assert folder.joinpath("synthetic_topics.json").is_file() and folder.joinpath("synthetic_vocabulary.json").is_file()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "**/*.json" in pyproject["tool"]["setuptools"]["package-data"]["nbtoolkit"]  # data/resources/ included
    assert len(synthetic.TOPICS) >= 20 and all(isinstance(t.tags, tuple) for t in synthetic.TOPICS)

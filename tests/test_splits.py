import random

import numpy as np
import pandas as pd
import pytest

from nbtoolkit.data.splits import label_distribution, scale_sizes, split_frame, split_with_preset
from nbtoolkit.errors import DataError


def frame(n=4700, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["HQ", "LQ_EDIT", "LQ_CLOSE"], size=n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({"answer": labels, "question": [f"q{i}" for i in range(n)]},
                        index=pd.RangeIndex(1, n + 1, name="row"))


def test_sft_eval_rft_preset_sizes_and_union():
    parts = split_with_preset(frame(), "sft-eval-rft", label_column="answer", seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"sft": 3500, "eval": 500, "rft": 4200}
    sft, eval_, rft = parts["sft"], parts["eval"], parts["rft"]
    assert not set(sft.index) & set(eval_.index)
    assert set(sft.index) <= set(rft.index)
    rft_only = set(rft.index) - set(sft.index)
    assert len(rft_only) == 700 and not rft_only & set(eval_.index)


def test_splits_are_stratified():
    data = frame()
    parts = split_frame(data, {"a": 3500, "b": 500, "c": 700}, label_column="answer", seed=3)
    overall = data["answer"].value_counts(normalize=True)
    for part in parts.values():
        share = part["answer"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.01


def test_deterministic_per_seed_and_different_across_seeds():
    data = frame(600)
    a = split_frame(data, {"x": 300, "y": 300}, label_column="answer", seed=5)
    b = split_frame(data, {"x": 300, "y": 300}, label_column="answer", seed=5)
    c = split_frame(data, {"x": 300, "y": 300}, label_column="answer", seed=6)
    assert list(a["x"].index) == list(b["x"].index)
    assert list(a["x"].index) != list(c["x"].index)


def test_global_random_state_is_untouched():
    np_state, py_state = np.random.get_state(), random.getstate()
    split_frame(frame(300), {"x": 100, "y": 100}, label_column="answer", seed=1)
    after = np.random.get_state()
    assert np_state[0] == after[0] and (np_state[1] == after[1]).all() and random.getstate() == py_state


def test_too_few_rows_fails_unless_scaled():
    small = frame(470)
    with pytest.raises(DataError, match="need 4,700 rows but the data has 470"):
        split_with_preset(small, "sft-eval-rft", label_column="answer")
    parts = split_with_preset(small, "sft-eval-rft", label_column="answer", scale_to_fit=True)
    assert {k: len(v) for k, v in parts.items()} == {"sft": 350, "eval": 50, "rft": 420}


def test_scale_sizes_keeps_totals_and_non_empty_splits():
    assert sum(scale_sizes({"a": 3500, "b": 500, "c": 700}, 1001).values()) == 1001
    assert min(scale_sizes({"a": 3500, "b": 5, "c": 700}, 40).values()) >= 1


def test_fractions_and_unlabelled_split():
    parts = split_frame(frame(100), {"train": 0.8, "test": 0.2}, seed=0)
    assert len(parts["train"]) == 80 and len(parts["test"]) == 20


def test_label_distribution_table():
    parts = split_with_preset(frame(), "sft-eval-rft", label_column="answer")
    table = label_distribution(parts, "answer")
    assert table.loc["total", "sft"] == 3500 and set(table.index) == {"HQ", "LQ_CLOSE", "LQ_EDIT", "total"}

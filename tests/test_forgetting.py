"""Forgetting: multiple-choice benchmarks read and scored exactly, paired comparison, the retention probe."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import shared_file
from nbtoolkit.errors import DataError
from nbtoolkit.forgetting import (
    GeneralEvalResult,
    choice_logprobs,
    evaluate_general,
    find_benchmark,
    forgetting_table,
    load_mc_benchmark,
    retention_probe,
    score_benchmark,
)
from nbtoolkit.models import tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0, vocab_from=None)


@pytest.fixture(scope="module")
def data_dir():
    return shared_file("arc-easy/arc_easy_test.jsonl").parents[1]


def test_named_benchmarks_load_as_a_seeded_sample(data_dir):
    arc = load_mc_benchmark("arc-easy", limit=25, seed=3, data_dir=data_dir)
    assert len(arc) == 25 and all(len(item.choices) == 4 for item in arc)
    assert [i.row for i in arc] == [i.row for i in load_mc_benchmark("arc-easy", limit=25, seed=3, data_dir=data_dir)]
    assert [i.row for i in arc] == sorted(i.row for i in arc)
    piqa = load_mc_benchmark(find_benchmark("piqa", data_dir), limit=10)
    assert all(len(item.choices) == 2 for item in piqa)
    with pytest.raises(DataError, match="did you mean 'arc-easy'"):
        find_benchmark("arc_easy")


@pytest.mark.parametrize("record,match", [
    ({"query": "q", "choices": ["a", "b"]}, "no 'gold'|unknown field 'gold'"),
    ({"query": "q", "choices": ["a", "b"], "gold": 2}, "not an index"),
    ({"query": "q", "choices": "a", "gold": 0}, "at least two"),
    ({"query": "", "choices": ["a", "b"], "gold": 0}, "non-empty"),
    ({"query": "q", "choices": ["a", "b"], "gold": 0.5}, "not an index"),
])
def test_bad_rows_are_named_by_file_row_and_column(tmp_path, record, match):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"query": "ok", "choices": ["x", "y"], "gold": 1}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=match) as error:
        load_mc_benchmark(path)
    assert error.value.row == 2 and str(path) in str(error.value)


def test_csv_benchmarks_with_a_json_list_of_choices(tmp_path):
    path = tmp_path / "bench.csv"
    pd.DataFrame({"query": ["2+2?"], "choices": [json.dumps(["4", "5"])], "gold": ["0"]}).to_csv(path, index=False)
    assert load_mc_benchmark(path)[0].choices == ("4", "5")


def test_choice_logprobs_match_one_sequence_at_a_time(tiny, data_dir):
    items = load_mc_benchmark("arc-easy", limit=5, data_dir=data_dir) + \
        load_mc_benchmark("piqa", limit=3, data_dir=data_dir)
    batched = choice_logprobs(tiny, items, batch_size=5)
    tokenizer = tiny.tokenizer
    for item, scores in zip(items, batched):
        context = tokenizer(item.query + "\nAnswer:")["input_ids"]
        for choice, score in zip(item.choices, scores):
            continuation = tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(tiny.model(torch.tensor([context + continuation])).logits[0].float(), -1)
            expected = sum(float(logprobs[len(context) + j - 1, t]) for j, t in enumerate(continuation))
            assert math.isclose(score, expected, abs_tol=2e-3)


def test_accuracy_stderr_and_a_paired_comparison(tiny, data_dir):
    items = load_mc_benchmark("arc-easy", limit=12, data_dir=data_dir)
    metrics, predictions = score_benchmark(tiny, items, batch_size=8)
    correct = predictions["correct"].astype(float)
    assert metrics["accuracy"] == correct.mean()
    assert math.isclose(metrics["accuracy_stderr"], correct.std(ddof=1) / math.sqrt(12))
    assert metrics["chance"] == 0.25 and metrics["n"] == 12
    assert list(predictions["predicted"]) == [int(np.argmax(s)) for s in predictions["logprobs"]]
    base = GeneralEvalResult("base", {"arc-easy": metrics}, {"arc-easy": predictions})
    other = evaluate_general(tiny_model(seed=1, vocab_from=None), ["arc-easy"], limit=12, data_dir=data_dir,
                             progress=False)
    table = other.compare(base)
    assert math.isclose(table.loc["arc-easy", "delta"], other.metrics["arc-easy"]["accuracy"] - metrics["accuracy"])
    diff = other.predictions["arc-easy"]["correct"].astype(float) - correct
    assert math.isclose(table.loc["arc-easy", "delta_stderr"], diff.std(ddof=1) / math.sqrt(12))
    assert base.compare(base).loc["arc-easy", "delta_stderr"] == 0


def test_results_save_and_load(tiny, data_dir, tmp_path):
    result = evaluate_general(tiny, ["arc-easy", "piqa"], limit=4, data_dir=data_dir, progress=False)
    loaded = GeneralEvalResult.load(result.save(tmp_path / "general"))
    assert loaded.metrics == result.metrics and loaded.model == result.model
    pd.testing.assert_frame_equal(loaded.predictions["piqa"], result.predictions["piqa"], check_dtype=False)
    assert loaded.headline()["general_accuracy"] == result.mean_accuracy
    assert "arc-easy" in result.summary() and set(result.table().index) == {"arc-easy", "piqa"}


def test_retention_probe_is_zero_for_the_same_model_and_grows_with_change(tiny):
    references = [{"messages": [{"role": "user", "content": "What is the capital of France?"},
                                {"role": "assistant", "content": "The capital of France is Paris."}]},
                  {"messages": [{"role": "user", "content": "Say hello."},
                                {"role": "assistant", "content": "Hello, how are you today?"}]}]
    same = retention_probe(tiny, tiny, references=references)
    assert same["mean_kl"] == pytest.approx(0, abs=1e-6) and same["top1_agreement"] == 1.0
    assert same["logprob_drop"] == pytest.approx(0, abs=1e-6) and same["n_prompts"] == 2
    moved = tiny_model(seed=0, vocab_from=None)
    with torch.no_grad():
        for parameter in moved.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    far = retention_probe(moved, tiny, references=references)
    assert far["mean_kl"] > 1e-4 and far["n_tokens"] == same["n_tokens"]
    assert far["per_prompt"][0]["tokens"] > 0


def test_forgetting_table_puts_domain_and_general_side_by_side():
    table = forgetting_table(
        {"baseline": {"label_accuracy": 0.3, "exact_match": 0.1}, "sft": {"label_accuracy": 0.8, "exact_match": 0.7}},
        {"baseline": {"arc-easy_accuracy": 0.6, "general_accuracy": 0.6},
         "sft": {"arc-easy_accuracy": 0.55, "general_accuracy": 0.55}})
    assert table.loc["label_accuracy", "Δ sft"] == pytest.approx(0.5)
    assert table.loc["general_accuracy", "Δ sft"] == pytest.approx(-0.05)
    assert list(table.index)[:3] == ["label_accuracy", "exact_match", "general_accuracy"]


@pytest.mark.slow
def test_the_embedded_model_is_above_chance_on_arc_easy(data_dir):
    result = evaluate_general("smollm2-135m-instruct", ["arc-easy"], limit=30, data_dir=data_dir, progress=False)
    assert result.metrics["arc-easy"]["accuracy"] > 0.35  # chance is 0.25; about 0.6 measured

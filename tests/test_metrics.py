import math

import numpy as np
import pytest
import sacrebleu

from nbtoolkit.metrics import (
    NO_LABEL,
    bleu_lighteval_legacy,
    bleu_with_stderr,
    bootstrap_stderr,
    confusion_matrix,
    corpus_bleu,
    exact_match,
    gen_qa_metrics,
    label_metrics,
    macro_f1,
    mean_and_stderr,
    normalize_answer,
    per_class_metrics,
    quasi_exact_match,
    response_length_metrics,
    rouge_scores,
    token_set_f1,
    token_set_f1_quasi,
)

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def test_normalize_answer():
    assert normalize_answer("  The  Answer: HQ. ") == "answer hq"


def test_normalize_answer_follows_helm_hyphens_and_numbers():
    # HELM splits on hyphens and casts numbers through float(); punctuation goes before the cast.
    assert normalize_answer("well-known") == "well known"
    assert normalize_answer("An answer of 3") == "answer of 3.0"
    assert normalize_answer("LQ_EDIT") == "lqedit"


def test_mean_and_stderr_uses_n_minus_one():
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and stderr == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert math.isnan(mean_and_stderr([1.0])[1])


def test_exact_and_quasi_exact_match():
    assert exact_match("  HQ \n", "HQ") == 1.0
    assert exact_match("hq", "HQ") == 0.0
    assert exact_match("", "") == 0.0  # lighteval: an empty prediction never matches
    assert quasi_exact_match("The HQ.", "hq") == 1.0
    assert quasi_exact_match("HQ!", "LQ_EDIT") == 0.0


def test_token_set_f1_by_hand():
    # pred {the, cat, sat}, gold {the, cat, ran}: 2 shared -> P = R = 2/3 -> F1 = 2/3
    assert token_set_f1("the cat sat", "the cat ran") == pytest.approx(2 / 3)
    # sets, not bags: the repeated "the" counts once. pred {the, cat}, gold {the, cat, sat}: P=1, R=2/3 -> 0.8
    assert token_set_f1("the the cat", "the cat sat") == pytest.approx(0.8)
    assert token_set_f1("The cat.", "the cat") == 0.0  # case and punctuation matter without normalization
    assert token_set_f1_quasi("The cat.", "the cat") == 1.0  # "cat" after normalization (articles dropped)
    assert token_set_f1("", "x") == 0.0 and token_set_f1("x", "") == 0.0


def test_rouge_by_hand():
    scores = rouge_scores(["the cat sat", "HQ", "LQ_EDIT"], ["the cat ran", "HQ", "LQ_CLOSE"])
    # unigrams 2/3 shared -> F 2/3; bigrams {the cat, cat sat} vs {the cat, cat ran}: 1/2; LCS "the cat" -> 2/3
    assert scores["rouge1"][0] == pytest.approx(2 / 3)
    assert scores["rouge2"][0] == pytest.approx(0.5)
    assert scores["rougeL"][0] == pytest.approx(2 / 3)
    # "HQ" has no bigram, so ROUGE-2 is 0 even for a perfect answer (why the case study's ROUGE-2 is about 0.5)
    assert scores["rouge1"][1] == 1.0 and scores["rouge2"][1] == 0.0
    # rouge_score's tokenizer splits "LQ_EDIT" into "lq edit": one unigram of two shared, no bigram shared
    assert scores["rouge1"][2] == pytest.approx(0.5) and scores["rouge2"][2] == 0.0


def test_gen_qa_metrics_average_samples_with_stderr():
    predictions, references = ["the cat sat", "HQ", "nothing"], ["the cat ran", "HQ", "LQ_CLOSE"]
    metrics = gen_qa_metrics(predictions, references, bleu_resamples=50)
    assert metrics["exact_match"] == pytest.approx(1 / 3)
    assert metrics["f1_score"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics["rouge1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert metrics["rouge2"] == pytest.approx(0.5 / 3)
    assert metrics["f1_score_stderr"] == pytest.approx(mean_and_stderr([2 / 3, 1.0, 0.0])[1])
    for name in ("exact_match", "quasi_exact_match", "f1_score", "f1_score_quasi", "rouge1", "rouge2", "rougeL",
                 "bleu", "bleu_lighteval_legacy"):
        assert name in metrics and f"{name}_stderr" in metrics


def test_corpus_bleu_matches_sacrebleu_and_scores_every_row():
    predictions = ["the cat sat on the mat", "a dog barked loudly at night"]
    references = ["the cat sat on a mat", "a dog barked loudly at night"]
    expected = sacrebleu.corpus_bleu(predictions, [references]).score
    assert corpus_bleu(predictions, references) == pytest.approx(expected)
    # a perfect second row raises corpus BLEU above the first row alone
    assert corpus_bleu(predictions, references) > corpus_bleu(predictions[:1], references[:1])
    assert corpus_bleu(references, references) == pytest.approx(100.0)


def test_bleu_lighteval_legacy_scores_only_the_first_row():
    references = ["the cat sat on a mat", "a dog barked loudly at night"]
    good_first = ["the cat sat on a mat", "completely wrong words here"]
    bad_first = ["completely wrong words here", "a dog barked loudly at night"]
    # First row perfect: 100 whatever the rest; first row wrong: 0 even though row 2 is perfect.
    assert bleu_lighteval_legacy(good_first, references) == pytest.approx(100.0)
    assert bleu_lighteval_legacy(bad_first, references) == 0.0
    # The first prediction is scored against every reference as alternatives: matching row 2's reference counts.
    assert bleu_lighteval_legacy(["a dog barked loudly at night", "x"], references) == pytest.approx(100.0)
    assert corpus_bleu(bad_first, references) > 0.0


def test_bleu_bootstrap_stderr_is_seeded_and_plausible():
    predictions = ["the cat sat on the mat", "a dog barked", "hello there friend", "a b c d e"] * 5
    references = ["the cat sat on a mat", "a dog barked loudly", "hello there my friend", "a b c d f"] * 5
    score, stderr = bleu_with_stderr(predictions, references, resamples=200, seed=1)
    assert score == pytest.approx(corpus_bleu(predictions, references))
    assert stderr == bleu_with_stderr(predictions, references, resamples=200, seed=1)[1]
    assert 0.0 < stderr < 30.0
    assert bleu_with_stderr(references, references, resamples=50)[1] == pytest.approx(0.0)


def test_bootstrap_stderr_of_a_mean_is_close_to_the_analytic_stderr():
    values = np.random.default_rng(0).normal(size=400)
    boot = bootstrap_stderr(lambda idx: float(values[idx].mean()), len(values), resamples=1000, seed=0)
    assert boot == pytest.approx(mean_and_stderr(values.tolist())[1], rel=0.15)


def test_exact_match_and_label_accuracy_of_label_replies():
    replies = ["HQ", "hq.", "The answer is LQ_EDIT", "no idea"]
    references = ["HQ", "HQ", "LQ_EDIT", "LQ_CLOSE"]
    metrics = {**gen_qa_metrics(replies, references), **label_metrics(replies, references, LABELS)}
    assert metrics["exact_match"] == 0.25
    assert metrics["quasi_exact_match"] == 0.5
    assert metrics["label_accuracy"] == 0.75
    assert metrics["no_valid_prediction"] == 1


def test_per_class_metrics_and_macro_f1_by_hand():
    references = ["HQ", "HQ", "HQ", "LQ_EDIT", "LQ_CLOSE"]
    predicted = ["HQ", "HQ", "LQ_EDIT", "HQ", NO_LABEL]
    table = per_class_metrics(references, predicted, LABELS)
    # HQ: TP 2, predicted 3, support 3 -> P = R = F1 = 2/3; LQ_EDIT: TP 0; LQ_CLOSE: nothing predicted
    assert table.loc["HQ", "precision"] == pytest.approx(2 / 3) and table.loc["HQ", "recall"] == pytest.approx(2 / 3)
    assert table.loc["HQ", "f1"] == pytest.approx(2 / 3)
    assert table.loc["LQ_EDIT", "f1"] == 0.0 and table.loc["LQ_CLOSE", "recall"] == 0.0
    assert table["support"].tolist() == [3, 1, 1]
    assert macro_f1(table) == pytest.approx((2 / 3 + 0 + 0) / 3)
    metrics = label_metrics(["HQ", "HQ", "LQ_EDIT", "HQ", "?"], references, LABELS)
    assert metrics["label_accuracy"] == pytest.approx(0.4) and metrics["no_valid_prediction"] == 1
    assert metrics["macro_f1"] == pytest.approx(2 / 9)


def test_confusion_matrix_rows_are_truth_columns_predictions():
    table = confusion_matrix(["HQ", "HQ", "LQ_EDIT"], ["HQ", "LQ_CLOSE", NO_LABEL], LABELS)
    assert table.loc["HQ", "HQ"] == 1 and table.loc["HQ", "LQ_CLOSE"] == 1 and table.loc["LQ_EDIT", NO_LABEL] == 1
    assert table.to_numpy().sum() == 3 and list(table.columns) == [*LABELS, NO_LABEL]


def test_response_length_metrics():
    metrics = response_length_metrics(["HQ", "LQ_EDIT", "abcdefghij"], [1, 3, 8])
    assert metrics["reply_chars_mean"] == pytest.approx((2 + 7 + 10) / 3)
    assert metrics["reply_chars_max"] == 10 and metrics["reply_tokens_median"] == 3
    assert metrics["reply_tokens_mean"] == pytest.approx(4.0)
    assert "reply_tokens_mean" not in response_length_metrics(["x"])


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        gen_qa_metrics(["a", "b"], ["a"])

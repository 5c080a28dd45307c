"""Metrics on (prediction, reference) pairs: the GEN_QA suite, label metrics and response lengths.

The GEN_QA metrics follow the lighteval/HELM definitions AWS's evaluation container reports (docs/metrics.md):
exact_match, quasi_exact_match, f1_score, f1_score_quasi, rouge1/rouge2/rougeL (averaged per sample, with
standard error n-1 / sqrt(n)) and corpus BLEU (sacreBLEU, bootstrap standard error). Two BLEU values exist:
`bleu` is the correct corpus BLEU; `bleu_lighteval_legacy` reproduces lighteval <= 0.10, which scored only the
first row's prediction (the numbers in AWS's published tables look like that one).
Label metrics work on the label extracted from each reply (nbtoolkit.labels.extract_label).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from nbtoolkit.labels import extract_label

NO_LABEL = "(none)"
BOOTSTRAP_RESAMPLES = 1000
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Averaged per-sample metrics of the GEN_QA suite, in the order tables show them.
GEN_QA_SAMPLE_METRICS = ("exact_match", "quasi_exact_match", "f1_score", "f1_score_quasi", *ROUGE_TYPES)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


# ---------------------------------------------------------------------------------------------------------------
# Normalization and per-sample scores


def normalize_answer(text: str) -> str:
    """HELM's normalizer (lighteval `helm_normalizer`), used by the quasi metrics.

    Splits on spaces and hyphens; per piece: lowercase, drop punctuation, numbers through float() ("1" -> "1.0"),
    drop the articles a/an/the; then single spaces. "  The  Answer: HQ. " -> "answer hq".
    """
    pieces = []
    for piece in re.split(" |-", text):
        piece = "".join(ch for ch in piece.lower() if ch not in _PUNCTUATION)
        try:
            piece = str(float(piece))
        except ValueError:
            pass
        pieces.append(" ".join(_ARTICLES.sub(" ", piece).split()))
    return " ".join(p for p in pieces if p).strip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the stripped prediction equals the stripped reference (an empty prediction never matches)."""
    if not prediction:
        return 0.0
    return float(prediction.strip() == reference.strip())


def quasi_exact_match(prediction: str, reference: str) -> float:
    """exact_match after normalize_answer on both sides."""
    if not prediction:
        return 0.0
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_set_f1(prediction: str, reference: str) -> float:
    """F1 between the *sets* of whitespace tokens (lighteval `F1_score`, nltk f_measure); 0.0 if either is empty."""
    predicted, gold = set(prediction.split()), set(reference.split())
    if not predicted or not gold:
        return 0.0
    common = len(predicted & gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_set_f1_quasi(prediction: str, reference: str) -> float:
    """token_set_f1 after normalize_answer on both sides (f1_score_quasi)."""
    return token_set_f1(normalize_answer(prediction), normalize_answer(reference))


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # lighteval builds the scorer without a stemmer and with rouge_score's default tokenizer (lowercase,
    # non-alphanumerics become spaces: "LQ_EDIT" is the two tokens "lq edit").
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-sample ROUGE-1/2/L F-measures (rouge_score), one list per type."""
    _check_lengths(predictions, references)
    scorer = _rouge_scorer()
    out: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # rouge_score takes (target, prediction)
        for name in ROUGE_TYPES:
            out[name].append(float(scores[name].fmeasure))
    return out


def sample_scores(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Every per-sample GEN_QA score as a column (one row per pair); their column means are the suite's values."""
    _check_lengths(predictions, references)
    pairs = list(zip(predictions, references))
    table = pd.DataFrame({
        "exact_match": [exact_match(p, r) for p, r in pairs],
        "quasi_exact_match": [quasi_exact_match(p, r) for p, r in pairs],
        "f1_score": [token_set_f1(p, r) for p, r in pairs],
        "f1_score_quasi": [token_set_f1_quasi(p, r) for p, r in pairs],
        **rouge_scores(predictions, references),
    })
    return table


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and standard errors


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


def bootstrap_stderr(statistic: Callable[[np.ndarray], float], n: int, *, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> float:
    """Standard deviation (n-1) of `statistic(indices)` over `resamples` draws of n row indices with replacement.

    This is the usual bootstrap standard error. (lighteval divides it once more by sqrt(resamples), which makes
    its BLEU stderr about 30 times smaller; we do not copy that.)
    """
    if n < 2 or resamples < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=float)
    return float(values.std(ddof=1))


# ---------------------------------------------------------------------------------------------------------------
# BLEU


def _bleu():
    import sacrebleu

    return sacrebleu.BLEU()


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus sacreBLEU (0-100) of every prediction against its own reference: the correct BLEU."""
    _check_lengths(predictions, references)
    if not predictions:
        return math.nan
    return float(_bleu().corpus_score(list(predictions), [list(references)]).score)


def bleu_lighteval_legacy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """BLEU as lighteval <= 0.10 computed it: NOT a real corpus BLEU.

    lighteval passed the references as one stream per row (`[[ref_1], [ref_2], ...]`) instead of one stream of all
    rows (`[[ref_1, ref_2, ...]]`). sacreBLEU then zips hypotheses with streams of length 1, so only the first
    row's prediction is scored, against every reference as alternatives. Offered only to compare with tables
    produced by that code (AWS's GEN_QA numbers look like it); use `corpus_bleu` otherwise.
    """
    _check_lengths(predictions, references)
    if not predictions:
        return math.nan
    return float(_bleu().corpus_score(list(predictions), [[reference] for reference in references]).score)


def bleu_with_stderr(predictions: Sequence[str], references: Sequence[str], *, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> tuple[float, float]:
    """corpus_bleu and its bootstrap standard error (rows resampled `resamples` times, seeded)."""
    _check_lengths(predictions, references)
    if not predictions:
        return math.nan, math.nan
    bleu = _bleu()
    # Sentence statistics (matches and totals per n-gram order, lengths) add up over a corpus, so each resample
    # is a sum of rows instead of a new sacreBLEU run.
    stats = np.asarray(bleu._extract_corpus_statistics(list(predictions), [list(references)]), dtype=np.int64)
    score = float(bleu._compute_score_from_stats(stats.sum(axis=0).tolist()).score)

    def statistic(indices: np.ndarray) -> float:
        return float(bleu._compute_score_from_stats(stats[indices].sum(axis=0).tolist()).score)

    return score, bootstrap_stderr(statistic, len(predictions), resamples=resamples, seed=seed)


def bleu_lighteval_legacy_with_stderr(predictions: Sequence[str], references: Sequence[str], *,
                                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """bleu_lighteval_legacy and its bootstrap standard error (each resample: its first row vs its references)."""
    _check_lengths(predictions, references)
    if not predictions:
        return math.nan, math.nan
    cache: dict[tuple[str, frozenset[str]], float] = {}

    def legacy(prediction: str, refs: frozenset[str]) -> float:
        # Duplicate references change neither clipped n-gram counts nor the closest reference length.
        key = (prediction, refs)
        if key not in cache:
            cache[key] = float(_bleu().corpus_score([prediction], [[r] for r in sorted(refs)]).score)
        return cache[key]

    def statistic(indices: np.ndarray) -> float:
        return legacy(predictions[indices[0]], frozenset(references[i] for i in indices))

    score = legacy(predictions[0], frozenset(references))
    return score, bootstrap_stderr(statistic, len(predictions), resamples=resamples, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# The GEN_QA suite


def gen_qa_metrics(predictions: Sequence[str], references: Sequence[str], *, bleu_resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> dict[str, float]:
    """The GEN_QA suite: each metric and its `<name>_stderr`.

    `bleu` is the correct corpus BLEU; `bleu_lighteval_legacy` is lighteval <= 0.10's first-row-only value.
    """
    predictions = [p or "" for p in predictions]
    references = [r or "" for r in references]
    scores = sample_scores(predictions, references)
    out: dict[str, float] = {}
    for name in GEN_QA_SAMPLE_METRICS:
        out[name], out[f"{name}_stderr"] = mean_and_stderr(scores[name].tolist())
    out["bleu"], out["bleu_stderr"] = bleu_with_stderr(predictions, references, resamples=bleu_resamples, seed=seed)
    out["bleu_lighteval_legacy"], out["bleu_lighteval_legacy_stderr"] = bleu_lighteval_legacy_with_stderr(
        predictions, references, resamples=bleu_resamples, seed=seed)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Labels


def label_predictions(replies: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The label extracted from each reply, NO_LABEL where none was found."""
    return [extract_label(reply, labels) or NO_LABEL for reply in replies]


def per_class_metrics(references: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per label (index: label).

    A reply with no label (NO_LABEL) counts against recall of its true class and against no class's precision.
    0/0 is reported as 0.0, as scikit-learn's zero_division=0 does.
    """
    _check_lengths(predicted, references)
    rows = []
    for label in labels:
        true_positive = sum(1 for r, p in zip(references, predicted) if r == label and p == label)
        support = sum(1 for r in references if r == label)
        predicted_count = sum(1 for p in predicted if p == label)
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"label": label, "precision": precision, "recall": recall, "f1": f1, "support": support,
                     "predicted": predicted_count})
    table = pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support", "predicted"])
    return table.set_index("label")


def macro_f1(per_class: pd.DataFrame) -> float:
    """Mean F1 over the labels that occur as a reference or a prediction (scikit-learn's macro over seen labels)."""
    seen = per_class[(per_class["support"] > 0) | (per_class["predicted"] > 0)]
    return float(seen["f1"].mean()) if len(seen) else math.nan


def label_metrics(replies: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy of the extracted label (with stderr), replies without a valid label, and macro-F1."""
    _check_lengths(replies, references)
    predicted = label_predictions(replies, labels)
    references = [r.strip() for r in references]
    correct = [float(p == r) for p, r in zip(predicted, references)]
    out: dict[str, float] = {}
    out["label_accuracy"], out["label_accuracy_stderr"] = mean_and_stderr(correct)
    out["no_valid_prediction"] = predicted.count(NO_LABEL)
    out["macro_f1"] = macro_f1(per_class_metrics(references, predicted, labels))
    return out


def confusion_matrix(references: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    """Counts with true labels as rows and predicted labels as columns (plus a NO_LABEL column)."""
    columns = [*labels, NO_LABEL]
    table = pd.DataFrame(0, index=pd.Index(list(labels), name="true"), columns=pd.Index(columns, name="predicted"))
    for truth, guess in zip(references, predicted):
        if truth in table.index:
            table.loc[truth, guess if guess in columns else NO_LABEL] += 1
    return table


# ---------------------------------------------------------------------------------------------------------------
# Response lengths


def length_metrics(values: Sequence[float], prefix: str) -> dict[str, float]:
    """Mean (with stderr), median, 90th percentile and maximum of reply lengths, keys `<prefix>_mean` etc."""
    if len(values) == 0:
        return {f"{prefix}_{k}": math.nan for k in ("mean", "mean_stderr", "median", "p90", "max")}
    array = np.asarray(values, dtype=float)
    mean, stderr = mean_and_stderr(array.tolist())
    return {f"{prefix}_mean": mean, f"{prefix}_mean_stderr": stderr, f"{prefix}_median": float(np.median(array)),
            f"{prefix}_p90": float(np.percentile(array, 90)), f"{prefix}_max": float(array.max())}


def response_length_metrics(replies: Sequence[str], reply_tokens: Sequence[int] | None = None) -> dict[str, float]:
    """Reply lengths in characters and, when token counts are given, in tokens (reply_chars_*, reply_tokens_*)."""
    out = length_metrics([len(r) for r in replies], "reply_chars")
    if reply_tokens is not None:
        out.update(length_metrics(list(reply_tokens), "reply_tokens"))
    return out


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")

"""Evaluate a model on an eval file: greedy replies, the GEN_QA metric suite, label metrics, per-sample table.

`evaluate` generates replies in length-sorted batches (nbtoolkit.generation), scores them with nbtoolkit.metrics
and, for label tasks, also scores label log-likelihood accuracy: the label whose text (plus the chat template's
answer terminator) the model finds most likely as the reply. That number does not depend on the model following
the answer format, so it shows what a model knows before SFT teaches it to answer with the bare label.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbtoolkit.errors import DataError
from nbtoolkit.metrics import (
    NO_LABEL,
    confusion_matrix,
    exact_match,
    gen_qa_metrics,
    label_metrics,
    label_predictions,
    mean_and_stderr,
    per_class_metrics,
    response_length_metrics,
)
from nbtoolkit.models.registry import label_continuations
from nbtoolkit.training.config import EvalConfig, config_from_dict, config_to_dict

if TYPE_CHECKING:
    from nbtoolkit.models import LoadedModel
    from nbtoolkit.runtime.events import RunLog

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
CONFUSION_FILE = "confusion.csv"
PER_CLASS_FILE = "per_class.csv"
INFO_FILE = "eval.json"
QUERY_EXCERPT_CHARS = 160
PREDICTION_COLUMNS = ("row", "query", "reference", "reply", "predicted_label", "correct", "reply_tokens",
                      "reply_chars", "hit_max_new_tokens")


# ---------------------------------------------------------------------------------------------------------------
# Eval records


@dataclass(frozen=True)
class EvalExample:
    """One row to evaluate: the conversation to answer, the reference answer, and the question for display."""

    conversation: list[dict]
    reference: str
    query: str


def _text(content: Any) -> str:
    """Message content as text: a string, or Converse-style [{"text": ...}, ...] parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


def eval_example(record: dict, *, row: int | None = None, source: str | None = None) -> EvalExample:
    """Read one eval record: gen_qa {"query", "response", "system"?}, chat {"messages": [..., assistant]},
    RFT {"messages", "reference_answer"} or Converse {"system": [{"text"}], "messages": [...]}."""
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", source=source, row=row)
    system = record.get("system")
    system = _text(system) if system is not None else None
    if "query" in record:
        if "response" not in record:
            raise DataError("gen_qa record has a query but no response", source=source, row=row)
        conversation = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": _text(record["query"])}]
        return EvalExample(conversation, _text(record["response"]), _text(record["query"]))
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError("record has neither query/response (gen_qa) nor a messages list (chat)", source=source,
                        row=row)
    messages = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in messages]
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    if "reference_answer" in record:
        reference, conversation = _text(record["reference_answer"]), messages
    elif messages[-1]["role"] == "assistant":
        reference, conversation = messages[-1]["content"], messages[:-1]
    else:
        raise DataError("chat record must end with the assistant's reference answer (or have reference_answer)",
                        source=source, row=row)
    users = [m["content"] for m in conversation if m["role"] == "user"]
    if not users:
        raise DataError("chat record has no user message to answer", source=source, row=row)
    return EvalExample(conversation, reference, users[-1])


def load_eval_examples(data: str | os.PathLike | Sequence[dict] | pd.DataFrame) -> list[EvalExample]:
    """Eval examples from a JSONL/JSON/CSV/Parquet file, a list of records or a DataFrame of records."""
    source = None
    if isinstance(data, (str, os.PathLike)):
        source = str(data)
        path = Path(data).expanduser()
        if path.suffix in (".jsonl", ".ndjson"):
            from nbtoolkit.data.formats import read_jsonl

            if not path.exists():
                raise DataError("file not found", source=source)
            records: Sequence[dict] = list(read_jsonl(path))
        else:
            from nbtoolkit.data.loaders import load_table

            records = load_table(path).to_dict(orient="records")
    elif isinstance(data, pd.DataFrame):
        records = data.to_dict(orient="records")
    else:
        records = list(data)
    if not records:
        raise DataError("no eval records", source=source)
    return [eval_example(r, row=i + 1, source=source) for i, r in enumerate(records)]


def infer_labels(references: Sequence[str]) -> list[str] | None:
    """The label set when references look categorical (few distinct short values, each repeated), else None."""
    from nbtoolkit.data.prepare import infer_labels as infer_from_answers

    labels = infer_from_answers(pd.Series([r.strip() for r in references]))
    if labels is None or any(len(label) > 40 or len(label.split()) > 4 for label in labels):
        return None
    return list(labels)


# ---------------------------------------------------------------------------------------------------------------
# Label log-likelihood


def label_logprobs(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    labels: Sequence[str],
    *,
    batch_size: int = 16,
    max_prompt_tokens: int | None = 512,
    progress: bool = False,
) -> np.ndarray:
    """Summed log-probability of each label + answer terminator as the assistant reply: shape (rows, labels).

    Each prompt runs once; every label is then scored from its key/value cache (see generate_replies).
    """
    from nbtoolkit.generation import generate_replies

    generations = generate_replies(loaded, conversations, max_new_tokens=0, batch_size=batch_size,
                                   max_prompt_tokens=max_prompt_tokens, progress=progress,
                                   continuations=label_continuations(loaded.tokenizer, labels))
    return np.array([g.continuation_logprobs for g in generations], dtype=float).reshape(len(generations),
                                                                                         len(labels))


# ---------------------------------------------------------------------------------------------------------------
# Result


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class EvalResult:
    """Everything one evaluation produced; `.save(dir)` and `EvalResult.load(dir)` round-trip it."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    confusion: pd.DataFrame | None
    per_class: pd.DataFrame | None
    config: EvalConfig
    labels: list[str] | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write metrics.json, predictions.jsonl, confusion.csv, per_class.csv and eval.json into `directory`."""
        from nbtoolkit.data.formats import write_jsonl
        from nbtoolkit.runtime.events import write_json_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / METRICS_FILE, {k: _finite_or_none(v) for k, v in self.metrics.items()})
        write_jsonl(self.predictions.to_dict(orient="records"), directory / PREDICTIONS_FILE)
        for table, name in ((self.confusion, CONFUSION_FILE), (self.per_class, PER_CLASS_FILE)):
            if table is not None:
                table.to_csv(directory / name)
            else:
                (directory / name).unlink(missing_ok=True)
        write_json_atomic(directory / INFO_FILE, {
            "model": self.model, "labels": self.labels, "config": config_to_dict(self.config),
            "prediction_columns": list(self.predictions.columns), "extra": self.extra})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> EvalResult:
        """An EvalResult written by `.save(directory)`."""
        from nbtoolkit.data.formats import read_jsonl

        directory = Path(directory)
        info = json.loads((directory / INFO_FILE).read_text())
        metrics = {k: math.nan if v is None else v for k, v in json.loads((directory / METRICS_FILE).read_text())
                   .items()}
        predictions = pd.DataFrame(list(read_jsonl(directory / PREDICTIONS_FILE)),
                                   columns=info["prediction_columns"])
        confusion = per_class = None
        if (directory / CONFUSION_FILE).exists():
            confusion = pd.read_csv(directory / CONFUSION_FILE, index_col=0, dtype={"true": str}, keep_default_na=False)
            confusion.columns.name = "predicted"
        if (directory / PER_CLASS_FILE).exists():
            per_class = pd.read_csv(directory / PER_CLASS_FILE, index_col=0, dtype={"label": str},
                                    keep_default_na=False)
        config = config_from_dict(info["config"], method=EvalConfig.METHOD)
        return cls(metrics, predictions, confusion, per_class, config, info.get("labels"), info.get("model", ""),
                   info.get("extra") or {})

    def summary(self) -> str:
        """A few lines for people: headline metrics and, for label tasks, the confusion matrix."""
        m = self.metrics
        rows = self.extra.get("rows") or f"{int(m.get('n', 0))} rows"
        lines = [f"{self.model or 'model'}: {rows}, {m.get('samples_per_second', math.nan):.2f} samples/s",
                 f"  exact match {m['exact_match']:.3f} ± {m['exact_match_stderr']:.3f} | quasi exact match "
                 f"{m['quasi_exact_match']:.3f} | F1 {m['f1_score']:.3f} | ROUGE-1 {m['rouge1']:.3f} | "
                 f"BLEU {m['bleu']:.2f} (lighteval<=0.10 legacy BLEU {m['bleu_lighteval_legacy']:.2f})"]
        if self.labels:
            lines.append(f"  label accuracy {m['label_accuracy']:.3f} ± {m['label_accuracy_stderr']:.3f} | "
                         f"macro-F1 {m['macro_f1']:.3f} | no valid label {m['no_valid_prediction']}"
                         + (f" | label log-likelihood accuracy {m['loglik_accuracy']:.3f}"
                            if "loglik_accuracy" in m else ""))
        lines.append(f"  reply length: mean {m['reply_tokens_mean']:.1f} tokens, {m['reply_chars_mean']:.0f} chars; "
                     f"{m['hit_max_new_tokens']} hit max_new_tokens")
        if self.confusion is not None:
            lines += ["  confusion matrix (rows: true label, columns: predicted):",
                      "    " + self.confusion.to_string().replace("\n", "\n    ")]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# evaluate


def _excerpt(text: str, limit: int = QUERY_EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def reference_label(reference: str, labels: Sequence[str]) -> str:
    """The label a reference answer names: itself when it is one, else the first label found in it."""
    from nbtoolkit.labels import extract_label

    reference = reference.strip()
    return reference if reference in labels else (extract_label(reference, labels) or reference)


def _generate(loaded: LoadedModel, conversations: list[list[dict]], config: EvalConfig, log: RunLog | None,
              progress: bool, continuations: Sequence[Sequence[int]] = ()) -> list:
    """generate_replies, with progress also written to the run log after every batch."""
    from nbtoolkit.generation import generate_replies

    def report(done: int, total: int) -> None:
        if log is not None:
            log.progress(done, total, phase="eval")

    return generate_replies(loaded, conversations, max_new_tokens=config.max_new_tokens,
                            batch_size=config.batch_size, max_prompt_tokens=config.max_prompt_tokens,
                            progress=progress, continuations=continuations, on_batch=report)


def sample_rows(examples: Sequence[EvalExample], limit: int, labels: Sequence[str] | None, *, seed: int = 0
                ) -> tuple[list[int], str]:
    """Indices of the rows to score and how they were chosen: every row ("all"), or `limit` rows drawn with a
    fixed seed, stratified by reference label when there is a label set ("stratified") else uniformly
    ("random"). Never the first rows: a file sorted by label would be scored on its first classes only."""
    n = len(examples)
    if not limit or limit >= n:
        return list(range(n)), "all"
    from nbtoolkit.data.splits import stratified_order

    truth = pd.Series([reference_label(e.reference, labels) for e in examples]) if labels else None
    order = stratified_order(truth, n, seed)
    return sorted(int(i) for i in order[:limit]), "stratified" if labels else "random"


def describe_rows(scored: int, total: int, sampling: str) -> str:
    """'500 of 600 rows, stratified sample (fixed seed)' or 'all 600 rows'."""
    if sampling == "all" or scored >= total:
        return f"all {total:,} rows"
    return f"{scored:,} of {total:,} rows, {sampling} sample (fixed seed)"


def evaluate(
    loaded_or_model_path: LoadedModel | str | os.PathLike,
    data_file_or_records: str | os.PathLike | Sequence[dict] | pd.DataFrame,
    config: EvalConfig | None = None,
    *,
    labels: Sequence[str] | None = None,
    run_dir: str | os.PathLike | None = None,
    log: RunLog | None = None,
    progress: bool = True,
) -> EvalResult:
    """Greedy replies to every eval row, scored with the GEN_QA suite and, for label tasks, label metrics.

    labels: the label set; None infers it when the references are categorical (else label metrics are skipped).
    run_dir: where to save the result (see EvalResult.save). log: a RunLog that gets progress and one metric row.
    """
    from nbtoolkit.models import LoadedModel, load_model

    config = config or EvalConfig()
    loaded = loaded_or_model_path if isinstance(loaded_or_model_path, LoadedModel) else load_model(
        loaded_or_model_path)
    examples = load_eval_examples(data_file_or_records)
    labels = list(labels) if labels is not None else infer_labels([e.reference for e in examples])
    rows, sampling = sample_rows(examples, config.limit, labels, seed=config.seed)
    rows_total = len(examples)
    examples = [examples[i] for i in rows]
    references = [e.reference for e in examples]
    if log is not None:
        log.info(f"evaluating {loaded.spec.name} on {describe_rows(len(examples), rows_total, sampling)} "
                 f"(labels: {labels or 'free text'}, max_new_tokens {config.max_new_tokens}, "
                 f"batch {config.batch_size})")

    started = time.perf_counter()
    conversations = [e.conversation for e in examples]
    # The label log-likelihoods come from the same prompt pass as the replies.
    continuations = label_continuations(loaded.tokenizer, labels) if labels and config.loglik else ()
    generations = _generate(loaded, conversations, config, log, progress, continuations)
    seconds = time.perf_counter() - started
    replies = [g.text for g in generations]

    metrics: dict[str, float] = {"n": len(examples), "rows_total": rows_total}
    metrics.update(gen_qa_metrics(replies, references))
    metrics.update(response_length_metrics(replies, [g.n_tokens for g in generations]))
    metrics["hit_max_new_tokens"] = sum(g.truncated for g in generations)
    metrics["generation_seconds"] = seconds
    metrics["samples_per_second"] = len(examples) / seconds if seconds else math.nan

    predictions = pd.DataFrame({
        "row": rows,
        "query": [_excerpt(e.query) for e in examples],
        "reference": references,
        "reply": replies,
        "predicted_label": [None] * len(examples),
        "correct": [bool(exact_match(r, ref)) for r, ref in zip(replies, references)],
        "reply_tokens": [g.n_tokens for g in generations],
        "reply_chars": [len(r) for r in replies],
        "hit_max_new_tokens": [bool(g.truncated) for g in generations],
    })
    confusion = per_class = None
    if labels:
        truth = [reference_label(r, labels) for r in references]
        predicted = label_predictions(replies, labels)
        metrics.update(label_metrics(replies, truth, labels))
        predictions["predicted_label"] = predicted
        predictions["correct"] = [p == t for p, t in zip(predicted, truth)]
        confusion = confusion_matrix(truth, predicted, labels)
        per_class = per_class_metrics(truth, predicted, labels)
        if config.loglik:
            scores = np.array([g.continuation_logprobs for g in generations], dtype=float)
            best = [labels[k] for k in scores.argmax(axis=1)]
            correct = [float(b == t) for b, t in zip(best, truth)]
            metrics["loglik_accuracy"], metrics["loglik_accuracy_stderr"] = mean_and_stderr(correct)
            predictions["loglik_label"] = best
            predictions["loglik_correct"] = [b == t for b, t in zip(best, truth)]

    result = EvalResult(metrics, predictions, confusion, per_class, config, labels, loaded.spec.name,
                        {"sampling": sampling, "rows": describe_rows(len(examples), rows_total, sampling)})
    if log is not None:
        log.metric(phase="eval", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        log.info(result.summary())
    if run_dir is not None:
        result.save(run_dir)
    return result


__all__ = [
    "NO_LABEL",
    "EvalExample",
    "EvalResult",
    "eval_example",
    "evaluate",
    "infer_labels",
    "label_logprobs",
    "load_eval_examples",
    "sample_rows",
    "describe_rows",
]

"""Reward functions for RFT, with the contract of the RFT Lambda (docs/metrics.md).

A reward function takes a list of samples `{"id", "messages" (the last one is the model's reply),
"reference_answer"}` and returns, in the same order, `{"id", "aggregate_reward_score": float, "metrics_list":
[{"name", "value", "type": "Metric" | "Reward"}]}`. The same function runs locally (tests, local GRPO through
`as_trl_reward`) and on AWS Lambda through `lambda_handler`. This module imports only the standard library and
nbtoolkit.labels, so it can be deployed as a Lambda without pandas or torch.

Shipped rewards (registry `REWARDS`):
- `binary_label`: +1 when the label extracted from the reply equals the reference, else -1 (the case study's reward).
- `format_aware`: +1 for the correct label alone ("HQ", "HQ."); a correct label inside more text earns
  0.5 / (1 + extra_words / 5), so it stays positive but shrinks with length; a wrong or missing label -1.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

from nbtoolkit.labels import extract_label

STACKOVERFLOW_LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")
METRIC_TYPES = ("Metric", "Reward")
# Below this share of prompts with a positive reward, do SFT before RFT (docs/hyperparameters.md).
MIN_POSITIVE_SHARE = 0.05
# Format-aware reward: the score of a correct label with `extra` words around it is 0.5 / (1 + extra / scale).
VERBOSE_WORD_SCALE = 5.0

Sample = dict[str, Any]
RewardOutput = dict[str, Any]
RewardFunction = Callable[[list[Sample]], list[RewardOutput]]

_EDGE_NOISE = " \t\r\n.,;:!?\"'`*()[]{}<>"


def reply_text(sample: Sample) -> str:
    """The model's reply: the content of the last message (a string or Converse-style [{"text": ...}] parts)."""
    messages = sample.get("messages") or []
    if not messages:
        return ""
    content = messages[-1].get("content", "") if isinstance(messages[-1], dict) else messages[-1]
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


def _canonical(text: str) -> str:
    return re.sub(r"[_\-\s]+", "_", text.strip()).lower()


def _labels_for(reference: str, labels: Sequence[str]) -> tuple[str, ...]:
    """The declared labels, plus the reference when it is not one of them (so any task gets a sensible reward)."""
    if not reference or any(_canonical(reference) == _canonical(label) for label in labels):
        return tuple(labels)
    return (*labels, reference)


def _metric(name: str, value: float, kind: str = "Metric") -> dict[str, Any]:
    return {"name": name, "value": float(value), "type": kind}


def score_label_reply(reply: str, reference: str, labels: Sequence[str] = STACKOVERFLOW_LABELS,
                      kind: str = "binary") -> tuple[float, list[dict[str, Any]]]:
    """The reward of one reply and its metrics_list; kind "binary" or "format" (see the module docstring)."""
    reference = (reference or "").strip()
    candidates = _labels_for(reference, labels)
    predicted = extract_label(reply, candidates)
    correct = predicted is not None and bool(reference) and _canonical(predicted) == _canonical(reference)
    bare = predicted is not None and _canonical(reply.strip(_EDGE_NOISE)) == _canonical(predicted)
    words = len(reply.split())
    if kind == "binary":
        score = 1.0 if correct else -1.0
    elif kind == "format":
        if not correct:
            score = -1.0
        elif bare:
            score = 1.0
        else:
            extra = max(words - len(predicted.split()), 1)
            score = 0.5 / (1.0 + extra / VERBOSE_WORD_SCALE)
    else:
        raise ValueError(f"unknown reward kind {kind!r}; choose 'binary' or 'format'")
    metrics = [
        _metric("label_correct", correct),
        _metric("has_label", predicted is not None),
        _metric("bare_label", bare),
        _metric("reply_words", words),
        _metric(f"{kind}_label_reward", score, "Reward"),
    ]
    return score, metrics


def make_label_reward(labels: Sequence[str] = STACKOVERFLOW_LABELS, kind: str = "binary") -> RewardFunction:
    """A Lambda-contract reward function for a label task: kind "binary" (+1/-1) or "format" (format-aware)."""
    if kind not in ("binary", "format"):
        raise ValueError(f"unknown reward kind {kind!r}; choose 'binary' or 'format'")
    labels = tuple(labels)
    if not labels:
        raise ValueError("make_label_reward needs at least one label")

    def reward(samples: list[Sample]) -> list[RewardOutput]:
        out = []
        for index, sample in enumerate(samples):
            score, metrics = score_label_reply(reply_text(sample), str(sample.get("reference_answer") or ""),
                                               labels, kind)
            out.append({"id": sample.get("id", str(index)), "aggregate_reward_score": score,
                        "metrics_list": metrics})
        return out

    reward.__name__ = f"{kind}_label_reward"
    reward.__doc__ = f"{kind} label reward over labels {list(labels)} (nbtoolkit.rewards)."
    return reward


binary_label_reward = make_label_reward(STACKOVERFLOW_LABELS, "binary")
binary_label_reward.__doc__ = ("+1 when the label extracted from the reply (tolerant: 'HQ.', 'The answer is hq') "
                               "equals reference_answer, else -1. Labels: HQ, LQ_EDIT, LQ_CLOSE, plus the reference.")
format_aware_reward = make_label_reward(STACKOVERFLOW_LABELS, "format")
format_aware_reward.__doc__ = ("+1 for the correct label alone; 0.5 / (1 + extra_words / 5) for the correct label "
                               "inside more text; -1 for a wrong or missing label.")

REWARDS: dict[str, RewardFunction] = {"binary_label": binary_label_reward, "format_aware": format_aware_reward}


def get_reward(name: str, labels: Sequence[str] | None = None) -> RewardFunction:
    """A reward by registry name; with `labels`, the same kind of reward built for that label set."""
    if name not in REWARDS:
        from nbtoolkit.errors import unknown_name_message

        raise ValueError(unknown_name_message("reward", name, sorted(REWARDS)))
    if labels is None:
        return REWARDS[name]
    return make_label_reward(labels, {"binary_label": "binary", "format_aware": "format"}[name])


# ---------------------------------------------------------------------------------------------------------------
# Running it elsewhere: AWS Lambda and TRL


def lambda_handler(event: Any, context: Any = None) -> list[RewardOutput]:
    """AWS Lambda entry point: event is a list of samples or {"samples": [...]} (a JSON string body also works).

    The reward is chosen by the environment: REWARD_NAME (default "binary_label") and REWARD_LABELS
    (comma-separated, default HQ,LQ_EDIT,LQ_CLOSE).
    """
    if isinstance(event, (str, bytes)):
        event = json.loads(event)
    if isinstance(event, dict):
        if "body" in event and "samples" not in event:
            return lambda_handler(event["body"], context)
        event = event.get("samples", [])
    if not isinstance(event, list):
        raise ValueError(f"expected a list of samples or {{'samples': [...]}}, got {type(event).__name__}")
    labels_env = os.environ.get("REWARD_LABELS")
    labels = [label.strip() for label in labels_env.split(",") if label.strip()] if labels_env else None
    return get_reward(os.environ.get("REWARD_NAME", "binary_label"), labels)(event)


def _messages(item: Any, role: str) -> list[dict[str, Any]]:
    if isinstance(item, list):
        return [dict(m) for m in item]
    return [{"role": role, "content": "" if item is None else str(item)}]


def as_trl_reward(fn: RewardFunction) -> Callable[..., list[float]]:
    """TRL GRPOTrainer's reward signature around a Lambda-contract function.

    `reward(prompts, completions, **kwargs) -> list[float]`: prompts and completions are strings or lists of chat
    messages; the dataset's `reference_answer` column (and `id`, if present) arrive as kwargs. "Metric" entries
    of metrics_list are averaged and passed to TRL's `log_metric` when the trainer provides it.
    """

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        references = kwargs.get("reference_answer") or [None] * len(completions)
        ids = kwargs.get("id") or [None] * len(completions)
        samples = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions)):
            messages = _messages(prompt, "user") + _messages(completion, "assistant")
            # Ids must be unique per call: GRPO repeats each prompt (and its id) once per generation.
            samples.append({"id": f"{ids[index]}#{index}" if ids[index] is not None else str(index),
                            "messages": messages, "reference_answer": references[index]})
        outputs = fn(samples)
        by_id = {str(o.get("id")): o for o in outputs}
        scores = [float(by_id.get(s["id"], {}).get("aggregate_reward_score", math.nan)) for s in samples]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            totals: dict[str, list[float]] = {}
            for output in outputs:
                for metric in output.get("metrics_list") or []:
                    if metric.get("type") == "Metric":
                        totals.setdefault(metric["name"], []).append(float(metric["value"]))
            for name, values in totals.items():
                log_metric(f"{fn.__name__}/{name}", sum(values) / len(values))
        return scores

    reward.__name__ = getattr(fn, "__name__", "reward")
    return reward


# ---------------------------------------------------------------------------------------------------------------
# Checking a reward function


class RewardCheck:
    """What verify_reward_function found: a per-sample `table` (DataFrame) and a list of `problems`."""

    def __init__(self, table: Any, problems: list[str]) -> None:
        self.table = table
        self.problems = problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"{len(self.problems)} problem(s): " + "; ".join(self.problems[:3])
        return f"RewardCheck({len(self.table)} samples, {state})"


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _output_problems(outputs: Any, samples: list[Sample], where: str) -> list[str]:
    """Contract violations in `outputs` for `samples`."""
    if not isinstance(outputs, list):
        return [f"{where}: returned {type(outputs).__name__}, expected a list of dicts"]
    problems = []
    if len(outputs) != len(samples):
        problems.append(f"{where}: returned {len(outputs)} results for {len(samples)} samples")
    for index, (output, sample) in enumerate(zip(outputs, samples)):
        tag = f"{where} sample {index} (id {sample.get('id')!r})"
        if not isinstance(output, dict):
            problems.append(f"{tag}: result is {type(output).__name__}, expected a dict")
            continue
        if "id" not in output or output.get("id") != sample.get("id"):
            problems.append(f"{tag}: result id {output.get('id')!r} does not match (same order, same ids)")
        score = output.get("aggregate_reward_score")
        if not _is_number(score):
            problems.append(f"{tag}: aggregate_reward_score is {score!r}, expected a float")
        elif not math.isfinite(float(score)):
            problems.append(f"{tag}: aggregate_reward_score is {score!r}, not finite")
        metrics = output.get("metrics_list", [])
        if not isinstance(metrics, list):
            problems.append(f"{tag}: metrics_list is {type(metrics).__name__}, expected a list")
            continue
        for metric in metrics:
            if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
                problems.append(f"{tag}: metrics_list entry {metric!r} needs a string name")
            elif metric.get("type") not in METRIC_TYPES:
                problems.append(f"{tag}: metric {metric['name']!r} has type {metric.get('type')!r}, "
                                f"expected one of {list(METRIC_TYPES)}")
            elif not _is_number(metric.get("value")) or not math.isfinite(float(metric["value"])):
                problems.append(f"{tag}: metric {metric['name']!r} value {metric.get('value')!r} is not a finite "
                                "number")
    return problems


def _with_reply(sample: Sample, reply: str, suffix: str) -> Sample:
    messages = [dict(m) for m in (sample.get("messages") or [])]
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    return {**sample, "id": f"{sample.get('id', '')}{suffix}", "messages": [*messages,
                                                                          {"role": "assistant", "content": reply}]}


def _call(fn: RewardFunction, samples: list[Sample], where: str) -> tuple[Any, list[str]]:
    try:
        return fn(samples), []
    except Exception as error:  # a broken reward function is what this check reports
        return None, [f"{where}: raised {type(error).__name__}: {error}"]


def verify_reward_function(fn: RewardFunction, samples: Sequence[Sample]) -> RewardCheck:
    """Run `fn` on `samples` and check the Lambda contract; never raises for a broken function.

    Checks: a list of the same length with the same ids in order, finite float scores, valid metrics_list
    entries, and, for every sample with a reference_answer, that replying with the reference scores higher than
    replying with another sample's reference (or with "no idea" when all references are equal).
    """
    import pandas as pd

    samples = [dict(s) for s in samples]
    outputs, problems = _call(fn, samples, "samples")
    if outputs is not None:
        problems += _output_problems(outputs, samples, "samples")
    valid = isinstance(outputs, list) and len(outputs) == len(samples)
    rows = []
    for index, sample in enumerate(samples):
        output = outputs[index] if valid and isinstance(outputs[index], dict) else {}
        row = {"id": sample.get("id"), "reply": reply_text(sample)[:120], "reference": sample.get("reference_answer"),
               "score": output.get("aggregate_reward_score")}
        for metric in output.get("metrics_list") or []:
            if isinstance(metric, dict) and isinstance(metric.get("name"), str):
                row[metric["name"]] = metric.get("value")
        rows.append(row)

    references = [str(s["reference_answer"]) for s in samples if s.get("reference_answer") not in (None, "")]
    distinct = list(dict.fromkeys(r.strip() for r in references))
    pairs: list[Sample] = []
    probed_ids: list[Any] = []
    for sample in samples:
        reference = sample.get("reference_answer")
        if reference in (None, ""):
            continue
        reference = str(reference).strip()
        wrong = next((r for r in distinct if r != reference), "no idea")
        pairs += [_with_reply(sample, reference, "#correct"), _with_reply(sample, wrong, "#wrong")]
        probed_ids.append(sample.get("id"))
    if pairs:
        paired, call_problems = _call(fn, pairs, "correct/wrong probe")
        problems += call_problems
        contract = _output_problems(paired, pairs, "correct/wrong probe") if paired is not None else ["skip"]
        if paired is not None:
            problems += contract
        if not contract:
            for sample_id, k in zip(probed_ids, range(0, len(pairs), 2)):
                good, bad = (float(o["aggregate_reward_score"]) for o in paired[k:k + 2])
                if not good > bad:
                    problems.append(f"sample id {sample_id!r}: replying with the reference "
                                    f"{pairs[k]['reference_answer']!r} scores {good:g}, not more than the wrong "
                                    f"reply {reply_text(pairs[k + 1])!r} ({bad:g})")
    return RewardCheck(pd.DataFrame(rows), problems)


def positive_reward_share(fn: RewardFunction, samples: Sequence[Sample]) -> float:
    """Share of prompts where some reply earned a reward > 0 (replies to the same prompt are grouped).

    When the starting model earns a positive reward on under ~5% of prompts (MIN_POSITIVE_SHARE),
    RFT has almost no signal: do SFT first. When nearly every prompt already scores high, RFT has nothing to learn.
    """
    samples = list(samples)
    if not samples:
        return math.nan
    outputs = fn(samples)
    best: dict[str, float] = {}
    for sample, output in zip(samples, outputs):
        key = json.dumps((sample.get("messages") or [])[:-1], sort_keys=True, default=str)
        best[key] = max(best.get(key, -math.inf), float(output["aggregate_reward_score"]))
    return sum(score > 0 for score in best.values()) / len(best)


def rft_readiness(share: float) -> str:
    """Advice for a positive_reward_share value."""
    if math.isnan(share):
        return "no samples to judge"
    if share < MIN_POSITIVE_SHARE:
        return (f"only {share:.1%} of prompts earn a positive reward (under {MIN_POSITIVE_SHARE:.0%}): "
                "RFT would get almost no signal; do SFT first")
    if share > 0.95:
        return f"{share:.1%} of prompts already earn a positive reward: RFT has little left to learn"
    return f"{share:.1%} of prompts earn a positive reward: in the band where RFT can help"


__all__ = [
    "METRIC_TYPES",
    "MIN_POSITIVE_SHARE",
    "REWARDS",
    "STACKOVERFLOW_LABELS",
    "RewardCheck",
    "as_trl_reward",
    "binary_label_reward",
    "format_aware_reward",
    "get_reward",
    "lambda_handler",
    "make_label_reward",
    "positive_reward_share",
    "reply_text",
    "rft_readiness",
    "score_label_reply",
    "verify_reward_function",
]

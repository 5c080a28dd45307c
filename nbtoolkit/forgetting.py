"""Forgetting, measured: general-ability multiple choice and a retention probe, each compared with the base model.

- `evaluate_general(model, ["arc-easy", "piqa"])` scores log-likelihood multiple choice on benchmarks in the
  `{"query", "choices", "gold"}` form (the llm-foundry / lm-eval convention): each choice is scored as the
  continuation of `query + "\\nAnswer:"` on raw text (no chat template), and the most likely one is the answer.
  accuracy uses the summed log-probability, accuracy_norm divides it by the choice's length in characters
  (lm-eval's acc_norm). Rows are a seeded sample shared by every model, so deltas are paired.
- `retention_probe(model, base)` needs no data: the base model's greedy replies to held-out rehearsal prompts
  (never trained on) are scored under both models; the mean per-token KL(base || model), the drop in
  log-probability and the share of tokens where both models' top choice agrees say how far the model moved.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbtoolkit.errors import DataError, unknown_name_message
from nbtoolkit.metrics import mean_and_stderr

if TYPE_CHECKING:
    from nbtoolkit.models import LoadedModel
    from nbtoolkit.runtime.events import RunLog

# Known benchmarks: their file under a benchmark data directory, and chance accuracy.
BENCHMARKS: dict[str, tuple[str, float]] = {
    "arc-easy": ("arc-easy/arc_easy_test.jsonl", 0.25),
    "arc-challenge": ("arc-challenge/arc_challenge_test.jsonl", 0.25),
    "piqa": ("piqa/piqa_val_mc.jsonl", 0.5),
    "boolq": ("boolq/boolq_val_mc.jsonl", 0.5),
    "openbookqa": ("openbookqa/openbookqa_test_mc.jsonl", 0.25),
}
DEFAULT_BENCHMARKS = ("arc-easy", "piqa")  # above chance for a ~135M model (SOURCES.md)
DEFAULT_LIMIT = 200
DELIMITER = "\nAnswer:"
MAX_SEQUENCE_TOKENS = 512
DATA_DIR_ENV = "NBTOOLKIT_DATA_DIR"
GENERAL_DIR = "general"
RESULT_FILE = "general.json"
PREDICTIONS_FILE = "general_predictions.jsonl"


# ---------------------------------------------------------------------------------------------------------------
# Benchmarks


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: the query, its choices and the index of the right one."""

    query: str
    choices: tuple[str, ...]
    gold: int
    row: int = 0  # 1-based row in the source file


def benchmark_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where named benchmarks are looked for: data_dir, $NBTOOLKIT_DATA_DIR, ./data, then a `shared/data` folder
    beside the working directory or the nbtoolkit checkout (and their parents)."""
    found: list[Path] = []
    if data_dir is not None:
        found.append(Path(data_dir).expanduser())
    if os.environ.get(DATA_DIR_ENV):
        found.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    found.append(Path("data"))
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            found.append(parent / "shared" / "data")
    return list(dict.fromkeys(p.absolute() for p in found))


def find_benchmark(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The file of a named benchmark (see BENCHMARKS) in the first directory of benchmark_dirs() holding it."""
    if name not in BENCHMARKS:
        raise DataError(unknown_name_message("benchmark", name, BENCHMARKS)
                        + "; or pass the path of a {query, choices, gold} JSONL file")
    relative = BENCHMARKS[name][0]
    for directory in benchmark_dirs(data_dir):
        if (directory / relative).is_file():
            return directory / relative
    raise DataError(f"benchmark {name!r} not found: no {relative} under data_dir, ${DATA_DIR_ENV}, ./data or a "
                    "shared/data folder; pass data_dir= or the file's path")


def load_mc_benchmark(source: str | os.PathLike | Sequence[Mapping], *, limit: int | None = None, seed: int = 0,
                      data_dir: str | os.PathLike | None = None) -> list[MCItem]:
    """Items of a benchmark name, a JSONL/JSON/CSV/Parquet file of {query, choices, gold} rows, or such records.

    limit keeps a seeded random sample (the same rows for every model). Bad rows raise DataError with the row.
    """
    name = None
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        path = find_benchmark(text, data_dir) if text in BENCHMARKS else Path(text).expanduser()
        name = str(path)
        if not path.is_file():
            raise DataError("file not found", source=name)
        if path.suffix in (".jsonl", ".ndjson"):
            from nbtoolkit.data.formats import read_jsonl

            try:
                records = list(read_jsonl(path))
            except json.JSONDecodeError as error:
                raise DataError(f"not valid JSON Lines ({error.msg})", source=name, line=error.lineno) from None
        else:
            from nbtoolkit.data.loaders import load_table

            records = load_table(path).to_dict(orient="records")
    else:
        records = list(source)
    items = [_mc_item(record, row, name) for row, record in enumerate(records, 1)]
    if not items:
        raise DataError("no benchmark rows", source=name)
    if limit is not None and limit < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
        items = [items[i] for i in keep]
    return items


def _mc_item(record: Any, row: int, source: str | None) -> MCItem:
    if not isinstance(record, Mapping):
        raise DataError("expected an object {query, choices, gold}", source=source, row=row)
    for key in ("query", "choices", "gold"):
        if key not in record:
            raise DataError(unknown_name_message("field", key, list(record)) if record else f"no {key!r}",
                            source=source, row=row, column=key)
    query, choices, gold = record["query"], record["choices"], record["gold"]
    if isinstance(choices, np.ndarray):
        choices = choices.tolist()
    if isinstance(choices, str):
        try:
            choices = json.loads(choices)  # a CSV cell holding a JSON list
        except json.JSONDecodeError:
            pass
    if not isinstance(query, str) or not query.strip():
        raise DataError("query must be non-empty text", source=source, row=row, column="query")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError("choices must be a list of at least two non-empty strings", source=source, row=row,
                        column="choices")
    gold_index = _index(gold)
    if gold_index is None or not 0 <= gold_index < len(choices):
        raise DataError(f"gold {gold!r} is not an index into the {len(choices)} choices", source=source, row=row,
                        column="gold")
    return MCItem(query, tuple(choices), gold_index, row)


def _index(value: Any) -> int | None:
    """An integer index from an int, an integral float, or digits (CSV cells are strings); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def choice_logprobs(loaded: LoadedModel, items: Sequence[MCItem], *, batch_size: int = 16,
                    delimiter: str = DELIMITER, progress: bool = False) -> list[np.ndarray]:
    """Summed log-probability of each choice (" " + choice) after `query + delimiter`, per item.

    Every (item, choice) sequence is scored in length-sorted, left-padded batches; contexts are cut from the
    left when a sequence exceeds MAX_SEQUENCE_TOKENS.
    """
    import torch
    from tqdm.auto import tqdm

    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.plan.device
    sequences: list[tuple[int, int, list[int], int]] = []  # (item, choice, ids, continuation length)
    for i, item in enumerate(items):
        context = tokenizer(item.query + delimiter)["input_ids"]
        for k, choice in enumerate(item.choices):
            continuation = tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"]
            ids = (context + continuation)[-MAX_SEQUENCE_TOKENS:]
            sequences.append((i, k, ids, min(len(continuation), len(ids) - 1)))
    scores = [np.zeros(len(item.choices)) for item in items]
    order = sorted(range(len(sequences)), key=lambda s: len(sequences[s][2]))
    model.eval()
    bar = tqdm(total=len(order), desc="multiple choice", unit="choice", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [sequences[s] for s in order[start:start + batch_size]]
            width = max(len(ids) for _, _, ids, _ in batch)
            keep = max(n for *_, n in batch) + 1
            # Left padding puts every continuation at the end, so the LM head runs on the last `keep` positions only.
            input_ids = torch.full((len(batch), width), loaded.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, _, ids, _) in enumerate(batch):
                input_ids[r, width - len(ids):] = torch.tensor(ids)
                attention[r, width - len(ids):] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            with loaded.plan.autocast():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                               position_ids=positions.to(device), logits_to_keep=keep).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # position j predicts token width - keep + j + 1
            for r, (i, k, ids, n) in enumerate(batch):
                targets = torch.tensor(ids[len(ids) - n:], device=logprobs.device)
                scores[i][k] = float(logprobs[r, keep - n - 1:keep - 1].gather(-1, targets[:, None]).sum())
            bar.update(len(batch))
    bar.close()
    return scores


def score_benchmark(loaded: LoadedModel, items: Sequence[MCItem], *, batch_size: int = 16,
                    delimiter: str = DELIMITER, progress: bool = False) -> tuple[dict[str, float], pd.DataFrame]:
    """(metrics, per-item predictions) of one benchmark: accuracy and accuracy_norm with their stderr."""
    scores = choice_logprobs(loaded, items, batch_size=batch_size, delimiter=delimiter, progress=progress)
    lengths = [np.array([max(len(c.strip()) + 1, 1) for c in item.choices]) for item in items]
    predicted = [int(np.argmax(s)) for s in scores]
    predicted_norm = [int(np.argmax(s / n)) for s, n in zip(scores, lengths)]
    correct = [float(p == item.gold) for p, item in zip(predicted, items)]
    correct_norm = [float(p == item.gold) for p, item in zip(predicted_norm, items)]
    metrics: dict[str, float] = {"n": len(items)}
    metrics["accuracy"], metrics["accuracy_stderr"] = mean_and_stderr(correct)
    metrics["accuracy_norm"], metrics["accuracy_norm_stderr"] = mean_and_stderr(correct_norm)
    metrics["chance"] = float(np.mean([1 / len(item.choices) for item in items]))
    predictions = pd.DataFrame({"row": [item.row for item in items], "gold": [item.gold for item in items],
                                "predicted": predicted, "predicted_norm": predicted_norm,
                                "correct": [bool(c) for c in correct],
                                "correct_norm": [bool(c) for c in correct_norm],
                                "logprobs": [s.round(4).tolist() for s in scores]})
    return metrics, predictions


# ---------------------------------------------------------------------------------------------------------------
# General evaluation


@dataclass
class GeneralEvalResult:
    """Accuracy per benchmark (and the retention probe when run) for one model; save/load round-trips it."""

    model: str
    metrics: dict[str, dict[str, float]]
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    retention: dict[str, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_accuracy(self) -> float:
        """Mean accuracy over the benchmarks (the headline general metric)."""
        values = [m["accuracy"] for m in self.metrics.values()]
        return float(np.mean(values)) if values else math.nan

    def headline(self) -> dict[str, float]:
        """Flat metrics for tables: <benchmark>_accuracy (+ _stderr), general_accuracy, retention numbers."""
        out = {}
        for name, m in self.metrics.items():
            out[f"{name}_accuracy"] = m["accuracy"]
            out[f"{name}_accuracy_stderr"] = m["accuracy_stderr"]
        if self.metrics:
            out["general_accuracy"] = self.mean_accuracy
        for key, value in (self.retention or {}).items():
            if key in ("mean_kl", "logprob_drop", "top1_agreement"):
                out[f"retention_{key}"] = value
        return out

    def table(self) -> pd.DataFrame:
        """Benchmarks (rows) with accuracy, accuracy_norm, their stderr, n and chance."""
        return pd.DataFrame(self.metrics).T.rename_axis("benchmark")

    def compare(self, base: GeneralEvalResult) -> pd.DataFrame:
        """Accuracy of base and this model per benchmark, the change, and its paired stderr (same rows)."""
        rows = []
        for name, m in self.metrics.items():
            if name not in base.metrics:
                continue
            b = base.metrics[name]
            stderr = math.hypot(m["accuracy_stderr"], b["accuracy_stderr"])
            mine, theirs = self.predictions.get(name), base.predictions.get(name)
            if mine is not None and theirs is not None and list(mine["row"]) == list(theirs["row"]):
                diff = mine["correct"].astype(float).to_numpy() - theirs["correct"].astype(float).to_numpy()
                stderr = mean_and_stderr(diff.tolist())[1]
            rows.append({"benchmark": name, "base": b["accuracy"], "model": m["accuracy"],
                         "delta": m["accuracy"] - b["accuracy"], "delta_stderr": stderr, "n": m["n"]})
        return pd.DataFrame(rows).set_index("benchmark") if rows else pd.DataFrame()

    def summary(self) -> str:
        lines = [f"{self.model}: general ability"]
        for name, m in self.metrics.items():
            lines.append(f"  {name:<14} accuracy {m['accuracy']:.3f} ± {m['accuracy_stderr']:.3f} "
                         f"(norm {m['accuracy_norm']:.3f}; n {int(m['n'])}; chance {m['chance']:.2f})")
        if self.retention:
            r = self.retention
            lines.append(f"  retention probe: KL {r['mean_kl']:.4f} nats/token, log-prob drop "
                         f"{r['logprob_drop']:.4f}, top-1 agreement {r['top1_agreement']:.3f} "
                         f"({int(r['n_prompts'])} held-out prompts)")
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike) -> Path:
        from nbtoolkit.data.formats import write_jsonl
        from nbtoolkit.runtime.events import write_json_atomic

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / RESULT_FILE, {"model": self.model, "metrics": self.metrics,
                                                    "retention": self.retention, "settings": self.settings})
        write_jsonl([{"benchmark": name, **row} for name, frame in self.predictions.items()
                     for row in frame.to_dict(orient="records")], directory / PREDICTIONS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GeneralEvalResult:
        from nbtoolkit.data.formats import read_jsonl

        directory = Path(directory)
        if (directory / GENERAL_DIR / RESULT_FILE).is_file():
            directory = directory / GENERAL_DIR  # a job's run directory
        data = json.loads((directory / RESULT_FILE).read_text())
        predictions: dict[str, pd.DataFrame] = {}
        if (directory / PREDICTIONS_FILE).is_file():
            frame = pd.DataFrame(list(read_jsonl(directory / PREDICTIONS_FILE)))
            if not frame.empty:
                predictions = {name: part.drop(columns="benchmark").reset_index(drop=True)
                               for name, part in frame.groupby("benchmark", sort=False)}
        return cls(data["model"], data["metrics"], predictions, data.get("retention"), data.get("settings") or {})


def _loaded(model: LoadedModel | str | os.PathLike) -> LoadedModel:
    from nbtoolkit.models import LoadedModel, load_model

    return model if isinstance(model, LoadedModel) else load_model(model)


def evaluate_general(
    model: LoadedModel | str | os.PathLike,
    benchmarks: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] = DEFAULT_BENCHMARKS,
    *,
    limit: int | None = DEFAULT_LIMIT,
    seed: int = 0,
    batch_size: int = 16,
    data_dir: str | os.PathLike | None = None,
    base_model: LoadedModel | str | os.PathLike | None = None,
    probe_prompts: int | None = None,
    log: RunLog | None = None,
    progress: bool = True,
) -> GeneralEvalResult:
    """Multiple-choice accuracy of `model` on each benchmark (names, files, or {name: file}).

    limit: rows per benchmark (a seeded sample; None: all; CPU time grows with rows x choices).
    base_model: also run retention_probe(model, base_model) (probe_prompts limits its prompts).
    """
    loaded = _loaded(model)
    named = dict(benchmarks) if isinstance(benchmarks, Mapping) else {
        (str(b) if str(b) in BENCHMARKS else Path(b).stem): b for b in benchmarks}
    metrics, predictions = {}, {}
    for index, (name, source) in enumerate(named.items()):
        items = load_mc_benchmark(source, limit=limit, seed=seed, data_dir=data_dir)
        if log is not None:
            log.info(f"{name}: scoring {len(items)} questions ({sum(len(i.choices) for i in items)} choices)")
            log.progress(index, len(named), phase="general_eval")
        metrics[name], predictions[name] = score_benchmark(loaded, items, batch_size=batch_size, progress=progress)
    retention = None
    if base_model is not None:
        if log is not None:
            log.info("retention probe against the base model")
        retention = retention_probe(loaded, base_model, max_prompts=probe_prompts, batch_size=batch_size // 2 or 1)
    result = GeneralEvalResult(loaded.spec.name, metrics, predictions, retention,
                               {"limit": limit, "seed": seed, "delimiter": DELIMITER,
                                "sources": {k: str(v) for k, v in named.items()}})
    if log is not None:
        log.progress(len(named), len(named), phase="general_eval")
        log.metric(phase="general_eval", **result.headline())
        log.info(result.summary())
    return result


# ---------------------------------------------------------------------------------------------------------------
# Retention probe


def _reply_logprobs(loaded: LoadedModel, sequences: Sequence[tuple[list[int], list[int]]]):
    """Log-softmax over the vocabulary at each reply position of each (prompt ids, reply ids) pair, one batch."""
    import torch

    width = max(len(p) + len(r) for p, r in sequences)
    input_ids = torch.full((len(sequences), width), loaded.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (p, r) in enumerate(sequences):
        input_ids[row, :len(p) + len(r)] = torch.tensor(p + r)
        attention[row, :len(p) + len(r)] = 1
    with torch.inference_mode(), loaded.plan.autocast():
        logits = loaded.model(input_ids=input_ids.to(loaded.plan.device),
                              attention_mask=attention.to(loaded.plan.device)).logits
    return [torch.log_softmax(logits[row, len(p) - 1:len(p) + len(r) - 1].float(), dim=-1).cpu()
            for row, (p, r) in enumerate(sequences)]


def retention_probe(model: LoadedModel | str | os.PathLike, base_model: LoadedModel | str | os.PathLike, *,
                    references: Sequence[dict] | None = None, max_prompts: int | None = None,
                    max_new_tokens: int = 48, batch_size: int = 8) -> dict[str, Any]:
    """How far `model` moved from `base_model` on held-out rehearsal prompts (no data needed).

    The base model's greedy replies to the held-out prompts (cached), or the chat `references` you give
    ({"messages": [user, assistant]}), are scored under both models. Returns mean_kl (KL(base || model) per reply
    token, nats), logprob_drop (base minus model log-probability of the reply tokens, per token), top1_agreement
    (share of reply tokens where both models' most likely token is the same), n_prompts, n_tokens, per_prompt.
    """
    import torch

    from nbtoolkit.generation import encode_prompts
    from nbtoolkit.models import answer_terminator_ids

    base = _loaded(base_model)
    tuned = _loaded(model)
    if len(base.tokenizer) != len(tuned.tokenizer):
        raise ValueError(f"the models use different tokenizers ({len(base.tokenizer)} vs {len(tuned.tokenizer)} "
                         "tokens): the retention probe compares one model with its own base")
    if references is None:
        from nbtoolkit.mixing.prompts import rehearsal_prompts
        from nbtoolkit.mixing.rehearsal import synthesize_rehearsal

        prompts = rehearsal_prompts(split="probe")
        if max_prompts is not None:
            prompts = prompts[::max(1, len(prompts) // max_prompts)][:max_prompts]
        references = synthesize_rehearsal(base, prompts=prompts, max_new_tokens=max_new_tokens, progress=False)
    tokenizer = base.tokenizer
    terminator = answer_terminator_ids(tokenizer)
    pairs = [(encode_prompts(tokenizer, [r["messages"][:-1]], None)[0],
              tokenizer(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"] + terminator)
             for r in references]
    rows, total = [], {"kl": 0.0, "drop": 0.0, "agree": 0.0, "tokens": 0}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        for k, (b, t) in enumerate(zip(_reply_logprobs(base, chunk), _reply_logprobs(tuned, chunk))):
            record, targets = references[start + k], torch.tensor(chunk[k][1])[:, None]
            kl = (b.exp() * (b - t)).sum(-1)
            drop = (b.gather(-1, targets) - t.gather(-1, targets)).squeeze(-1)
            agree = (b.argmax(-1) == t.argmax(-1)).float()
            rows.append({"id": record.get("id", start + k), "category": record.get("category"),
                         "tokens": len(targets), "kl": float(kl.mean()), "logprob_drop": float(drop.mean()),
                         "top1_agreement": float(agree.mean())})
            total["kl"] += float(kl.sum())
            total["drop"] += float(drop.sum())
            total["agree"] += float(agree.sum())
            total["tokens"] += len(targets)
    tokens = max(total["tokens"], 1)
    return {"mean_kl": total["kl"] / tokens, "logprob_drop": total["drop"] / tokens,
            "top1_agreement": total["agree"] / tokens, "n_prompts": len(rows), "n_tokens": total["tokens"],
            "per_prompt": rows}


# ---------------------------------------------------------------------------------------------------------------
# As a job, and side by side with the domain metric


def run_general_eval(config=None, *, model: str, run_dir: str, log: RunLog | None = None,
                     benchmarks: Sequence[str] | Mapping[str, str] = DEFAULT_BENCHMARKS,
                     limit: int | None = DEFAULT_LIMIT, seed: int = 0, batch_size: int = 16,
                     data_dir: str | None = None, base_model: str | None = None, probe_prompts: int | None = None,
                     **_: Any) -> dict[str, Any]:
    """Job function (kind "nbtoolkit.forgetting:run_general_eval"): evaluate_general into RUN_DIR/general/."""
    result = evaluate_general(model, benchmarks, limit=limit, seed=seed, batch_size=batch_size, data_dir=data_dir,
                              base_model=base_model, probe_prompts=probe_prompts, log=log, progress=False)
    out = result.save(Path(run_dir) / GENERAL_DIR)
    return {"metrics": result.headline(), "general_dir": str(out)}


GENERAL_EVAL_KIND = "nbtoolkit.forgetting:run_general_eval"


def forgetting_table(domain: Mapping[str, Mapping[str, float]],
                     general: Mapping[str, GeneralEvalResult | Mapping[str, float]], *,
                     domain_metrics: Sequence[str] = ("label_accuracy", "exact_match")) -> pd.DataFrame:
    """Domain and general metrics (rows) by stage (columns), with each stage's change from the previous one."""
    from nbtoolkit.plots import stage_table

    stages: dict[str, dict[str, float]] = {}
    for stage in dict.fromkeys([*domain, *general]):
        values = {k: v for k, v in (domain.get(stage) or {}).items() if k in domain_metrics}
        g = general.get(stage)
        if g is not None:
            values.update(g.headline() if isinstance(g, GeneralEvalResult) else dict(g))
        stages[stage] = values
    order = [*domain_metrics, "general_accuracy",
             *sorted({k for s in stages.values() for k in s if k.endswith("_accuracy") and k != "general_accuracy"
                      and k not in domain_metrics}),
             "retention_mean_kl", "retention_logprob_drop", "retention_top1_agreement"]
    return stage_table(stages, metrics=order)


__all__ = [
    "BENCHMARKS", "DEFAULT_BENCHMARKS", "GENERAL_EVAL_KIND", "GeneralEvalResult", "MCItem", "benchmark_dirs",
    "choice_logprobs", "evaluate_general", "find_benchmark", "forgetting_table", "load_mc_benchmark",
    "retention_probe", "run_general_eval", "score_benchmark",
]

"""The main job: prepare data, then evaluate the baseline model (later stages: SFT, RFT, compare)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from nbtoolkit.data.formats import write_jsonl
from nbtoolkit.data.prepare import PrepareConfig, PreparedData, prepare_dataset
from nbtoolkit.data.synthetic import make_stackoverflow_dataset
from nbtoolkit.errors import unknown_name_message
from nbtoolkit.metrics import classification_metrics, confusion_matrix, label_predictions

PROFILES = ("demo", "tiny")


@dataclass(frozen=True)
class PipelineConfig:
    """What the main job runs; `profile` picks sizes (demo: the embedded model, tiny: a random 2-layer model)."""

    data: str | None = field(default=None, metadata={"help": "input file; None: the synthetic demo dataset"})
    profile: str = field(default="demo", metadata={"help": "demo or tiny"})
    model: str | None = field(default=None, metadata={"help": "model name or path; None: the profile's model"})
    synthetic_rows: int = field(default=1500, metadata={"help": "rows of synthetic data when no data is given"})
    baseline_samples: int = field(default=60, metadata={"help": "eval rows scored at baseline (0: all)"})
    max_new_tokens: int = field(default=24, metadata={"help": "reply length limit at evaluation"})
    max_prompt_tokens: int = field(default=384, metadata={"help": "user turns are cut to this many tokens"})
    batch_size: int = field(default=16, metadata={"help": "generation batch size"})
    seed: int = field(default=0, metadata={"help": "seed for synthetic data and splits"})
    runs_dir: str = field(default="runs", metadata={"help": "parent directory of run directories"})

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(unknown_name_message("profile", self.profile, PROFILES))
        for name in ("synthetic_rows", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.baseline_samples < 0:
            raise ValueError("baseline_samples must be 0 (all) or more")


@dataclass
class StageResult:
    """Metrics and outputs of one evaluated stage."""

    stage: str
    model: str
    metrics: dict
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    seconds: float


def new_run_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh run directory `<parent>/<prefix>-<UTC time>[-n]`; never an existing one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")


def evaluate_stage(stage: str, loaded, prepared: PreparedData, config: PipelineConfig, out_dir: Path,
                   *, progress: bool = True) -> StageResult:
    """Generate replies for the eval split and score them; writes predictions.jsonl and metrics.json."""
    from nbtoolkit.generation import generate_replies

    rows = prepared.splits["eval"]
    if config.baseline_samples:
        rows = rows.iloc[: config.baseline_samples]
    conversations = [[m for m in r["messages"] if m["role"] != "assistant"] for r in
                     prepared.records("eval", "chat")[: len(rows)]]
    references = rows["answer"].tolist()
    started = time.perf_counter()
    replies = generate_replies(loaded, conversations, max_new_tokens=config.max_new_tokens,
                               batch_size=config.batch_size, max_prompt_tokens=config.max_prompt_tokens,
                               progress=progress)
    seconds = time.perf_counter() - started
    texts = [r.text for r in replies]
    labels = list(prepared.labels or ())
    metrics = classification_metrics(texts, references, labels)
    metrics["mean_reply_tokens"] = sum(r.n_tokens for r in replies) / max(1, len(replies))
    metrics["hit_max_new_tokens"] = sum(r.truncated for r in replies)
    metrics["samples_per_second"] = len(replies) / seconds if seconds else float("nan")
    predicted = label_predictions(texts, labels)
    predictions = pd.DataFrame({"row": rows.index, "reference": references, "reply": texts,
                                "predicted_label": predicted, "reply_tokens": [r.n_tokens for r in replies],
                                "hit_max_new_tokens": [r.truncated for r in replies]})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(predictions.to_dict(orient="records"), out_dir / "predictions.jsonl")
    (out_dir / "metrics.json").write_text(json.dumps({"stage": stage, "model": loaded.spec.name, **metrics},
                                                     indent=2))
    return StageResult(stage, loaded.spec.name, metrics, confusion_matrix(references, predicted, labels),
                       predictions, seconds)


def _profile_model(config: PipelineConfig):
    from nbtoolkit.models import DEFAULT_MODEL, load_model, tiny_model

    if config.model:
        return load_model(config.model)
    if config.profile == "tiny":
        return tiny_model(seed=config.seed)
    return load_model(DEFAULT_MODEL)


def run_pipeline(config: PipelineConfig | None = None, *, progress: bool = True, log=print) -> dict:
    """Run every stage in a new run directory and return the summary (also written to summary.json)."""
    config = config or PipelineConfig()
    run_dir = new_run_dir(config.runs_dir, "pipeline")
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    log(f"run directory: {run_dir}")

    if config.data is None:
        rows = config.synthetic_rows if config.profile == "demo" else min(config.synthetic_rows, 120)
        data = make_stackoverflow_dataset(rows, seed=config.seed)
        log(f"[1/2] data: {rows:,} synthetic Stack Overflow-like rows (no real data given)")
    else:
        data = config.data
        log(f"[1/2] data: {data}")
    prepared = prepare_dataset(data, PrepareConfig(seed=config.seed), out_dir=run_dir / "data")
    log(prepared.summary())
    if not prepared.ok:
        raise SystemExit(f"data validation failed; see {run_dir / 'data' / 'validation.json'}")

    loaded = _profile_model(config)
    log(f"[2/2] baseline evaluation of {loaded.spec.name} on {config.baseline_samples or 'all'} eval rows "
        f"({loaded.plan.device}, autocast {loaded.plan.autocast_dtype})")
    baseline = evaluate_stage("baseline", loaded, prepared, config, run_dir / "baseline", progress=progress)
    log(format_stage(baseline))
    summary = {"run_dir": str(run_dir), "stages": {"baseline": baseline.metrics},
               "data": {k: len(v) for k, v in prepared.splits.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_stage(result: StageResult) -> str:
    """A short text report of one stage: headline metrics and the confusion matrix."""
    m = result.metrics
    lines = [f"{result.stage} ({result.model}, {m['n']} samples, {result.seconds:.1f} s, "
             f"{m['samples_per_second']:.2f} samples/s)",
             f"  exact match {m['exact_match']:.3f} ± {m['exact_match_stderr']:.3f} | quasi exact match "
             f"{m['quasi_exact_match']:.3f} | label accuracy {m['label_accuracy']:.3f} ± "
             f"{m['label_accuracy_stderr']:.3f} | no valid label {m['no_valid_prediction']} | "
             f"mean reply {m['mean_reply_tokens']:.1f} tokens ({m['hit_max_new_tokens']} hit the limit)",
             "  confusion matrix (rows: true label, columns: predicted):",
             "    " + result.confusion.to_string().replace("\n", "\n    ")]
    return "\n".join(lines)

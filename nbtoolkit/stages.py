"""The stages of a customization run, in one place: the stage list, the profiles (sizes of a run), and
StageSummary, the one shape of `stages.json`.

`nbtoolkit.pipeline.run_pipeline` and the notebooks' `nbtoolkit.workspace.Workspace` write stages.json through
StageSummary, and `nbtoolkit.ui.ResultsView` reads it the same way, so a pipeline directory and a notebook
workdir look alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nbtoolkit.runtime.events import read_json, write_json_atomic

STAGES = ("baseline", "sft", "rft")
TRAINING_STAGES = ("sft", "rft")  # the stages that train a model (the baseline is the base model itself)
STAGES_FILE = "stages.json"
RETENTION = "retention"  # the general check that needs no data (nbtoolkit.forgetting.retention_probe)


@dataclass(frozen=True)
class Profile:
    """Sizes of one pipeline run: which model, how many rows, steps and eval samples."""

    name: str
    description: str
    model: str
    synthetic_rows: int
    eval: dict[str, Any]
    sft: dict[str, Any]
    rft: dict[str, Any]
    # the general-ability checks run by default ("checks") and their sizes: benchmark rows ("limit") and
    # held-out rehearsal prompts ("probe_prompts")
    general: dict[str, Any] = field(default_factory=dict)
    sft_method: str = "sft_lora"  # or "sft_full"
    # validation checks: rows scored ("rows", a fixed stratified sample) and from which fraction of the SFT
    # steps on its save steps are checked ("from")
    validation: dict[str, Any] = field(default_factory=lambda: {"rows": 300, "from": 0.5})


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        # The tiny tokenizer spells the system prompt in ~440 tokens, hence the long max_length.
        "tiny", "a random 2-layer model and a few steps: checks the plumbing in about a minute", "tiny", 120,
        eval={"limit": 8, "max_new_tokens": 4, "batch_size": 8, "max_prompt_tokens": 48},
        sft={"max_steps": 4, "warmup_steps": 1, "global_batch_size": 4, "micro_batch_size": 4, "save_steps": 2,
             "max_prompt_tokens": 48, "max_length": 640},
        rft={"max_steps": 2, "warmup_steps": 0, "global_batch_size": 4, "micro_batch_size": 4,
             "number_generation": 2, "save_steps": 2, "max_new_tokens": 4, "max_prompt_tokens": 48,
             "max_length": 640},
        # no retention probe by default: a random model cannot answer the rehearsal prompts
        general={"checks": (), "limit": 8, "probe_prompts": 4, "batch_size": 8},
        validation={"rows": 8, "from": 0.5}),
    "quick": Profile(
        "quick", "the embedded model, a short SFT and a few GRPO steps: the whole workflow in about 15 minutes",
        "smollm2-135m-instruct", 1500,
        eval={"limit": 60, "max_new_tokens": 8, "batch_size": 16, "max_prompt_tokens": 128},
        # micro batches of 4 keep peak memory under 4 GB (8 needs about 5.6 GB without gradient checkpointing)
        sft={"max_steps": 40, "warmup_steps": 6, "save_steps": 20, "micro_batch_size": 4, "max_prompt_tokens": 128,
             "max_length": 320},
        rft={"max_steps": 3, "warmup_steps": 0, "global_batch_size": 8, "save_steps": 3, "max_new_tokens": 8,
             "max_prompt_tokens": 128, "max_length": 320},
        general={"checks": (RETENTION,), "limit": 100, "probe_prompts": 16},
        validation={"rows": 60, "from": 0.5}),
    # Calibrated on the real Stack Overflow data (sft-eval-rft split, 500 held-out rows, 360 steps of 8 rows): full
    # fine-tuning at lr 5e-5 reached 0.900 exact match, LoRA r16 at lr 5e-4 0.850 (and at lr 2e-4 for 300 steps,
    # 0.836); full fine-tuning's steps cost about 15% more.
    "standard": Profile(
        "standard", "the embedded model, 360 full fine-tuning steps and 20 GRPO steps: about 35-40 minutes of SFT "
        "on 2 cores with native bf16, about 55 on AVX2-only cores", "smollm2-135m-instruct", 1500,
        eval={},
        sft={"lr": 5e-5, "max_steps": 360, "warmup_steps": 25, "save_steps": 60},
        # GRPO settings compared on 300 Stack Overflow validation rows from this profile's SFT model (0.900): 60-80
        # steps at lr 5e-5 (-0.3, -0.7 points), groups of 8 at lr 3e-5 (-1.0), 80 steps at lr 1e-4 (-3.0: it moved
        # the HQ/LQ_CLOSE boundary), these (-0.7 +- 0.7, 291 s). None beat SFT; the pipeline keeps RFT's model only
        # when validation does not drop (benchmarks/rft_recipe.py).
        rft={"max_steps": 20, "save_steps": 10},
        general={"checks": (RETENTION,), "limit": 500, "probe_prompts": None}, sft_method="sft_full"),
}


# Headline metrics carried into stages.json and the report (the full set stays in each eval directory).
HEADLINE = ("exact_match", "quasi_exact_match", "label_accuracy", "macro_f1", "no_valid_prediction", "rouge1",
            "f1_score", "loglik_accuracy", "reply_tokens_mean", "hit_max_new_tokens", "samples_per_second", "n",
            "rows_total")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    out = {k: metrics[k] for k in HEADLINE if k in metrics}
    for k in ("exact_match", "label_accuracy"):
        if f"{k}_stderr" in metrics:
            out[f"{k}_stderr"] = metrics[f"{k}_stderr"]
    return out


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """after - before for every number both have, except standard errors and row counts."""
    return {k: v - before[k] for k, v in after.items()
            if isinstance(v, (int, float)) and k in before and not k.endswith("_stderr")
            and k not in ("n", "rows_total")}


def eval_job_name(stage: str) -> str:
    """The name under which a stage's evaluation job is recorded in StageSummary.jobs."""
    return f"eval-{stage}"


@dataclass
class StageSummary:
    """stages.json: per-stage headline metrics (with deltas to the stage before), the jobs that ran, the model
    each training stage produced, and the general-ability checks. Read and written only through this class."""

    profile: str
    model: str | None = None
    stages: dict[str, dict[str, float]] = field(default_factory=dict)   # stage -> headline metrics
    deltas: dict[str, dict[str, float]] = field(default_factory=dict)   # stage -> change from the stage before
    jobs: dict[str, str] = field(default_factory=dict)                  # job name -> run directory
    resources: dict[str, dict[str, float | None]] = field(default_factory=dict)  # job name -> seconds, peak RSS
    models: dict[str, str] = field(default_factory=dict)                # training stage -> its model directory
    general: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> general-ability headline
    general_errors: dict[str, str] = field(default_factory=dict)        # stage -> why its general check failed
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)            # which rows the stage metrics come from
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> score on the validation rows
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)  # choices made on validation rows
    final_stage: str | None = None                                     # the stage whose model is the result
    seconds: float | None = None

    def record_eval(self, stage: str, metrics: dict[str, Any], run_dir: str | os.PathLike | None = None,
                    **more: Any) -> str | None:
        """A stage's evaluation: its headline metrics (with `more` fields, kept in stage order), its job, and the
        deltas it changes. Returns the stage before it, if any."""
        self.stages[stage] = {**headline(metrics), **more}
        order = {s: i for i, s in enumerate(STAGES)}
        self.stages = dict(sorted(self.stages.items(), key=lambda kv: order.get(kv[0], len(order))))
        if run_dir is not None:
            self.jobs[eval_job_name(stage)] = str(run_dir)
        names = list(self.stages)
        at = names.index(stage)
        for i in (at, at + 1):  # this stage against the one before, and the one after against this stage
            if 0 < i < len(names):
                self.deltas[names[i]] = _delta(self.stages[names[i - 1]], self.stages[names[i]])
        return names[at - 1] if at else None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in data.items() if v is not None or k == "final_stage"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSummary:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, directory: str | os.PathLike) -> Path:
        return write_json_atomic(Path(directory) / STAGES_FILE, self.to_dict())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> StageSummary | None:
        """The stages.json of a pipeline directory or notebook workdir; None when there is none (yet)."""
        data = read_json(Path(directory) / STAGES_FILE)
        return None if data is None else cls.from_dict(data)

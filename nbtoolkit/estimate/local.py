"""How long a local job takes on this machine: the work its config asks for over this machine's measured rate.

    estimate_job(spec)                      # cached or recorded rates; a shipped prior (labelled) otherwise
    estimate_job(spec, calibrate=True)      # time a couple of steps first when no rate is cached (under 30 s)
    estimate_jobs([spec, ...])              # a plan run one after another

Work per kind: SFT processes max_steps x global_batch_size sequences of the file's mean length after the
max_prompt_tokens and max_length cuts (training tokens); RFT samples global_batch_size replies per step, each
a prompt plus up to max_new_tokens (rollout tokens; the extra prompts a step samples to find groups whose rewards
differ are inside the calibrated step's rate), after the precheck has drawn number_generation replies to each of
its prompts (sampled tokens, timed at their own rate); eval reads each
row's prompt and writes up to max_new_tokens (eval tokens).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.estimate.core import Estimate, Rate
from nbtoolkit.estimate.rates import (
    ESTIMATE_FILE,
    absorb_finished_runs,
    cached_entry,
    machine_id,
    prior_rate,
    rate_from_entry,
    rate_key,
    run_calibration,
    sampling_rate,
    store_calibration,
)
from nbtoolkit.estimate.tokens import TokenStats, model_tokenizer, token_stats
from nbtoolkit.runtime.events import RESULT_FILE, read_json, write_json_atomic

ESTIMATED_KINDS = ("sft_lora", "sft_full", "rft_lora", "eval")
EVAL_LOSS_ROWS = 64  # nbtoolkit.training.sft.EVAL_ROWS: the periodic eval loss reads this many rows
FORWARD_SPEEDUP = 3.0  # a forward pass alone costs about a third of forward + backward
NO_RATE = ("no rate for this machine yet: calibrate (estimate_job(spec, calibrate=True), the form's Calibrate "
           "button or `nbtoolkit pipeline --estimate-only`; about 30 s per job kind) or finish one job of this kind")


@dataclass(frozen=True)
class Work:
    """What a job's config asks for: units processed in its busy time, steps, seconds no rate covers, and
    (RFT) the tokens dynamic sampling generates before training."""

    busy: float
    steps: int
    extra_seconds: float
    detail: str
    sampling: float = 0.0
    row_tokens: float | None = None  # mean tokens of a row (SFT: sequence; RFT, eval: prompt)


def job_work(spec: Any, stats: TokenStats, eval_stats: TokenStats | None = None, rate: Rate | None = None) -> Work:
    """The work of a built-in job on the rows counted in `stats` (eval_stats: the SFT eval-loss rows)."""
    config = spec.config
    if spec.kind in ("sft_lora", "sft_full"):
        mean = stats.mean_sequence(config.max_length, config.max_prompt_tokens)
        busy = config.max_steps * config.global_batch_size * mean
        extra = stats.tokenize_seconds
        if eval_stats is not None and rate is not None:
            evals = config.max_steps // config.save_steps + (config.max_steps % config.save_steps > 0)
            rows = min(EVAL_LOSS_ROWS, eval_stats.rows)
            eval_tokens = evals * rows * eval_stats.mean_sequence(config.max_length, config.max_prompt_tokens)
            extra += eval_tokens / (FORWARD_SPEEDUP * rate.middle)
        return Work(busy, config.max_steps, extra, f"{config.max_steps} steps x {config.global_batch_size} rows x "
                                                   f"{mean:.0f} tokens", row_tokens=mean)
    if spec.kind == "rft_lora":
        from nbtoolkit.training.rft import PRECHECK_PROMPTS

        prompt = stats.mean_prompt(config.max_prompt_tokens)
        precheck = (spec.extra or {}).get("precheck_prompts", PRECHECK_PROMPTS)
        sampled = min(precheck, stats.rows) * config.number_generation
        if config.label_groups:  # each prompt runs once, its labels (a few tokens) beside it
            prompts = config.global_batch_size // config.number_generation
            return Work(config.max_steps * prompts * prompt, config.max_steps, stats.tokenize_seconds,
                        f"{config.max_steps} steps x {prompts} prompts x {prompt:.0f} tokens, every label scored",
                        sampling=sampled * (prompt + config.max_new_tokens), row_tokens=prompt)
        per_step = config.global_batch_size * (prompt + config.max_new_tokens)
        return Work(config.max_steps * per_step, config.max_steps, stats.tokenize_seconds,
                    f"{config.max_steps} steps x {config.global_batch_size} replies x ({prompt:.0f} prompt + "
                    f"{config.max_new_tokens} new tokens)", sampling=sampled * (prompt + config.max_new_tokens),
                    row_tokens=prompt)
    if spec.kind == "eval":
        rows = min(config.limit, stats.rows) if config.limit else stats.rows
        prompt = stats.mean_prompt(config.max_prompt_tokens)
        return Work(rows * (prompt + config.max_new_tokens), 0, 0.0,
                    f"{rows} rows x ({prompt:.0f} prompt + {config.max_new_tokens} new tokens)", row_tokens=prompt)
    raise ValueError(f"no estimate for job kind {spec.kind!r}")


def data_file(spec: Any) -> str:
    """The file a built-in job reads its rows from."""
    return spec.eval_file or spec.train_file if spec.kind == "eval" else spec.train_file


def _stats(spec: Any, model: str, path: str | None) -> TokenStats:
    tokenizer = model_tokenizer(model)
    return token_stats(path or data_file(spec), tokenizer, tokenizer_name=model)


@dataclass(frozen=True)
class JobEstimate:
    """An estimate with what a run directory records beside it: the rate key and the planned work."""

    estimate: Estimate | None
    key: str
    work: Work
    message: str = ""

    def launch_record(self) -> dict[str, Any]:
        """What estimate.json holds (the actual time comes from result.json when the job ends)."""
        return {"estimate": self.estimate.to_dict() if self.estimate is not None else None,
                "message": self.message, "key": self.key, "machine": machine_id(), "busy_work": self.work.busy,
                "sampling_work": self.work.sampling, "row_tokens": self.work.row_tokens,
                "steps": self.work.steps, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def estimate_spec(spec: Any, *, calibrate: bool = False, runs_dir: str | os.PathLike | None = None,
                  rate_model: str | None = None, cache: Path | None = None, allow_prior: bool = True) -> JobEstimate:
    """Estimate one built-in job. rate_model: the model whose rates apply (e.g. the base model of a run
    directory the job starts from). calibrate=True times a couple of steps when no rate is known yet."""
    if spec.kind not in ESTIMATED_KINDS:
        raise ValueError(f"no estimate for job kind {spec.kind!r}: built-in kinds are {ESTIMATED_KINDS}")
    model = rate_model or spec.model
    key = rate_key(spec.kind, spec.config, model)
    if runs_dir is not None:
        absorb_finished_runs(runs_dir, cache)
    stats = _stats(spec, model, None)
    row_tokens = float(row_lengths(spec, stats).mean())
    entry = cached_entry(key, cache)
    rate = rate_from_entry(spec.kind, entry, row_tokens)
    if rate is None and calibrate:
        rate = calibrate_spec(spec, rate_model=model, cache=cache)
    other_length = False
    if rate is None:  # a rate measured on rows of another length: better than a prior, and said
        rate = rate_from_entry(spec.kind, entry)
        other_length = rate is not None
    if rate is None and allow_prior:
        rate = prior_rate(spec.kind, model)
    eval_stats = _stats(spec, model, spec.eval_file) if spec.kind.startswith("sft") and spec.eval_file else None
    work = job_work(spec, stats, eval_stats, rate)
    if rate is None:
        return JobEstimate(None, key, work, NO_RATE)
    notes = [work.detail]
    if other_length:
        notes.append(f"rate measured on rows of another length than these ({row_tokens:.0f} tokens): calibrate "
                     "for a closer figure")
    extra_seconds = work.extra_seconds
    if work.sampling:
        sampled = sampling_rate(cached_entry(key, cache), model)
        if sampled is None:
            notes.append("sampling before training: not timed (no sampling rate for this machine yet)")
        else:
            extra_seconds += work.sampling / sampled[0]
            notes.append(f"sampling before training (precheck, dynamic sampling): {work.sampling / sampled[0]:.0f} s "
                         f"at {sampled[0]:,.0f} sampled tokens/s ({sampled[1]})")
    checks = _validation_checks(spec, model, calibrate=calibrate, cache=cache)
    if checks is not None:
        extra_seconds += checks[0]
        notes.append(checks[1])
    what = f"{spec.kind} {spec.name!r}"
    estimate = Estimate.from_rate(what, work.busy, rate, extra_seconds=extra_seconds, notes=tuple(notes))
    return JobEstimate(estimate, key, work)


def _validation_checks(spec: Any, model: str, *, calibrate: bool, cache: Path | None) -> tuple[float, str] | None:
    """Seconds of an SFT job's checkpoint checks on validation rows (greedy replies at save steps from
    validate_from x max_steps on, and at the end), timed with this machine's eval rate; None without checks."""
    extra = spec.extra or {}
    path = extra.get("validation_file")
    if not spec.kind.startswith("sft") or not path or not spec.labels:
        return None
    from dataclasses import replace

    from nbtoolkit.training.config import EvalConfig

    config = spec.config
    first = max(1, math.ceil(float(extra.get("validate_from", 0.5)) * config.max_steps))
    steps = {s for s in range(first, config.max_steps + 1) if s % config.save_steps == 0} | {config.max_steps}
    stats = _stats(spec, model, path)
    rows = min(int(extra.get("validation_rows") or stats.rows), stats.rows)
    new_tokens = int(stats.answer.max())  # the longest label and its terminator
    eval_config = EvalConfig.for_platform("local", batch_size=config.micro_batch_size, loglik=False,
                                          max_new_tokens=new_tokens, max_prompt_tokens=config.max_prompt_tokens,
                                          limit=rows)
    what = f"{len(steps)} checkpoint checks x {rows} validation rows"
    entry = cached_entry(rate_key("eval", eval_config, model), cache)
    rate = rate_from_entry("eval", entry, stats.mean_prompt(config.max_prompt_tokens))
    if rate is None and calibrate:
        rate = calibrate_spec(replace(spec, kind="eval", config=eval_config, eval_file=path, extra={}),
                              rate_model=model, cache=cache)
    rate = rate or rate_from_entry("eval", entry) or prior_rate("eval", model)
    if rate is None:
        return 0.0, f"{what}: not timed ({NO_RATE.split(':')[0]} for evaluation)"
    seconds = len(steps) * rows * (stats.mean_prompt(config.max_prompt_tokens) + new_tokens) / rate.middle
    return seconds, f"{what}: {seconds:.0f} s at the eval rate ({rate.source})"


def estimate_job(spec: Any, *, calibrate: bool = False, runs_dir: str | os.PathLike | None = None,
                 rate_model: str | None = None) -> Estimate:
    """The time range of one built-in job on this machine (raises when no rate is known; see estimate_spec)."""
    found = estimate_spec(spec, calibrate=calibrate, runs_dir=runs_dir, rate_model=rate_model)
    if found.estimate is None:
        raise ValueError(f"{spec.kind} {spec.name!r}: {found.message}")
    return found.estimate


def estimate_jobs(specs: list[Any], what: str = "plan", *, calibrate: bool = False,
                  runs_dir: str | os.PathLike | None = None, rate_model: str | None = None, at_once: int = 1,
                  notes: tuple[str, ...] = ()) -> Estimate:
    """Jobs one after another (at_once=1) or several at a time. Jobs without a rate, and custom kinds, are left
    out and named in the notes ('partial'); a plan none of whose jobs has a rate reads 'unknown'."""
    parts, missing, custom = [], [], []
    for spec in specs:
        if spec.kind not in ESTIMATED_KINDS:
            custom.append(spec.name)
            continue
        found = estimate_spec(spec, calibrate=calibrate, runs_dir=runs_dir, rate_model=rate_model)
        (parts.append(found.estimate) if found.estimate is not None else missing.append(spec.name))
    left_out = [f"not included, {NO_RATE}: {', '.join(missing)}"] if missing else []
    if custom:
        left_out.append(f"not included, not built-in job kinds: {', '.join(custom)}")
    what = f"{what} ({len(specs)} jobs{', partial' if left_out and parts else ''})"
    if at_once > 1:
        return Estimate.side_by_side(what, parts, at_once, (*left_out, *notes))
    return Estimate.in_sequence(what, parts, (*left_out, *notes))


def row_lengths(spec: Any, stats: TokenStats) -> np.ndarray:
    """A row's tokens as the job's cost sees them: the training sequence for SFT, the prompt otherwise."""
    config = spec.config
    if spec.kind.startswith("sft"):
        return stats.sequence_lengths(config.max_length, config.max_prompt_tokens)
    return stats.prompt_lengths(config.max_prompt_tokens)


def typical_rows(spec: Any, stats: TokenStats) -> list[int]:
    """The data file's rows, those closest to the mean length first: a token's cost depends on its batch's
    length, so a calibration on rows of about the mean length times an average batch."""
    lengths = row_lengths(spec, stats)
    nearest = np.argsort(np.abs(lengths - lengths.mean()), kind="stable")
    return [int(i) for i in stats.file_rows()[nearest]]


def calibrate_spec(spec: Any, *, rate_model: str | None = None, cache: Path | None = None) -> Rate:
    """Time a couple of steps of `spec` on a few of its rows (a subprocess, under 30 s with the embedded model),
    cache the rate for this machine, model, method and device plan, and return it."""
    model = rate_model or spec.model
    key = rate_key(spec.kind, spec.config, model)

    def work_of(small: Any, rows_file: Path) -> Work:
        return job_work(small, _stats(small, model, str(rows_file)))

    measured = run_calibration(spec, data_file(spec), work_of, rows=typical_rows(spec, _stats(spec, model, None)))
    store_calibration(key, measured, cache)
    rate = rate_from_entry(spec.kind, {"calibrated": measured})
    assert rate is not None
    return rate


# ---------------------------------------------------------------------------------------------------------------
# What a run directory records


def record_launch_estimate(run_dir: str | os.PathLike, found: JobEstimate) -> Path:
    return write_json_atomic(Path(run_dir) / ESTIMATE_FILE, found.launch_record())


def launch_estimate(run_dir: str | os.PathLike) -> Estimate | None:
    """The estimate a run directory recorded at launch (None when it has none)."""
    data = read_json(Path(run_dir) / ESTIMATE_FILE) or {}
    return Estimate.from_dict(data["estimate"]) if data.get("estimate") else None


def estimate_vs_actual(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The launch estimate beside the job's actual seconds (result.json), once it has ended; None otherwise.
    error is actual / middle of the range - 1 (+0.25: 25% slower than estimated)."""
    run_dir = Path(run_dir)
    estimate = launch_estimate(run_dir)
    result = read_json(run_dir / RESULT_FILE)
    if estimate is None or result is None:
        return None
    actual = result.get("seconds")
    middle = estimate.middle_seconds
    return {"run_dir": str(run_dir), "kind": result.get("kind"), "status": result.get("status"),
            "low_seconds": estimate.low_seconds, "high_seconds": estimate.high_seconds, "actual_seconds": actual,
            "error": actual / middle - 1 if actual and middle else None,
            "within_range": bool(actual is not None and estimate.contains(actual)), "source": estimate.source}


def estimate_for_launch(spec: Any, runs_dir: str | os.PathLike | None = None) -> JobEstimate | None:
    """What a dry run shows and a launch records: never calibrates, never raises (None for custom kinds or when
    the data cannot be read; the launch checks report those)."""
    if spec.kind not in ESTIMATED_KINDS or spec.config is None:
        return None
    try:
        return estimate_spec(spec, runs_dir=runs_dir)
    except Exception:  # noqa: BLE001 - an estimate must never stop a launch
        return None


def estimate_text(found: JobEstimate | None) -> str:
    """One line for a dry-run report."""
    if found is None:
        return "not available for this job"
    if found.estimate is None:
        return f"{found.work.detail}; {found.message}"
    return found.estimate.line().split(": ", 1)[1]

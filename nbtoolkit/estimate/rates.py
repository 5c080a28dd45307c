"""This machine's rates per (model, method, device plan): measured by a short calibration, refined by finished
jobs, cached in the user cache dir (estimates.json). A shipped prior is only a labelled fallback.

A rate is work units per second of a job's busy time (training steps or generation) plus the job's fixed seconds
(start, model load, precheck, export), both read from what a job writes: result.json `seconds`, and its output's
`train_seconds` (SFT, RFT) or `samples_per_second` (eval).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from nbtoolkit.errors import NbtoolkitError
from nbtoolkit.estimate.core import CALIBRATED_SPREAD, RECORDED_SPREAD, Rate
from nbtoolkit.runtime.events import JOB_FILE, RESULT_FILE, read_json, read_metrics, write_json_atomic
from nbtoolkit.runtime.spec import BUILTIN_KINDS

CACHE_FORMAT = 1
CACHE_FILE = "estimates.json"
ESTIMATE_FILE = "estimate.json"  # what a local job's run directory records at launch
CALIBRATION_STEPS = 2  # the first step warms up; the rate is read from the last
CALIBRATION_PROMPTS = 4  # RFT: prompts its precheck and its dynamic sampling each sample
CALIBRATION_TIMEOUT = 240.0
MAX_RECORDED = 20  # recorded jobs kept per key, newest last
# A rate applies to rows within this share of the length it was measured on: full SFT on 2 cores trained 279
# tokens/s on rows of 282 tokens, 182 on rows of 46 (each step also pays a fixed optimizer update).
LENGTH_TOLERANCE = 0.25
UNITS = {"sft": "training tokens", "rft_lora": "rollout tokens", "eval": "eval tokens"}
_LOCK = threading.Lock()


class CalibrationError(NbtoolkitError, RuntimeError):
    """The calibration job failed; the message holds its log tail."""


def unit_of(kind: str) -> str:
    return UNITS["sft"] if kind.startswith("sft") else UNITS[kind]


def cache_path() -> Path:
    """Where rates are cached: <nbtoolkit cache>/estimates.json ($NBTOOLKIT_CACHE moves it)."""
    from nbtoolkit.models import cache_root

    return cache_root() / CACHE_FILE


def machine_id() -> str:
    """This machine for rates: host, CPU model and cores (a rate measured elsewhere means little here)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{socket.gethostname()}/{cpu}/{os.cpu_count()} cores"


_PLAN: list[str] = []


def device_plan_id() -> str:
    """The device plan a job would get here (device, weights and autocast dtypes); imports torch once."""
    if not _PLAN:
        from nbtoolkit.models import plan_device

        plan = plan_device()
        _PLAN.append(f"{plan.device}/{plan.weights_dtype}/{plan.autocast_dtype or 'no-autocast'}")
    return _PLAN[0]


def model_id(model: str) -> str:
    """A model for rates: its registry name, or the resolved directory of a local model. A training run
    directory stands for the model it was trained from (same architecture, same cost per token)."""
    from nbtoolkit.models import resolve_model

    base = (read_json(Path(model) / JOB_FILE) or {}).get("model") if Path(model).is_dir() else None
    if base and base != model:
        return model_id(base)
    spec = resolve_model(model)
    return spec.source if spec.kind == "local" else spec.name


def method_id(kind: str, config: Any) -> str:
    """The method and the batch shape that change a token's cost (micro batch, group size, generation batch)."""
    if kind in ("sft_lora", "sft_full"):
        frozen = f"/frozen{config.frozen_layers}" if getattr(config, "frozen_layers", 0) else ""  # less backward
        return f"{kind}/mb{config.micro_batch_size}x{config.parallel_micro_batches}{frozen}"
    if kind == "rft_lora":
        labels = "/labels" if config.label_groups else ""  # every label scored: no sampling, another token cost
        return f"{kind}/mb{config.micro_batch_size}/g{config.number_generation}{labels}"
    return f"{kind}/b{config.batch_size}" + ("/loglik" if config.loglik else "")


def rate_key(kind: str, config: Any, model: str, *, plan: str | None = None, machine: str | None = None) -> str:
    return " | ".join((machine or machine_id(), model_id(model), method_id(kind, config), plan or device_plan_id()))


# ---------------------------------------------------------------------------------------------------------------
# The cache file


def _read_cache(path: Path) -> dict[str, Any]:
    data = read_json(path) or {}
    if data.get("format") != CACHE_FORMAT:
        return {"format": CACHE_FORMAT, "rates": {}}
    return data


def _update_cache(path: Path, key: str, update) -> None:
    with _LOCK:
        data = _read_cache(path)
        entry = data["rates"].setdefault(key, {})
        update(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)


def cached_entry(key: str, path: Path | None = None) -> dict[str, Any]:
    return _read_cache(path or cache_path())["rates"].get(key, {})


def store_calibration(key: str, measured: dict[str, Any], path: Path | None = None) -> None:
    def update(entry: dict) -> None:
        entry["calibrated"] = measured

    _update_cache(path or cache_path(), key, update)


def store_recorded(key: str, measured: dict[str, Any], path: Path | None = None) -> None:
    """Add a finished job's rate (once per run directory)."""
    def update(entry: dict) -> None:
        recorded = [r for r in entry.get("recorded", []) if r.get("run_dir") != measured.get("run_dir")]
        entry["recorded"] = [*recorded, measured][-MAX_RECORDED:]

    _update_cache(path or cache_path(), key, update)


# ---------------------------------------------------------------------------------------------------------------
# Reading a finished job


def busy_seconds(kind: str, output: dict[str, Any]) -> float | None:
    """Seconds a finished job spent on its steps (training) or replies (eval), from its returned output."""
    if kind in ("sft_lora", "sft_full", "rft_lora"):
        value = output.get("train_seconds")
        return float(value) if value else None
    metrics = output.get("metrics") or {}
    n, per_second = metrics.get("n"), metrics.get("samples_per_second")
    return n / per_second if n and per_second else None


def measured_from_run(run_dir: str | os.PathLike, *, work: float | None = None,
                      sampling_work: float | None = None) -> dict[str, Any] | None:
    """{"rate", "overhead_seconds", "seconds", "when", "run_dir"} of a COMPLETED run, or None when it cannot tell;
    with "sampling_rate" for an RFT run that did dynamic sampling.

    work: the units the job processed (SFT tells its tokens/s itself; RFT and eval need the planned work);
    sampling_work: the tokens RFT's dynamic sampling generated (its seconds are not overhead).
    """
    run_dir = Path(run_dir)
    result = read_json(run_dir / RESULT_FILE) or {}
    if result.get("status") != "COMPLETED" or not result.get("seconds"):
        return None
    output = result.get("output") or {}
    busy = busy_seconds(result.get("kind", ""), output)
    if not busy:
        return None
    rate = None
    if result.get("kind", "").startswith("sft"):
        rate = output.get("tokens_per_second")
    elif work:
        rate = work / busy
    if not rate:
        return None
    sampling_seconds = float(output.get("sampling_seconds") or 0.0)
    measured = {"rate": float(rate), "overhead_seconds": max(0.0, float(result["seconds"]) - busy - sampling_seconds),
                "seconds": float(result["seconds"]), "when": result.get("ended"), "run_dir": str(run_dir.resolve())}
    if sampling_work and sampling_seconds:
        measured["sampling_rate"] = sampling_work / sampling_seconds
    return measured


def _last_step_rate(run_dir: Path) -> float | None:
    """tokens/s of the last logged SFT step (the first one warms up)."""
    rows = [r for r in read_metrics(run_dir) if r.get("tokens_per_second")]
    return float(rows[-1]["tokens_per_second"]) if rows else None


def absorb_finished_runs(runs_dir: str | os.PathLike, path: Path | None = None) -> int:
    """Record the rates of finished local jobs under runs_dir (or a pipeline's or sweep's jobs/ below it) that
    recorded an estimate at launch; returns how many were new. Only runs of this machine count."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return 0
    path = path or cache_path()
    known = {r.get("run_dir") for entry in _read_cache(path)["rates"].values() for r in entry.get("recorded", [])}
    added = 0
    found = [*runs_dir.glob(f"*/{ESTIMATE_FILE}"), *runs_dir.glob(f"*/jobs/*/{ESTIMATE_FILE}")]  # pipelines, sweeps
    for estimate_file in sorted(found):
        run_dir = estimate_file.parent
        if str(run_dir.resolve()) in known:
            continue
        launch = read_json(estimate_file) or {}
        if not launch.get("key") or launch.get("machine") != machine_id():
            continue
        result = read_json(run_dir / RESULT_FILE) or {}
        output = result.get("output") or {}
        steps, planned = output.get("steps"), launch.get("steps")
        work = launch.get("busy_work")
        if work and steps and planned:
            work = work * steps / planned  # a job stopped early did less
        measured = measured_from_run(run_dir, work=work, sampling_work=launch.get("sampling_work"))
        if measured is not None:
            measured["row_tokens"] = launch.get("row_tokens")
            store_recorded(launch["key"], measured, path)
            added += 1
    return added


# ---------------------------------------------------------------------------------------------------------------
# Choosing a rate


def _priors() -> dict[str, Any]:
    return json.loads(resources.files("nbtoolkit.estimate").joinpath("data/local_priors.json").read_text())


def prior_rate(kind: str, model: str) -> Rate | None:
    """The shipped prior for the embedded model, wide and labelled: used only when calibration is off."""
    from nbtoolkit.models import DEFAULT_MODEL

    if model_id(model) != DEFAULT_MODEL:
        return None
    priors = _priors()
    entry = priors["rates"].get(kind)
    if entry is None:
        return None
    low, high = priors["spread"]
    return Rate(entry["rate"] * low, entry["rate"] * high, unit_of(kind), entry["overhead_seconds"],
                f"shipped prior, not this machine ({priors['measured_on']}, {priors['date']}); calibrate for a "
                "real figure", "prior")


def sampling_rate(entry: dict[str, Any], model: str) -> tuple[float, str] | None:
    """(sampled tokens per second of RFT's dynamic sampling, where it came from): finished jobs first, then the
    calibration, then the shipped prior for the embedded model."""
    recorded = [r["sampling_rate"] for r in entry.get("recorded") or [] if r.get("sampling_rate")]
    if recorded:
        return statistics.median(recorded), f"{len(recorded)} finished job{'s' if len(recorded) > 1 else ''}"
    calibrated = (entry.get("calibrated") or {}).get("sampling_rate")
    if calibrated:
        return calibrated, "calibrated"
    from nbtoolkit.models import DEFAULT_MODEL

    prior = _priors()["rates"].get("rft_sampling") if model_id(model) == DEFAULT_MODEL else None
    return (prior["rate"], "shipped prior") if prior else None


def near_length(measured: dict[str, Any] | None, row_tokens: float | None) -> bool:
    """Whether a rate measured on rows of measured["row_tokens"] applies to rows of row_tokens (unknown: yes)."""
    if measured is None:
        return False
    if not row_tokens or not measured.get("row_tokens"):
        return True
    return abs(measured["row_tokens"] / row_tokens - 1) <= LENGTH_TOLERANCE


def rate_from_entry(kind: str, entry: dict[str, Any], row_tokens: float | None = None) -> Rate | None:
    """Recorded jobs first (the real thing on this machine), else the calibration; with row_tokens, only those
    measured on rows of about that length (a token's cost depends on its batch's length)."""
    unit = unit_of(kind)
    recorded = [r for r in entry.get("recorded") or [] if near_length(r, row_tokens)]
    if recorded:
        rates = [r["rate"] for r in recorded]
        overhead = statistics.median(r["overhead_seconds"] for r in recorded)
        return Rate(min(rates) * (1 - RECORDED_SPREAD), max(rates) * (1 + RECORDED_SPREAD), unit, overhead,
                    f"{len(recorded)} finished job{'s' if len(recorded) > 1 else ''} on this machine, "
                    f"last {str(recorded[-1].get('when') or '')[:10]}", "recorded")
    calibrated = entry.get("calibrated")
    if near_length(calibrated, row_tokens):
        return Rate.around(calibrated["rate"], CALIBRATED_SPREAD, unit=unit,
                           overhead_seconds=calibrated["overhead_seconds"],
                           source=f"calibrated on this machine {str(calibrated.get('when') or '')[:10]} "
                                  f"({calibrated['seconds']:.0f} s)", kind="calibrated")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Calibration: the real job function on a few rows for a few steps, in a subprocess


def calibration_spec(spec: Any) -> tuple[Any, int]:
    """(the spec to time, rows it needs): the same method, model and batch shape, a couple of steps."""
    config = spec.config
    if spec.kind in ("sft_lora", "sft_full"):
        batch = config.micro_batch_size * config.parallel_micro_batches
        small = replace(config, max_steps=CALIBRATION_STEPS, warmup_steps=0, save_steps=CALIBRATION_STEPS,
                        logging_steps=1, global_batch_size=batch)
        return replace(spec, config=small, eval_file=None, extra={}), batch * CALIBRATION_STEPS
    if spec.kind == "rft_lora":
        # A GRPO step of 8 replies takes about 30 s on 2 cores: time one step of one prompt group (same group size,
        # same forward passes up to a group), and sample a few prompts for the precheck and dynamic sampling.
        group = config.number_generation
        if config.label_groups:  # one step of one forward pass of prompts scored on every label; nothing sampled
            prompts = min(config.micro_batch_size, config.global_batch_size // group)
            small = replace(config, max_steps=1, warmup_steps=0, save_steps=1, logging_steps=1,
                            global_batch_size=group * prompts, micro_batch_size=prompts)
            return (replace(spec, config=small, eval_file=None, extra={"precheck_prompts": CALIBRATION_PROMPTS}),
                    max(CALIBRATION_PROMPTS, prompts))
        micro = min(config.micro_batch_size, group)  # a micro batch above the group: the group in one pass
        one_group = group % micro == 0
        small = replace(config, max_steps=1, warmup_steps=0, save_steps=1, logging_steps=1,
                        global_batch_size=group if one_group else config.global_batch_size,
                        micro_batch_size=micro if one_group else config.micro_batch_size,
                        dynamic_sampling=min(config.dynamic_sampling, CALIBRATION_PROMPTS))
        prompts = small.global_batch_size // group
        return (replace(spec, config=small, eval_file=None, extra={"precheck_prompts": CALIBRATION_PROMPTS}),
                max(CALIBRATION_PROMPTS, prompts))
    if spec.kind == "eval":
        rows = 2 * config.batch_size
        return replace(spec, config=replace(config, limit=rows)), rows
    raise ValueError(f"no calibration for job kind {spec.kind!r}: built-in kinds are {BUILTIN_KINDS}")


def run_calibration(spec: Any, data_file: str, work_of: Any, *, rows: Sequence[int] | None = None,
                    timeout: float = CALIBRATION_TIMEOUT, python: str = sys.executable,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `spec` shrunk by calibration_spec on a few rows of `data_file` (the first of `rows`, row indices in
    the order to take them; default: the file's first rows) through the job worker, in a subprocess (the kernel
    stays free); returns the measured rate. work_of(calibration spec, rows file) gives the shrunk job's Work (what
    it processes, samples before training and the length of its rows)."""
    small, needed = calibration_spec(spec)
    with tempfile.TemporaryDirectory(prefix="nbtoolkit-calibrate-") as tmp:
        tmp_path = Path(tmp)
        rows_file = tmp_path / "rows.jsonl"
        _copy_rows(Path(data_file), rows_file, list(rows)[:needed] if rows is not None else list(range(needed)))
        field = "eval_file" if spec.kind == "eval" else "train_file"
        small = replace(small, **{field: str(rows_file)}, name=f"calibrate-{spec.kind.replace('_', '-')}")
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        job = small.to_dict()
        write_json_atomic(run_dir / JOB_FILE, {"kind": small.kind, "spec": job, "config": job["config"],
                                               "model": small.model, "train_file": small.train_file,
                                               "eval_file": small.eval_file, "attempt": 1})
        started = time.perf_counter()
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                       "NBTOOLKIT_TRACKING": "off", **(env or {})}
        try:
            completed = subprocess.run([python, "-m", "nbtoolkit.runtime.worker", str(run_dir)], env=environment,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, text=True)
        except subprocess.TimeoutExpired as error:
            raise CalibrationError(f"calibration of {spec.kind} on {spec.model} took over {timeout:.0f} s") from error
        wall = time.perf_counter() - started
        work = work_of(small, rows_file)
        measured = measured_from_run(run_dir, work=None if spec.kind.startswith("sft") else work.busy,
                                     sampling_work=work.sampling)
        if completed.returncode != 0 or measured is None:
            log = (run_dir / "log.txt").read_text() if (run_dir / "log.txt").exists() else ""
            tail = "\n".join((log + completed.stdout).splitlines()[-15:])
            raise CalibrationError(f"calibration of {spec.kind} on {spec.model} failed:\n{tail}")
        if spec.kind.startswith("sft"):
            measured["rate"] = _last_step_rate(run_dir) or measured["rate"]
        measured.update(seconds=wall, when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        run_dir=None, rows=needed, row_tokens=work.row_tokens)
        return measured


def _copy_rows(source: Path, target: Path, rows: list[int]) -> None:
    """Records `rows` (indices) of a JSONL file (or of any table evaluate reads), written as JSONL."""
    if source.suffix.lower() in (".jsonl", ".ndjson"):
        with open(source, encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
        target.write_text("".join(lines[i] for i in rows if i < len(lines)), encoding="utf-8")
        return
    from nbtoolkit.data import load_table

    table = load_table(source)
    table.iloc[[i for i in rows if i < len(table)]].to_json(target, orient="records", lines=True, force_ascii=False)

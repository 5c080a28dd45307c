"""The main job: baseline evaluation -> SFT (LoRA) -> evaluation -> RFT (GRPO) from SFT -> evaluation.

Every stage runs as a LocalRuntime job (a subprocess with its own run directory), so the same function serves
the CLI and a notebook. The output directory gets `stages.json` (per-stage metrics with deltas), each stage's
predictions, and a self-contained `report.html`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.prepare import PrepareConfig, PreparedData, prepare_dataset
from nbtoolkit.data.synthetic import SYNTHETIC_NOTE, make_stackoverflow_dataset
from nbtoolkit.errors import NbtoolkitError, unknown_name_message
from nbtoolkit.runtime.events import new_run_dir, write_json_atomic
from nbtoolkit.stages import PROFILES, RETENTION, STAGES, STAGES_FILE, Profile, StageSummary, eval_job_name
from nbtoolkit.training.config import CONFIGS, EvalConfig, RFTLoraConfig

@dataclass(frozen=True)
class PipelineConfig:
    """What the main job runs. Give `data` (split sft/eval/rft), or `train` and `eval` files."""

    data: str | None = field(default=None, metadata={"help": "one input file, split sft/eval/rft; None: synthetic"})
    train: str | None = field(default=None, metadata={"help": "training file (SFT and RFT rows)"})
    eval: str | None = field(default=None, metadata={"help": "evaluation file (rows never trained on)"})
    mapping: ColumnMapping | None = field(default=None, metadata={"help": "column mapping; None: inferred"})
    labels: tuple[str, ...] | None = field(default=None, metadata={"help": "label set; None: inferred"})
    profile: str = field(default="quick", metadata={"help": "tiny, quick or standard"})
    model: str | None = field(default=None, metadata={"help": "model name or path; None: the profile's model"})
    stages: tuple[str, ...] = field(default=STAGES, metadata={"help": "stages to run, in order"})
    general: tuple[str, ...] | None = field(default=None, metadata={
        "help": "general-ability checks after each stage: 'retention' (drift from the base model on held-out "
                "rehearsal prompts, no data needed) and benchmark names or files (e.g. arc-easy, piqa); () skips "
                "them; None: the profile's (retention, except for the tiny random model)"})
    seed: int = field(default=0, metadata={"help": "seed for synthetic data, splits and training"})
    out: str | None = field(default=None, metadata={"help": "output directory (new); None: a new one under runs/"})

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(unknown_name_message("profile", self.profile, PROFILES))
        if (self.train is None) != (self.eval is None):
            raise ValueError("give both train and eval files, or neither")
        if self.data is not None and self.train is not None:
            raise ValueError("give either data (one file to split) or train and eval files, not both")
        if isinstance(self.stages, str):
            raise ValueError(f"stages takes a list of stage names, e.g. ('baseline', 'sft'), got {self.stages!r}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(unknown_name_message("stage", unknown[0], STAGES))
        repeated = sorted({s for s in self.stages if list(self.stages).count(s) > 1}, key=STAGES.index)
        if repeated:
            raise ValueError(f"stage {repeated[0]!r} is listed twice; each stage runs once, in the order "
                             f"{', '.join(STAGES)}")
        if self.model is not None:
            from nbtoolkit.models import resolve_model

            resolve_model(self.model)  # an unknown name fails here, before any data is prepared
        if "rft" in self.stages and "sft" not in self.stages:
            raise ValueError("RFT starts from the SFT checkpoint: include the sft stage")


@dataclass
class PipelineData:
    """The files the stages read: SFT rows, RFT prompts SFT never sees, the validation rows every choice is made
    on, and the evaluation rows that are only ever reported."""

    sft_file: Path
    rft_file: Path
    eval_file: Path
    labels: tuple[str, ...] | None
    notes: list[str]
    validation_file: Path | None = None


def _prepare(config: PipelineConfig, profile: Profile, out: Path, log: Callable[[str], None]) -> PipelineData:
    notes: list[str] = []
    base = PrepareConfig(mapping=config.mapping, labels=config.labels, seed=config.seed, split="holdout")
    if config.train is not None:
        train_split = PrepareConfig(**{**asdict(base), "mapping": config.mapping, "split": "train-holdout"})
        train = _checked(prepare_dataset(config.train, train_split, out_dir=out / "data" / "train"), out, log)
        whole = PrepareConfig(**{**asdict(base), "mapping": config.mapping, "labels": train.labels, "split": None})
        evaluation = _checked(prepare_dataset(config.eval, whole, out_dir=out / "data" / "eval"), out, log)
        notes.append(f"Evaluation: every row of {config.eval} unless the profile limits it; validation and RFT "
                     f"prompts carved from {config.train}")
        return PipelineData(out / "data/train/sft/chat.jsonl", out / "data/train/rft/rft.jsonl",
                            out / "data/eval/all/chat.jsonl", train.labels or evaluation.labels, notes,
                            out / "data/train/validation/chat.jsonl")
    data: Any = config.data
    if data is None:
        data = make_stackoverflow_dataset(profile.synthetic_rows, seed=config.seed)
        notes.append(f"Data: {profile.synthetic_rows:,} rows of {SYNTHETIC_NOTE}")
    prepared = _checked(prepare_dataset(data, base, out_dir=out / "data"), out, log)
    return PipelineData(out / "data/sft/chat.jsonl", out / "data/rft/rft.jsonl", out / "data/eval/chat.jsonl",
                        prepared.labels, notes, out / "data/validation/chat.jsonl")


def _checked(prepared: PreparedData, out: Path, log: Callable[[str], None]) -> PreparedData:
    log(prepared.summary())
    if not prepared.ok:
        raise NbtoolkitError(f"data validation failed; see {prepared.out_dir / 'validation.json'}")
    return prepared


def _model(config: PipelineConfig, profile: Profile, out: Path) -> str:
    if config.model:
        return config.model
    if profile.model == "tiny":
        from nbtoolkit.models import tiny_model

        return str(tiny_model(seed=config.seed, vocab_from=None).save(out / "tiny-model"))
    return profile.model


def run_pipeline(config: PipelineConfig | None = None, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the configured stages; returns the content of stages.json."""
    from nbtoolkit.evaluation import EvalResult
    from nbtoolkit.forgetting import GENERAL_EVAL_KIND, GeneralEvalResult, forgetting_table
    from nbtoolkit.plots import stage_table
    from nbtoolkit.runtime import JobFailed, JobSpec, LocalRuntime

    config = config or PipelineConfig()
    if config.model:
        from nbtoolkit.models import model_path

        model_path(config.model)  # a model that cannot load here (not cached, Nova) fails before anything is written
    profile = PROFILES[config.profile]
    general_checks = _general_checks(config, profile)
    if config.out is None:
        out = new_run_dir("runs", f"pipeline-{profile.name}")
    else:
        out = Path(config.out)
        if out.exists() and any(out.iterdir()):
            raise NbtoolkitError(f"output directory {out} is not empty; choose a new one")
        out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "pipeline.json", {"config": _config_dict(config), "profile": asdict(profile)})
    log(f"pipeline ({profile.name}: {profile.description})\noutput: {out}")
    started = time.perf_counter()

    log("[data] preparing")
    data = _prepare(config, profile, out, log)
    model = _model(config, profile, out)
    runtime = LocalRuntime(out / "jobs")
    eval_config, validation_config = _eval_configs(config, profile)
    try:
        log(str(_plan_estimate(config, profile, data, model, calibrate=False, runs_dir=out.parent)))
    except Exception as error:  # noqa: BLE001 - an estimate never stops the run it describes
        log(f"estimate: not available ({type(error).__name__}: {error})")
    summary = StageSummary(profile.name, model, labels=list(data.labels or []), notes=data.notes,
                           evaluation={"split": "eval", "file": str(data.eval_file),
                                       "use": "reported only: no choice is made on these rows"})
    if data.validation_file is not None:
        summary.evaluation["validation_file"] = str(data.validation_file)
    results: dict[str, EvalResult] = {}
    curves: dict[str, tuple[pd.DataFrame, str]] = {}

    def run_job(spec: JobSpec, title: str):
        job = runtime.launch(spec)
        summary.jobs[spec.name] = str(job.run_dir)
        log(f"[{title}] {spec.kind} job in {job.run_dir}")
        result = job.wait(progress=progress)
        summary.resources[spec.name] = {"seconds": result.seconds, "peak_rss_mb": result.peak_rss_mb}
        return job, result

    def evaluate_stage(stage: str, stage_model: str) -> None:
        job, _ = run_job(_eval_spec(eval_config, stage_model, data, stage), f"{stage} eval")
        results[stage] = EvalResult.load(job.run_dir / "eval")
        previous = summary.record_eval(stage, results[stage].metrics, job.run_dir, split="eval",
                                       rows=results[stage].extra.get("rows"))
        if previous:
            summary.deltas[stage].update(paired_exact_match_delta(results[previous], results[stage]))
        log(results[stage].summary())
        _write_outputs(out, summary, results, curves, eval_config)
        check_general(stage, stage_model)

    def validate_stage(stage: str, stage_model: str) -> float:
        """Exact match on the validation rows (the same fixed sample the SFT job checks), kept in stages.json."""
        job, _ = run_job(_validation_spec(validation_config, stage_model, data, stage), f"{stage} validation")
        metrics = EvalResult.load(job.run_dir / "eval").metrics
        summary.validation[stage] = {"exact_match": metrics["exact_match"],
                                     "exact_match_stderr": metrics["exact_match_stderr"], "rows": metrics["n"],
                                     "split": "validation"}
        log(f"[{stage} validation] exact match {metrics['exact_match']:.3f} ± {metrics['exact_match_stderr']:.3f} "
            f"on {metrics['n']} validation rows")
        _write_outputs(out, summary, results, curves, eval_config)
        return metrics["exact_match"]

    def check_general(stage: str, stage_model: str) -> None:
        extra = _general_job_extra(general_checks, profile, config.seed, base_model=None if stage == "baseline"
                                   else model)
        if extra is None:
            return
        try:
            job, _ = run_job(JobSpec(GENERAL_EVAL_KIND, model=stage_model, name=f"general-{stage}", extra=extra),
                             f"{stage} general")
        except JobFailed as error:  # a side check: the domain results and later stages go on
            summary.general_errors[stage] = str(error)
            log(f"[{stage} general] failed, the pipeline goes on without it: {error}")
            _write_outputs(out, summary, results, curves, eval_config)
            return
        general = GeneralEvalResult.load(job.run_dir)
        summary.general[stage] = general.headline()
        log(general.summary())
        _write_outputs(out, summary, results, curves, eval_config)

    try:
        if "baseline" in config.stages:
            evaluate_stage("baseline", model)
        current = model
        summary.final_stage = "baseline" if "baseline" in config.stages else None
        if "sft" in config.stages:
            job, result = run_job(_sft_spec(config, profile, model, data), "sft")
            curves["SFT loss"] = (job.metrics(), "loss")
            current = summary.models["sft"] = str(job.run_dir)
            selection = (result.output or {}).get("selection")
            if selection:
                summary.selection["sft"] = selection
                log(f"[sft] checkpoint chosen on validation: step {selection['selected_step']} (exact match "
                    f"{selection['selected_score']:.3f}; by step {selection['by_step']})")
            summary.final_stage = "sft"
            evaluate_stage("sft", current)
        if "rft" in config.stages:
            job, _ = run_job(_rft_spec(config, profile, current, data), "rft")
            curves["RFT reward"] = (job.metrics(), "reward_mean")
            rft_model = summary.models["rft"] = str(job.run_dir)
            kept = True
            if data.validation_file is not None:
                before = summary.selection.get("sft", {}).get("selected_score")
                if before is None:
                    before = validate_stage("sft", current)
                else:
                    summary.validation["sft"] = {"exact_match": before, "rows": profile.validation["rows"],
                                                 "split": "validation", "from": "the SFT job's checkpoint check"}
                after = validate_stage("rft", rft_model)
                kept = after >= before
                summary.selection["rft"] = {
                    "kept": kept, "split": "validation", "validation_before": before, "validation_after": after,
                    "reason": (f"validation exact match {after:.3f} after RFT vs {before:.3f} before: "
                               + ("RFT's model is kept" if kept else "RFT lowered it, the SFT model is kept"))}
                log(f"[rft] {summary.selection['rft']['reason']}")
            summary.final_stage = "rft" if kept else summary.final_stage
            evaluate_stage("rft", rft_model)
    finally:
        summary.seconds = round(time.perf_counter() - started, 1)
        _write_outputs(out, summary, results, curves, eval_config)
    tables = [stage_table(summary.stages)]
    if summary.general:
        tables.append(forgetting_table(summary.stages, summary.general))
    log(f"done in {summary.seconds:.0f} s\n" + "\n\n".join(t.round(3).to_string() for t in tables) +
        f"\njobs: {_resources_line(summary.resources)}" +
        f"\nstages: {out / STAGES_FILE}\nreport: {out / 'report.html'}")
    return summary.to_dict()


def _resources_line(resources: dict[str, dict[str, float | None]]) -> str:
    """Each job's wall time and peak memory, e.g. 'sft 3414 s 5.8 GB, eval-sft 190 s 1.1 GB'."""
    def one(name: str, used: dict[str, float | None]) -> str:
        memory = f" {used['peak_rss_mb'] / 1024:.1f} GB" if used.get("peak_rss_mb") is not None else ""
        return f"{name} {used['seconds'] or 0:.0f} s{memory}"

    return ", ".join(one(name, used) for name, used in resources.items())


def _eval_configs(config: PipelineConfig, profile: Profile) -> tuple[EvalConfig, EvalConfig]:
    """(the stage evaluations' config, the validation checks' config)."""
    eval_config = EvalConfig.for_platform("local", **{"seed": config.seed, **profile.eval})
    validation_config = EvalConfig.for_platform("local", **{**profile.eval, "seed": config.seed, "loglik": False,
                                                            "limit": profile.validation["rows"]})
    return eval_config, validation_config


def _eval_spec(eval_config: EvalConfig, model: str, data: PipelineData, stage: str):
    from nbtoolkit.runtime import JobSpec

    return JobSpec("eval", eval_config, model=model, eval_file=str(data.eval_file), labels=data.labels,
                   name=eval_job_name(stage))


def _validation_spec(validation_config: EvalConfig, model: str, data: PipelineData, stage: str):
    from nbtoolkit.runtime import JobSpec

    return JobSpec("eval", validation_config, model=model, eval_file=str(data.validation_file),
                   labels=data.labels, name=f"validate-{stage}")


def _sft_spec(config: PipelineConfig, profile: Profile, model: str, data: PipelineData):
    from nbtoolkit.runtime import JobSpec

    sft_config = CONFIGS[profile.sft_method].for_platform("local", seed=config.seed, **profile.sft)
    extra = {}
    if data.validation_file is not None and data.labels:
        extra = {"validation_file": str(data.validation_file), "validation_rows": profile.validation["rows"],
                 "validate_from": profile.validation["from"]}
    # The eval loss curve uses validation rows too: the evaluation rows stay unseen until the stage eval.
    return JobSpec(profile.sft_method, sft_config, model=model, train_file=str(data.sft_file),
                   eval_file=str(data.validation_file or data.sft_file), labels=data.labels, name="sft", extra=extra)


def _rft_spec(config: PipelineConfig, profile: Profile, model: str, data: PipelineData):
    from nbtoolkit.runtime import JobSpec

    rft_config = RFTLoraConfig.for_platform("local", seed=config.seed, **profile.rft)
    validation = str(data.validation_file) if data.validation_file is not None else None
    return JobSpec("rft_lora", rft_config, model=model, train_file=str(data.rft_file), eval_file=validation,
                   labels=data.labels, name="rft")


def pipeline_specs(config: PipelineConfig, data: PipelineData, model: str) -> list:
    """The domain jobs of a run, in order (later stages name the base model: their own does not exist yet);
    with validation rows, the check of RFT's model that decides whether it is kept."""
    profile = PROFILES[config.profile]
    eval_config, validation_config = _eval_configs(config, profile)
    specs = []
    for stage in STAGES:
        if stage not in config.stages:
            continue
        if stage == "sft":
            specs.append(_sft_spec(config, profile, model, data))
        elif stage == "rft":
            specs.append(_rft_spec(config, profile, model, data))
            if data.validation_file is not None:
                specs.append(_validation_spec(validation_config, model, data, stage))
        specs.append(_eval_spec(eval_config, model, data, stage))
    return specs


def _plan_estimate(config: PipelineConfig, profile: Profile, data: PipelineData, model: str, *,
                   calibrate: bool, runs_dir: str | os.PathLike | None = None):
    """The run's estimate: every domain job in a row; the general checks are named, not timed."""
    from nbtoolkit.estimate.local import estimate_jobs

    notes = ("the general-ability checks after each stage are not included",) \
        if _general_checks(config, profile) != ([], False) else ()
    return estimate_jobs(pipeline_specs(config, data, model), f"pipeline, {profile.name} profile",
                         calibrate=calibrate, runs_dir=runs_dir, rate_model=model, notes=notes)


def estimate_pipeline(config: PipelineConfig | None = None, *, calibrate: bool = True,
                      runs_dir: str | os.PathLike | None = "runs", log: Callable[[str], None] = print):
    """How long `run_pipeline(config)` takes here, before running it: prepares the data in a temporary directory,
    calibrates what no finished job or cached calibration covers (calibrate=False: shipped priors only), and
    returns the Estimate. runs_dir: finished jobs that refine the rates."""
    import tempfile

    config = config or PipelineConfig()
    profile = PROFILES[config.profile]
    _general_checks(config, profile)
    with tempfile.TemporaryDirectory(prefix="nbtoolkit-estimate-") as tmp:
        data = _prepare(config, profile, Path(tmp), lambda message: None)
        model = config.model or (profile.model if profile.model != "tiny" else _model(config, profile, Path(tmp)))
        if calibrate:
            log("calibrating this machine where no rate is known yet (under 30 s per job kind)")
        return _plan_estimate(config, profile, data, model, calibrate=calibrate, runs_dir=runs_dir)


def _general_checks(config: PipelineConfig, profile: Profile) -> tuple[list[str | Path], bool]:
    """(benchmarks, retention) of the general checks; an unknown benchmark fails here, before any job runs."""
    from nbtoolkit.forgetting import BENCHMARKS, find_benchmark, load_mc_benchmark

    checks = profile.general.get("checks", ()) if config.general is None else config.general
    benchmarks: list[str | Path] = []
    for check in checks:
        if check == RETENTION:
            continue
        if check in BENCHMARKS:
            find_benchmark(check)
            benchmarks.append(check)
        elif Path(check).is_file():
            load_mc_benchmark(check)  # a bad row fails now, naming file, row and column
            benchmarks.append(Path(check).resolve())
        else:
            raise NbtoolkitError(unknown_name_message("general check (or an existing benchmark file)", check,
                                                      [RETENTION, *BENCHMARKS]))
    return benchmarks, RETENTION in checks


def _general_job_extra(checks: tuple[list[str | Path], bool], profile: Profile, seed: int, *,
                       base_model: str | None) -> dict[str, Any] | None:
    """Keyword arguments of the general-eval job after one stage; None when it has nothing to check (the
    retention probe compares a trained model with its base, so the baseline only gets benchmarks)."""
    benchmarks, retention = checks
    probe = retention and base_model is not None
    if not benchmarks and not probe:
        return None
    sizes = {"limit": profile.general.get("limit"), "batch_size": profile.general.get("batch_size", 16)}
    extra: dict[str, Any] = {"benchmarks": [str(b) for b in benchmarks], "seed": seed, **sizes}
    if probe:
        extra.update(base_model=base_model, probe_prompts=profile.general.get("probe_prompts"))
    return extra


def _config_dict(config: PipelineConfig) -> dict[str, Any]:
    data = asdict(config)
    data["mapping"] = config.mapping.to_dict() if config.mapping else None
    return data


def paired_exact_match_delta(before: Any, after: Any) -> dict[str, float]:
    """Exact-match change between two evaluations of the same rows, with the standard error of the per-row
    differences (paired: much tighter than the two stderrs combined); {} when the rows differ."""
    from nbtoolkit.metrics import exact_match, mean_and_stderr

    a, b = before.predictions, after.predictions
    if len(a) != len(b) or list(a["row"]) != list(b["row"]):
        return {}
    diffs = [float(exact_match(rb, ref)) - float(exact_match(ra, ref))
             for ra, rb, ref in zip(a["reply"], b["reply"], a["reference"])]
    mean, stderr = mean_and_stderr(diffs)
    return {"exact_match_paired": mean, "exact_match_paired_stderr": stderr}


def _write_outputs(out: Path, summary: StageSummary, results: dict, curves: dict, eval_config: EvalConfig) -> None:
    from nbtoolkit.report import write_report

    summary.save(out)
    if not results:
        return
    lengths = {stage: r.predictions["reply_tokens"].tolist() for stage, r in results.items()
               if "reply_tokens" in r.predictions}
    confusions = {stage: r.confusion for stage, r in results.items() if r.confusion is not None}
    write_report(out / "report.html", f"nbtoolkit pipeline ({summary.profile}, {summary.model})",
                 summary.stages, confusions=confusions, reply_lengths=lengths,
                 max_new_tokens=eval_config.max_new_tokens, curves=curves, notes=summary.notes,
                 general=summary.general)


def load_stages(out: str | os.PathLike) -> dict[str, Any]:
    """stages.json of a finished (or interrupted) pipeline run."""
    summary = StageSummary.load(out)
    if summary is None:
        raise NbtoolkitError(f"no {STAGES_FILE} in {out}")
    return summary.to_dict()

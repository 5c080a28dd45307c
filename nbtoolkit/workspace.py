"""The notebooks' shared working directory: prepared data, the base model, jobs and stage results in one place.

Notebook 01 prepares the data, 02 evaluates the baseline, 03 trains SFT, 04 RFT and 05 compares. Each notebook
opens the same `Workspace(workdir, profile)`; when an earlier notebook's output is missing, `ensure_*` builds it
(small, with the profile's sizes) so every notebook also runs on its own. `stages.json` is written through
`nbtoolkit.stages.StageSummary`, as a pipeline run's is, so `nbtoolkit.ui.ResultsView` reads either.

    ws = Workspace("runs/notebooks", profile="tiny")
    files = ws.data_files()                  # prepares synthetic data when 01 has not run
    sft_model = ws.ensure_model("sft")       # trains SFT when 03 has not run
    results = ws.results()                   # {"baseline": EvalResult, "sft": ..., "rft": ...}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nbtoolkit.errors import NbtoolkitError, unknown_name_message
from nbtoolkit.runtime.events import read_json
from nbtoolkit.stages import PROFILES, STAGES, STAGES_FILE, TRAINING_STAGES, StageSummary, eval_job_name

if TYPE_CHECKING:
    from nbtoolkit.data import PrepareConfig, PreparedData
    from nbtoolkit.evaluation import EvalResult
    from nbtoolkit.runtime import Job, JobSpec, LocalRuntime

@dataclass(frozen=True)
class DataFiles:
    """The prepared files the stages read, and the label set."""

    sft: Path
    eval: Path
    rft: Path
    labels: tuple[str, ...] | None
    validation: Path | None = None  # the rows choices are made on (None: data prepared without that split)


class Workspace:
    """One directory holding what the ordered notebooks produce; see the module docstring."""

    def __init__(self, workdir: str | os.PathLike = "runs/notebooks", profile: str = "quick", *, seed: int = 0,
                 log: Callable[[str], None] = print) -> None:
        if profile not in PROFILES:
            raise ValueError(unknown_name_message("profile", profile, PROFILES))
        self.workdir = Path(workdir)
        self.profile = PROFILES[profile]
        self.seed = seed
        self.log = log
        self.workdir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Workspace('{self.workdir}', profile={self.profile.name!r})"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def jobs_dir(self) -> Path:
        return self.workdir / "jobs"

    @property
    def runtime(self) -> LocalRuntime:
        from nbtoolkit.runtime import LocalRuntime

        return LocalRuntime(self.jobs_dir)

    # -- data -------------------------------------------------------------------------------------------------

    def prepare(self, data: Any = None, config: PrepareConfig | None = None, *,
                overwrite: bool = True) -> PreparedData:
        """Prepare `data` (None: the profile's amount of synthetic Stack Overflow-like rows) into data_dir."""
        from nbtoolkit.data import PrepareConfig, make_stackoverflow_dataset, prepare_dataset

        if data is None:
            data = make_stackoverflow_dataset(self.profile.synthetic_rows, seed=self.seed)
        prepared = prepare_dataset(data, config or PrepareConfig(seed=self.seed), out_dir=self.data_dir,
                                   overwrite=overwrite)
        if not prepared.ok:
            raise NbtoolkitError(f"data validation failed; see {self.data_dir / 'validation.json'}")
        return prepared

    def data_files(self) -> DataFiles:
        """The prepared files (notebook 01's output), prepared from synthetic data first when missing."""
        manifest = read_json(self.data_dir / "manifest.json")
        if manifest is None:
            self.log(f"no prepared data in {self.data_dir}: preparing {self.profile.synthetic_rows:,} synthetic rows")
            self.prepare()
            manifest = read_json(self.data_dir / "manifest.json")
        splits = manifest["splits"]
        missing = [s for s in ("sft", "eval", "rft") if s not in splits]
        if missing:
            raise NbtoolkitError(f"{self.data_dir} has splits {sorted(splits)}, the stages need sft, eval and rft: "
                                 "prepare with split='holdout'")
        labels = manifest.get("labels")
        validation = self.data_dir / "validation/chat.jsonl" if "validation" in splits else None
        return DataFiles(self.data_dir / "sft/chat.jsonl", self.data_dir / "eval/chat.jsonl",
                         self.data_dir / "rft/rft.jsonl", tuple(labels) if labels else None, validation)

    # -- models and configs -----------------------------------------------------------------------------------

    def base_model(self) -> str:
        """The profile's model; for `tiny`, a random tiny model saved once under the workdir."""
        if self.profile.model != "tiny":
            return self.profile.model
        path = self.workdir / "models" / "tiny"
        if not (path / "config.json").is_file():
            from transformers.utils import logging as hf_logging

            from nbtoolkit.models import tiny_model

            shown = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Writing model shards" bar for a 1 MB model
            try:
                tiny_model(seed=self.seed, vocab_from=None).save(path)
            finally:
                if shown:
                    hf_logging.enable_progress_bar()
        return str(path.resolve())

    def eval_config(self, **overrides: Any):
        from nbtoolkit.training.config import EvalConfig

        return EvalConfig.for_platform("local", **{**self.profile.eval, **overrides})

    def sft_config(self, **overrides: Any):
        """The profile's SFT config (LoRA, or full fine-tuning in the standard profile) with `overrides`."""
        from nbtoolkit.training.config import CONFIGS

        return CONFIGS[self.profile.sft_method].for_platform("local", **{"seed": self.seed, **self.profile.sft,
                                                                         **overrides})

    def rft_config(self, **overrides: Any):
        from nbtoolkit.training.config import RFTLoraConfig

        return RFTLoraConfig.for_platform("local", **{"seed": self.seed, **self.profile.rft, **overrides})

    def spec(self, stage: str, **overrides: Any) -> JobSpec:
        """The job that trains `stage` ("sft" from the base model, "rft" from the SFT model) or evaluates it
        ("eval-<stage>"); keyword overrides replace JobSpec fields."""
        from nbtoolkit.runtime import JobSpec

        files = self.data_files()
        if stage == "sft":
            # Eval loss and the checkpoint choice use validation rows: the evaluation rows stay unseen.
            extra = {} if files.validation is None or not files.labels else {
                "validation_file": str(files.validation), "validation_rows": self.profile.validation["rows"],
                "validate_from": self.profile.validation["from"]}
            spec = dict(kind=self.profile.sft_method, config=self.sft_config(), model=self.base_model(),
                        train_file=str(files.sft), eval_file=str(files.validation or files.eval),
                        labels=files.labels, name="sft", extra=extra)
        elif stage == "rft":
            spec = dict(kind="rft_lora", config=self.rft_config(), model=self.ensure_model("sft"),
                        train_file=str(files.rft), labels=files.labels, name="rft")
        elif stage.startswith("eval-") and stage[5:] in STAGES:
            spec = dict(kind="eval", config=self.eval_config(), model=self.ensure_model(stage[5:]),
                        eval_file=str(files.eval), labels=files.labels, name=stage)
        else:
            raise ValueError(unknown_name_message("workspace job", stage, ["sft", "rft",
                                                                           *(f"eval-{s}" for s in STAGES)]))
        return JobSpec(**{**spec, **overrides})

    # -- stage records ----------------------------------------------------------------------------------------

    def summary(self) -> StageSummary:
        """What stages.json records so far (an empty summary for this profile before the first record)."""
        return StageSummary.load(self.workdir) or StageSummary(self.profile.name)

    def record_training(self, stage: str, job: Job) -> str:
        """Record a finished training job as `stage`'s model; returns the model (the job's run directory)."""
        result = job.result()
        if not result.ok:
            raise NbtoolkitError(f"{stage} job {job.name!r} ended {result.status}: {result.reason} "
                                 f"(run dir {job.run_dir})")
        summary = self.summary()
        summary.jobs[stage] = str(job.run_dir)
        summary.models[stage] = str(job.run_dir)
        summary.save(self.workdir)
        return str(job.run_dir)

    def record_eval(self, stage: str, job: Job) -> EvalResult:
        """Record a finished eval job as `stage`'s result; returns its EvalResult."""
        from nbtoolkit.evaluation import EvalResult

        result = EvalResult.load(Path(job.run_dir) / "eval")
        summary = self.summary()
        summary.record_eval(stage, result.metrics, job.run_dir)
        summary.labels = list(result.labels or [])
        summary.save(self.workdir)
        return result

    # -- building what is missing -----------------------------------------------------------------------------

    def _run(self, spec: JobSpec) -> Job:
        self.log(f"running {spec.name} ({spec.kind}, profile {self.profile.name}) in {self.jobs_dir}")
        job = self.runtime.launch(spec)
        job.wait(progress=True)  # a bar with ETA: training a missing stage takes minutes
        return job

    def ensure_model(self, stage: str) -> str:
        """`stage`'s model: the base model for "baseline", else the recorded one, trained now when missing."""
        if stage == "baseline":
            return self.base_model()
        if stage not in TRAINING_STAGES:
            raise ValueError(unknown_name_message("stage", stage, STAGES))
        recorded = self.summary().models.get(stage)
        if recorded and Path(recorded).is_dir():
            return recorded
        self.log(f"no {stage} model recorded in {self.workdir / STAGES_FILE}: training one now")
        return self.record_training(stage, self._run(self.spec(stage)))

    def ensure_eval(self, stage: str) -> EvalResult:
        """`stage`'s evaluation: the recorded one, or run now (training its model first when missing)."""
        from nbtoolkit.evaluation import EvalResult

        run_dir = self.summary().jobs.get(eval_job_name(stage))
        if run_dir and (Path(run_dir) / "eval").is_dir():
            return EvalResult.load(Path(run_dir) / "eval")
        return self.record_eval(stage, self._run(self.spec(f"eval-{stage}")))

    def build(self, stages: tuple[str, ...] = STAGES) -> None:
        """Train and evaluate whatever `stages` still lack, running independent jobs side by side (the baseline
        eval with SFT training, then the SFT eval with RFT training, then the RFT eval)."""
        self.data_files()
        while True:
            summary = self.summary()
            models = {s for s, path in summary.models.items() if Path(path).is_dir()} | {"baseline"}
            evaluated = {s for s in STAGES if eval_job_name(s) in summary.jobs
                         and (Path(summary.jobs[eval_job_name(s)]) / "eval").is_dir()}
            wanted = {*stages, *(("sft",) if "rft" in stages else ())}
            ready = [f"eval-{s}" for s in stages if s not in evaluated and s in models]
            ready += [s for s in ("sft", "rft") if s in wanted and s not in models
                      and (s == "sft" or "sft" in models)]
            if not ready:
                return
            self.log(f"building {', '.join(ready)} (profile {self.profile.name}) in {self.jobs_dir}")
            from nbtoolkit.runtime import JobFailed

            jobs = {name: self.runtime.launch(self.spec(name)) for name in ready}
            failed: list[JobFailed] = []
            # One progress bar per job, in launch order: the shorter eval first, then the training that ran beside
            # it (its bar catches up with the steps already done and moves on).
            for name, job in jobs.items():
                try:
                    job.wait(progress=True)
                except JobFailed as error:
                    failed.append(error)  # the others still finish and are recorded
                    continue
                if name.startswith("eval-"):
                    self.record_eval(name[5:], job)
                else:
                    self.record_training(name, job)
            if failed:
                raise failed[0]

    def results(self, stages: tuple[str, ...] = STAGES, *, build: bool = True) -> dict[str, EvalResult]:
        """The EvalResult of each stage, in order; build=True first builds what is missing (see `build`),
        build=False skips stages not evaluated yet."""
        from nbtoolkit.evaluation import EvalResult

        if build:
            self.build(stages)
        jobs = self.summary().jobs
        return {stage: EvalResult.load(Path(jobs[eval_job_name(stage)]) / "eval") for stage in stages
                if eval_job_name(stage) in jobs and (Path(jobs[eval_job_name(stage)]) / "eval").is_dir()}

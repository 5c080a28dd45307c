"""How close local time estimates come to the real wall time: quick-profile SFT, RFT and eval jobs, and one
standard-profile SFT (--standard-sft), each estimated at launch and then run.

    nice -n 10 .venv/bin/python benchmarks/estimate_accuracy.py                   # quick profile
    nice -n 10 .venv/bin/python benchmarks/estimate_accuracy.py --standard-sft    # plus the 360-step full SFT
    nice -n 10 .venv/bin/python benchmarks/estimate_accuracy.py --standard-sft --skip-quick  # that job alone
    nice -n 10 .venv/bin/python benchmarks/estimate_accuracy.py --skip-quick --recorded runs/x/jobs/sft-...
        # a job that finished here earlier, estimated again from a fresh calibration (minutes, not its hours)
    nice -n 10 .venv/bin/python benchmarks/estimate_accuracy.py --profile tiny    # the plumbing, in minutes

For each job kind a calibration runs first when this machine has no rate for it yet (its seconds are reported),
unless --no-calibrate. Every job then runs through LocalRuntime, which records its estimate in estimate.json; the
error is the actual seconds (result.json) over the middle of the estimated range, minus one. Jobs run one at a
time: run it on an idle machine, since other work on the cores slows the jobs but not their estimates. Results go
to <out>/estimate_accuracy.json and a table on stdout. Rates cached by earlier jobs are used as they are:
--fresh-cache times everything from scratch in a cache of its own (the embedded model's one-time conversion into
it is timed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NBTOOLKIT_TRACKING", "off")

TARGET = 0.25  # the error the estimates aim to stay within


def prepared_data(profile, out: Path, seed: int):
    """The pipeline's files for a profile's synthetic data (sft, rft and eval splits)."""
    from nbtoolkit.data import PrepareConfig, make_stackoverflow_dataset, prepare_dataset
    from nbtoolkit.pipeline import PipelineData

    prepared = prepare_dataset(make_stackoverflow_dataset(profile.synthetic_rows, seed=seed),
                               PrepareConfig(seed=seed), out_dir=out / "data")
    return PipelineData(out / "data/sft/chat.jsonl", out / "data/rft/rft.jsonl", out / "data/eval/chat.jsonl",
                        prepared.labels, [])


def measure(spec, runtime, *, calibrate: bool, rate_model: str, log) -> dict:
    """Calibrate when needed, launch the job (its launch records the estimate), run it, compare."""
    from nbtoolkit.estimate.local import estimate_spec, estimate_vs_actual

    started = time.perf_counter()
    found = estimate_spec(spec, calibrate=calibrate, runs_dir=runtime.runs_dir, rate_model=rate_model)
    calibration_seconds = time.perf_counter() - started
    log(f"[{spec.name}] {found.estimate.line() if found.estimate else found.message} "
        f"(estimated in {calibration_seconds:.0f} s)")
    job = runtime.launch(spec)
    job.wait(progress=False)
    record = estimate_vs_actual(job.run_dir) or {"run_dir": str(job.run_dir), "actual_seconds": job.result().seconds,
                                                 "error": None, "within_range": False, "source": found.message}
    record.update(job=spec.name, kind=spec.kind, estimate_seconds_to_get=round(calibration_seconds, 1))
    log(f"[{spec.name}] actual {record['actual_seconds']:.0f} s; error "
        + (f"{record['error']:+.0%}" if record["error"] is not None else "n/a"))
    return record


def measure_recorded(run_dir: Path, cache: Path, *, calibrate: bool, log) -> dict:
    """Estimate a job that finished earlier on this machine (its job.json spec, paths taken from its working
    directory) from a rate cache file of its own (`cache`: a calibration on its rows, not another job's), without
    reading its own rate, and compare with the seconds its result.json recorded."""
    from nbtoolkit.estimate.local import estimate_spec
    from nbtoolkit.runtime import JobSpec
    from nbtoolkit.runtime.events import read_json

    job, result = read_json(run_dir / "job.json"), read_json(run_dir / "result.json")
    if not job or not result or result.get("status") != "COMPLETED":
        raise SystemExit(f"{run_dir}: not a completed job (job.json and result.json with status COMPLETED)")
    here = os.getcwd()
    os.chdir(job.get("cwd") or here)  # the spec's paths are relative to where the job was launched
    try:
        spec = JobSpec.from_dict(job["spec"])
        started = time.perf_counter()
        found = estimate_spec(spec, calibrate=calibrate, cache=cache)  # no runs_dir: its own rate stays out
    finally:
        os.chdir(here)
    estimate, actual = found.estimate, float(result["seconds"])
    record = {"job": run_dir.name, "kind": spec.kind, "run_dir": str(run_dir), "actual_seconds": actual,
              "actual_host": job.get("host"), "actual_when": result.get("ended"),
              "estimate_seconds_to_get": round(time.perf_counter() - started, 1), "source": found.message,
              "low_seconds": None, "high_seconds": None, "error": None, "within_range": False}
    if estimate is not None:
        record.update(low_seconds=estimate.low_seconds, high_seconds=estimate.high_seconds,
                      error=actual / estimate.middle_seconds - 1, within_range=estimate.contains(actual),
                      source=estimate.source)
    log(f"[{run_dir.name}] recorded {actual:.0f} s; estimated now "
        + (f"{estimate.low_seconds:.0f}-{estimate.high_seconds:.0f} s, error {record['error']:+.0%}"
           if estimate is not None else found.message))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=["tiny", "quick"])
    parser.add_argument("--standard-sft", action="store_true", help="also the standard profile's SFT (~40 min)")
    parser.add_argument("--skip-quick", action="store_true", help="no quick-profile jobs (with --standard-sft or "
                                                                     "--recorded)")
    parser.add_argument("--recorded", action="append", default=[], metavar="RUN_DIR",
                        help="also estimate this finished job again (fresh calibration) against its recorded seconds")
    parser.add_argument("--out", default=None, help="output directory (default: a new one under runs/)")
    parser.add_argument("--no-calibrate", action="store_true", help="estimate from cached rates and priors only")
    parser.add_argument("--fresh-cache", action="store_true", help="a rate cache of its own, inside --out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from dataclasses import replace

    from nbtoolkit.models import tiny_model
    from nbtoolkit.pipeline import PROFILES, PipelineConfig, pipeline_specs
    from nbtoolkit.runtime import LocalRuntime
    from nbtoolkit.runtime.events import new_run_dir

    out = (Path(args.out) if args.out else new_run_dir("runs", f"estimate-accuracy-{args.profile}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh_cache:
        from nbtoolkit.models.registry import ensure_embedded_cache

        os.environ["NBTOOLKIT_CACHE"] = str(out / "cache")
        started = time.perf_counter()
        ensure_embedded_cache()  # the embedded model's one-time conversion, kept out of the first calibration
        print(f"embedded model converted into the fresh cache in {time.perf_counter() - started:.0f} s (once per "
              "cache, not part of a calibration)", flush=True)
    calibrate = not args.no_calibrate
    records = []

    def log(message: str) -> None:
        print(message, flush=True)

    quick = not (args.skip_quick and (args.standard_sft or args.recorded))
    if quick or args.standard_sft:  # jobs run here on the profile's synthetic data
        profile = PROFILES[args.profile]
        model = (str(tiny_model(seed=args.seed, vocab_from=None).save(out / "tiny-model"))
                 if profile.model == "tiny" else profile.model)
        data = prepared_data(profile, out, args.seed)
        runtime = LocalRuntime(out / "jobs")
        specs = {s.name: s for s in pipeline_specs(PipelineConfig(profile=args.profile, model=model, seed=args.seed),
                                                   data, model)}
    if quick:
        sft = measure(specs["sft"], runtime, calibrate=calibrate, rate_model=model, log=log)
        records.append(sft)
        records.append(measure(replace(specs["rft"], model=sft["run_dir"]), runtime, calibrate=calibrate,
                               rate_model=model, log=log))
        records.append(measure(replace(specs["eval-baseline"], name="eval"), runtime, calibrate=calibrate,
                               rate_model=model, log=log))
    if args.standard_sft:
        standard = PROFILES["standard"]
        config = PipelineConfig(profile="standard", stages=("sft",), seed=args.seed)
        spec = next(s for s in pipeline_specs(config, data, standard.model) if s.name == "sft")
        records.append(measure(replace(spec, name="standard-sft"), runtime, calibrate=calibrate,
                               rate_model=standard.model, log=log))

    for run_dir in args.recorded:
        run_dir = Path(run_dir).resolve()
        records.append(measure_recorded(run_dir, out / "recorded" / run_dir.name / "estimates.json",
                                        calibrate=calibrate, log=log))

    errors = [abs(r["error"]) for r in records if r.get("error") is not None]
    summary = {"profile": args.profile, "target": TARGET, "records": records,
               "max_abs_error": max(errors) if len(errors) == len(records) else None,
               "within_target": bool(errors) and len(errors) == len(records) and max(errors) <= TARGET}
    (out / "estimate_accuracy.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{'job':14s} {'kind':9s} {'estimate':>15s} {'actual':>8s} {'error':>7s}  rate from")
    for r in records:
        estimate = f"{r['low_seconds']:.0f}-{r['high_seconds']:.0f} s" if r.get("low_seconds") is not None else "-"
        error = f"{r['error']:+.0%}" if r.get("error") is not None else "n/a"
        print(f"{r['job']:14s} {r['kind']:9s} {estimate:>15s} {r['actual_seconds']:>7.0f}s {error:>7s}  "
              f"{r.get('source', '')}")
    print(f"\nmax |error| {summary['max_abs_error']:.0%} (target {TARGET:.0%})" if summary["max_abs_error"] is not None
          else "\nsome jobs had no estimate (no rate): run without --no-calibrate")
    print(f"results: {out / 'estimate_accuracy.json'}")
    return 0 if summary["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Jobs side by side: one SFT job using every core against one-thread jobs running at once, same work per job.

    nice -n 10 .venv/bin/python benchmarks/parallel_jobs.py --steps 20

Each job is the same LoRA SFT (calibrated local defaults, the same rows and seed) for --steps optimizer steps.
"together" runs cores jobs with one thread each at the same time; "alone" runs one job with a thread per core.
Throughput counts training rows per second of training (model loading excluded): for "together", every job's
rows over the slowest job's training time. A ratio above 1 means a sweep (or a benchmark with several runs)
finishes sooner with one-thread jobs side by side (nbtoolkit.sweeps.auto_parallel and job_threads_env).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import load_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=400, help="training rows (the same for every job)")
    parser.add_argument("--data", default=None, help="parquet/CSV/JSONL (default: the shared Stack Overflow set)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from nbtoolkit.data.formats import write_jsonl
    from nbtoolkit.runtime import JobSpec, LocalRuntime
    from nbtoolkit.sweeps import job_threads_env
    from nbtoolkit.training.config import SFTLoraConfig

    cores = os.cpu_count() or 1
    out = Path(args.out or tempfile.mkdtemp(prefix="nbt-parallel-"))
    conversations, source = load_rows(args.data, args.rows)
    train_file = write_jsonl([{"messages": messages} for messages in conversations], out / "train.jsonl")
    config = SFTLoraConfig.for_platform("local", max_steps=args.steps, warmup_steps=1, save_steps=args.steps)
    spec = JobSpec("sft_lora", config, model=args.model, train_file=str(train_file))
    rows = args.steps * config.global_batch_size
    print(f"{cores} cores; {args.steps} steps of {config.global_batch_size} rows per job; rows from {source}",
          flush=True)

    def run(name: str, jobs: int) -> dict:
        runtime = LocalRuntime(out / name, env=job_threads_env(jobs, cores))
        started = time.perf_counter()
        launched = [runtime.launch(spec) for _ in range(jobs)]
        seconds = [job.wait(progress=False).output["train_seconds"] for job in launched]
        result = {"jobs": jobs, "threads_per_job": max(1, cores // jobs), "train_seconds": seconds,
                  "rows_per_second": jobs * rows / max(seconds), "wall_seconds": time.perf_counter() - started}
        print(f"{name}: {json.dumps(result)}", flush=True)
        return result

    alone = run("alone", 1)
    together = run("together", cores)
    ratio = together["rows_per_second"] / alone["rows_per_second"]
    summary = {"cores": cores, "steps": args.steps, "alone": alone, "together": together,
               "throughput_ratio_together_vs_alone": ratio}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"together / alone training throughput: {ratio:.2f}x ({out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

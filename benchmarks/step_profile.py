"""Where a standard-profile SFT job's time and memory go: torch's profiler around a short run_sft.

    nice -n 0 .venv/bin/python benchmarks/step_profile.py --steps 3

Runs full fine-tuning (the standard profile's method, batch and lengths) for a few steps on Stack Overflow rows
(synthetic ones when the shared data is absent) under torch.profiler, then prints the CPU time by kind of work
(matrix products, attention, the optimizer, element-wise ops, ...), the ten most expensive operators, and the
process's peak memory. Model loading is inside the profile too; with a few steps it is a small share.
This is a diagnosis, not a ratio against a peer: it says which levers could pay.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Operator name fragments -> kind of work; the first match wins.
KINDS = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("optimizer", ("_fused_adamw", "adamw", "_foreach_")),
    ("softmax / log-softmax / loss", ("softmax", "cross_entropy", "nll_loss")),
    ("normalisation", ("rms_norm", "aten::pow", "aten::rsqrt", "aten::mean")),
    ("element-wise", ("aten::mul", "aten::add", "aten::silu", "aten::sigmoid", "aten::neg", "aten::cat", "aten::sub",
                      "aten::div", "aten::where")),
    ("copies and layout", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone",
                           "aten::index", "aten::embedding", "aten::fill_", "aten::zero_", "aten::empty")),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, fragments in KINDS:
        if any(fragment in lowered for fragment in fragments):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.sft_throughput import load_rows
    from nbtoolkit.data.formats import write_jsonl
    from nbtoolkit.models import DEFAULT_MODEL
    from nbtoolkit.runtime.events import RunLog, peak_rss_mb, read_metrics
    from nbtoolkit.stages import PROFILES
    from nbtoolkit.training.config import CONFIGS
    from nbtoolkit.training.sft import run_sft

    profile_settings = PROFILES["standard"]
    settings = {**profile_settings.sft, "max_steps": args.steps, "warmup_steps": 0, "save_steps": args.steps}
    config = CONFIGS[profile_settings.sft_method].for_platform("local", **settings)
    conversations, source = load_rows(None, args.rows)
    with tempfile.TemporaryDirectory(prefix="step-profile-") as tmp:
        rows_file = write_jsonl(({"messages": m} for m in conversations), Path(tmp) / "rows.jsonl")
        run_dir = Path(tmp) / "run"
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            run_sft(config, model=DEFAULT_MODEL, train_file=rows_file, run_dir=run_dir, log=RunLog(run_dir, echo=None))
        steps = [row for row in read_metrics(run_dir) if "loss" in row]
    events = profiler.key_averages()
    by_kind: dict[str, float] = defaultdict(float)
    for event in events:
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    total = sum(by_kind.values())
    print(f"{config.METHOD}, {args.steps} steps of {config.global_batch_size} rows from {source}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; seconds per step "
          + ", ".join(f"{row['seconds_per_step']:.2f}" for row in steps))
    print(f"\nself CPU time by kind of work ({total:.1f} s in all, model loading included):")
    for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:30s} {seconds:7.2f} s  {seconds / total:6.1%}")
    print("\nten most expensive operators (self CPU time):")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {event.key:45s} {event.self_cpu_time_total / 1e6:7.2f} s  {event.count:7d} calls")
    print(f"\npeak RSS of this process: {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

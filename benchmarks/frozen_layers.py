"""Full fine-tuning with the lowest blocks frozen (`frozen_layers`) against every weight trained, same rows.

    nice -n 0 .venv/bin/python benchmarks/frozen_layers.py --frozen-layers 20 --steps 6 --repeats 2

Runs the standard profile's SFT step (full fine-tuning, 8 rows of at most 384 tokens, question cut to 192) for a
few steps, alternately with every weight trained and with the lowest --frozen-layers decoder blocks and the
embeddings frozen, each run in a fresh process like a real job, and prints tokens/s and peak RSS of both and
their ratio (target: at least 2x the tokens/s of every weight trained). The first step of each run is a warmup.
Rows are the shared Stack Overflow parquet when present (--data to choose), else synthetic questions. Run it on an
otherwise idle machine. Whether freezing keeps accuracy is measured separately, on validation rows
(`sft_recipe.py`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_steps(steps: int, frozen_layers: int, rows_file: Path, work: Path) -> dict:
    """tokens/s and seconds per step after the warmup step, and the process's peak RSS, in a fresh process."""
    run_dir = work / f"run-{frozen_layers}-{len(list(work.iterdir()))}"
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from nbtoolkit.runtime.events import RunLog, read_metrics
from nbtoolkit.stages import PROFILES
from nbtoolkit.training.config import SFTFullConfig
from nbtoolkit.training.sft import run_sft
settings = {{**PROFILES["standard"].sft, "max_steps": {steps + 1}, "warmup_steps": 0, "save_steps": {steps + 1}}}
config = SFTFullConfig.for_platform("local", **settings, frozen_layers={frozen_layers})
summary = run_sft(config, model="smollm2-135m-instruct", train_file={str(rows_file)!r}, run_dir={str(run_dir)!r},
                  log=RunLog({str(run_dir)!r}, echo=None))
rows = [r for r in read_metrics({str(run_dir)!r}) if "loss" in r][1:]
seconds = sum(r["seconds_per_step"] for r in rows)
print(json.dumps({{"tokens_per_second": sum(r["tokens"] for r in rows) / seconds,
                  "seconds_per_step": seconds / len(rows), "peak_rss_mb": summary["peak_rss_mb"]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frozen-layers", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run (after one warmup step)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--data", default=None, help="chat .jsonl or a table to prepare")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.sft_throughput import load_rows
    from nbtoolkit.data.formats import write_jsonl

    conversations, source = load_rows(args.data, args.rows)
    print(f"{len(conversations)} rows from {source}; {args.steps} measured steps of 8 rows per run, "
          f"{args.repeats} runs per side", flush=True)
    runs: dict[int, list[dict]] = {0: [], args.frozen_layers: []}
    with tempfile.TemporaryDirectory(prefix="frozen-layers-") as tmp:
        work = Path(tmp)
        rows_file = write_jsonl(({"messages": m} for m in conversations), work / "rows.jsonl")
        for _ in range(args.repeats):
            for frozen in runs:
                result = run_steps(args.steps, frozen, rows_file, work)
                runs[frozen].append(result)
                print(f"frozen_layers={frozen:2d}: {result['tokens_per_second']:6.0f} tokens/s  "
                      f"{result['seconds_per_step']:5.2f} s/step  peak RSS {result['peak_rss_mb']:,.0f} MB", flush=True)
    summary = {}
    for frozen, results in runs.items():
        summary[frozen] = {key: sum(r[key] for r in results) / len(results)
                           for key in ("tokens_per_second", "seconds_per_step")}
        summary[frozen]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    every, frozen = summary[0], summary[args.frozen_layers]
    ratio = frozen["tokens_per_second"] / every["tokens_per_second"]
    print(f"tokens/s: {frozen['tokens_per_second']:.0f} vs {every['tokens_per_second']:.0f} = {ratio:.2f}x (target >= "
          f"2x); peak RSS {frozen['peak_rss_mb']:,.0f} vs {every['peak_rss_mb']:,.0f} MB")
    print(json.dumps({"source": source, "runs": runs, "summary": summary, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

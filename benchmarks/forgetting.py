"""Forgetting with and without data mixing, on the real Stack Overflow task with the embedded model.

    nice -n 10 .venv/bin/python benchmarks/forgetting.py                  # the full comparison (200 steps: over an hour)
    nice -n 10 .venv/bin/python benchmarks/forgetting.py --steps 60 --bench-limit 500 --eval-rows 200   # 30 min
    nice -n 10 .venv/bin/python benchmarks/forgetting.py --small          # plumbing check (a few minutes)

Runs, each an SFT (LoRA) job on the same Stack Overflow rows (sft-eval-rft split of so_quality_6750.parquet):
  customer-high  customer data only at a high learning rate (--high-lr, 10x the calibrated 2e-4 by default)
  mix-high       a 50/50 mix (balanced-50 category weights) at the same high learning rate
  (--runs adds mix-default / customer-default: the calibrated learning rate)
General data for the mix: Alpaca (instruction-following), GSM8K (math) and the C4 sample (baseline) from
--data-dir, self-synthesized rehearsal by the base model for the other categories (the built-in prompts, plus
--rehearsal-prompts Alpaca instructions for reasoning-instruction-following, the largest category).

The base model and every run are evaluated the same way: label accuracy on held-out rows (the domain metric),
log-likelihood accuracy on ARC-Easy and PIQA (the same seeded rows for every model; deltas are paired), and the
retention probe (KL to the base model on held-out rehearsal prompts). Target (issue 6): the 50/50 mix keeps
ARC-Easy/PIQA within 1 point of the base model while customer-only SFT at the high lr loses more.
Writes --out/results.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RUNS = {"customer-high": (100, "high"), "mix-high": (50, "high"), "mix-default": (50, "default"),
        "customer-default": (100, "default")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(SHARED / "stackoverflow-quality" / "so_quality_6750.parquet"))
    parser.add_argument("--data-dir", default=str(SHARED), help="public general data and benchmarks")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--runs", default="customer-high,mix-high", help=f"comma-separated among {list(RUNS)}")
    parser.add_argument("--steps", type=int, default=200, help="SFT optimizer steps per run")
    parser.add_argument("--high-lr", type=float, default=2e-3)
    parser.add_argument("--mix", default="balanced-50", help="mix preset giving the category weights")
    parser.add_argument("--general-rows", type=int, default=2000, help="rows per public general file")
    parser.add_argument("--rehearsal-prompts", type=int, default=200,
                        help="Alpaca instructions the base model answers as reasoning-instruction-following rehearsal "
                        "(beside the built-in prompts)")
    parser.add_argument("--eval-rows", type=int, default=300, help="held-out Stack Overflow rows scored")
    parser.add_argument("--bench-limit", type=int, default=1000, help="rows per benchmark (0: all)")
    parser.add_argument("--probe-prompts", type=int, default=0, help="held-out rehearsal prompts (0: all)")
    parser.add_argument("--out", default=None, help="output directory (new); default runs/bench-forgetting-<time>")
    parser.add_argument("--parallel", type=int, default=2,
                        help="jobs side by side, each with cores/parallel threads (2 one-thread SFT jobs train "
                             "faster in total than one two-thread job on 2 cores)")
    parser.add_argument("--small", action="store_true",
                        help="a plumbing check: 3 steps, 8 eval rows, 8 benchmark rows, 4 probe prompts")
    args = parser.parse_args(argv)
    if args.small:
        args.steps, args.eval_rows, args.bench_limit, args.probe_prompts = 3, 8, 8, 4
        args.general_rows, args.rehearsal_prompts = min(args.general_rows, 50), min(args.rehearsal_prompts, 4)
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; choose among {list(RUNS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from nbtoolkit.data import PrepareConfig, prepare_dataset
    from nbtoolkit.mixing import GeneralDataRegistry, mix_preset, mixing_extra
    from nbtoolkit.runtime import JobSpec, LocalRuntime
    from nbtoolkit.runtime.events import new_run_dir, write_json_atomic
    from nbtoolkit.sweeps import POINT_EVAL_KIND, job_threads_env
    from nbtoolkit.training.config import EvalConfig, SFTLoraConfig

    started = time.perf_counter()
    out = Path(args.out) if args.out else new_run_dir(REPO / "runs", "bench-forgetting")
    out.mkdir(parents=True, exist_ok=True)
    print(f"output: {out}", flush=True)

    prepared = prepare_dataset(args.data, PrepareConfig(seed=0), out_dir=out / "data")
    if not prepared.ok:
        raise SystemExit(f"data validation failed; see {out / 'data' / 'validation.json'}")
    labels = prepared.labels
    sft_file, eval_file = out / "data/sft/chat.jsonl", out / "data/eval/chat.jsonl"

    mix = mix_preset(args.mix).with_customer_percent(50)
    registry = GeneralDataRegistry.default(args.data_dir, model=args.model, limit=args.general_rows,
                                           per_category=2 if args.small else None)
    alpaca = Path(args.data_dir) / "alpaca-5k" / "alpaca_5000.json"
    if args.rehearsal_prompts and alpaca.is_file():
        registry.add_rehearsal_prompts("reasoning-instruction-following", alpaca, limit=args.rehearsal_prompts, seed=1)
    t0 = time.perf_counter()
    general_files = registry.write(out / "general", mix)
    print(f"general data ({time.perf_counter() - t0:.0f} s): "
          + ", ".join(f"{c} {sum(1 for _ in open(p))}" for c, p in general_files.items()), flush=True)

    runtime = LocalRuntime(out / "jobs", env=job_threads_env(args.parallel))
    eval_config = EvalConfig.for_platform("local", limit=args.eval_rows, max_new_tokens=8)
    general = {"benchmarks": ["arc-easy", "piqa"], "limit": args.bench_limit or None, "data_dir": args.data_dir}

    def run(spec: JobSpec) -> tuple[object, object]:
        job = runtime.launch(spec)
        print(f"[{spec.name}] {spec.kind} in {job.run_dir}", flush=True)
        return job, job.wait(progress=sys.stderr.isatty())

    def evaluate(name: str, model: str, probe: bool) -> dict:
        extra = dict(general)
        if probe:
            extra.update(base_model=args.model, probe_prompts=args.probe_prompts or None)
        job, result = run(JobSpec(POINT_EVAL_KIND, eval_config, model=model, eval_file=str(eval_file),
                                  labels=labels, name=f"eval-{name}", extra={"general": extra}))
        from nbtoolkit.forgetting import GeneralEvalResult

        return {"metrics": result.output["metrics"], "seconds": result.seconds,
                "general": GeneralEvalResult.load(Path(job.run_dir))}

    def sft_spec(name: str) -> JobSpec:
        customer, lr_kind = RUNS[name]
        lr = args.high_lr if lr_kind == "high" else SFTLoraConfig.for_platform("local").lr
        run_mix = mix.with_customer_percent(customer)
        config = SFTLoraConfig.for_platform("local", lr=lr, max_steps=args.steps,
                                            warmup_steps=max(1, round(0.15 * args.steps)) if args.steps > 1 else 0,
                                            save_steps=args.steps, mixing=run_mix.mixing)
        extra = mixing_extra(run_mix, general_files) if run_mix.mixing else {}
        return JobSpec("sft_lora", config, model=args.model, train_file=str(sft_file), labels=labels,
                       name=f"sft-{name}", extra=extra)

    def train(name: str) -> dict:
        customer, _ = RUNS[name]
        spec = sft_spec(name)
        job, result = run(spec)
        return {"lr": spec.config.lr, "customer_percent": customer,
                "train_seconds": result.output.get("train_seconds"), "final_loss": result.output.get("final_loss"),
                "realized_mix": result.output.get("mix"), **evaluate(name, str(job.run_dir), probe=True)}

    from concurrent.futures import ThreadPoolExecutor

    names = args.runs.split(",")
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        trained = {name: pool.submit(train, name) for name in names}
        base = pool.submit(evaluate, "base", args.model, False)
        results = {"base": {"lr": None, "customer_percent": None, **base.result()},
                   **{name: future.result() for name, future in trained.items()}}

    base_general = results["base"]["general"]
    rows = []
    for name, entry in results.items():
        g, m = entry.pop("general"), entry["metrics"]
        row = {"run": name, "lr": entry["lr"], "customer_%": entry["customer_percent"],
               "label_accuracy": m.get("label_accuracy"), "label_accuracy_stderr": m.get("label_accuracy_stderr")}
        for bench in g.metrics:
            row[f"{bench}"] = g.metrics[bench]["accuracy"]
        if name != "base":
            for bench, delta in g.compare(base_general).iterrows():
                row[f"Δ {bench}"] = delta["delta"]
                row[f"Δ {bench} stderr"] = delta["delta_stderr"]
            if g.retention:
                row["retention_kl"] = g.retention["mean_kl"]
                row["top1_agreement"] = g.retention["top1_agreement"]
        entry["general"] = {"metrics": g.metrics, "retention": {k: v for k, v in (g.retention or {}).items()
                                                                if k != "per_prompt"}}
        rows.append(row)

    import pandas as pd

    table = pd.DataFrame(rows).set_index("run")
    verdict = {}
    for name in results:
        if name.startswith("mix"):
            deltas = [table.loc[name, f"Δ {b}"] for b in ("arc-easy", "piqa")]
            verdict[name] = {"within_1_point_of_base": all(d >= -0.01 for d in deltas)}
    for name in results:
        if name.startswith("customer"):
            worst = min(table.loc[name, f"Δ {b}"] for b in ("arc-easy", "piqa"))
            verdict[name] = {"worst_general_delta": worst}
    summary = {"args": vars(args), "mix": mix.to_dict(), "labels": list(labels or []), "results": results,
               "table": json.loads(table.to_json(orient="index")), "verdict": verdict,
               "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(out / "results.json", summary)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(4).to_string())
    print(json.dumps(verdict, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
    print(f"done in {summary['seconds']:.0f} s; {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

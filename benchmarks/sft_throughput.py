"""SFT step throughput: nbtoolkit's run_sft against plain TRL SFTTrainer, same rows and LoRA, one process.

    nice -n 10 .venv/bin/python benchmarks/sft_throughput.py --steps 4
    nice -n 10 .venv/bin/python benchmarks/sft_throughput.py --steps 4 --full   # every weight, both sides

Both train steps+1 optimizer steps of --batch rows; the first step of each is a warmup and is not counted.
tokens/s counts prompt + answer tokens (no padding). TRL runs at its best CPU settings: its defaults
(full-sequence loss) with `use_cpu=True`, no gradient checkpointing (--trl-checkpointing restores TRL's default,
which trades time for memory), and bf16 only where the CPU computes it natively, following the device plan as ours
does (TRL turns bf16 on by default, which on an AVX2-only CPU is emulated and tens of times slower; --trl-bf16
restores it).
Rows are the shared Stack Overflow parquet when present, else synthetic questions; user turns are cut to
--max-prompt-tokens up front so both trainers see the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_PARQUET = REPO.parent / "shared" / "data" / "stackoverflow-quality" / "so_quality_6750.parquet"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_rows(data: str | None, n_rows: int) -> tuple[list[list[dict]], str]:
    """Chat conversations (system, user, assistant) and where they came from."""
    from nbtoolkit.data import PrepareConfig, make_stackoverflow_dataset, prepare_dataset
    from nbtoolkit.training.sft import read_chat_rows

    if data and data.endswith(".jsonl"):
        return [messages for _, messages in read_chat_rows(data, limit=n_rows)], data
    if data:
        source, table = data, data
    elif SHARED_PARQUET.exists():
        source, table = str(SHARED_PARQUET), str(SHARED_PARQUET)
    else:
        source, table = "synthetic (nbtoolkit.data.synthetic)", make_stackoverflow_dataset(max(n_rows, 64), seed=0)
    prepared = prepare_dataset(table, PrepareConfig(split=None))
    records = prepared.records("all", "chat")[:n_rows]
    return [record["messages"] for record in records], source


def run_ours(model: str, rows_file: Path, args: argparse.Namespace, work: Path, parallel: int = 1) -> dict:
    from nbtoolkit.runtime.events import RunLog, read_metrics
    from nbtoolkit.training.config import SFTFullConfig, SFTLoraConfig
    from nbtoolkit.training.sft import run_sft

    config = (SFTFullConfig if args.full else SFTLoraConfig).for_platform(
        "local", lr=args.lr, max_steps=args.steps + 1, warmup_steps=0, save_steps=args.steps + 1, logging_steps=1,
        global_batch_size=args.batch, micro_batch_size=args.batch // parallel, parallel_micro_batches=parallel,
        max_prompt_tokens=args.max_prompt_tokens, max_length=args.max_length)
    run_dir = work / f"ours-{parallel}"
    summary = run_sft(config, model=model, train_file=rows_file, run_dir=run_dir, log=RunLog(run_dir, echo=None))
    steps = [row for row in read_metrics(run_dir) if "loss" in row][1:]
    seconds = sum(row["seconds_per_step"] for row in steps)
    tokens = sum(row["tokens"] for row in steps)
    return {"seconds_per_step": seconds / len(steps), "tokens_per_second": tokens / seconds,
            "tokens_per_step": tokens / len(steps), "final_loss": summary["final_loss"],
            "peak_rss_mb": peak_rss_mb(), "config": config}


def run_trl(model: str, conversations: list[list[dict]], config, args: argparse.Namespace, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from nbtoolkit.models import model_path

    path = model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    network = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = None if args.full else LoraConfig(
        r=config.lora_r, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    from nbtoolkit.models import plan_device

    # TRL at its best on a CPU: no gradient checkpointing (its default trades time for memory), bf16 only where
    # the CPU computes it natively (as ours); --trl-checkpointing and --trl-bf16 restore TRL's defaults.
    plan = plan_device()
    extra = {} if args.trl_bf16 else {"bf16": plan.autocast_dtype == "bfloat16"}
    trl_args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch,
                         max_steps=args.steps + 1, learning_rate=args.lr, max_length=args.max_length,
                         use_cpu=plan.device_type == "cpu", gradient_checkpointing=args.trl_checkpointing, **extra)
    trainer = SFTTrainer(model=network, args=trl_args, processing_class=tokenizer, peft_config=lora,
                         train_dataset=Dataset.from_list([{"messages": m} for m in conversations]))

    tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.started = 0.0

        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.seconds.append(time.perf_counter() - self.started)

    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    seconds, counted = timer.seconds[1:], tokens[1:len(timer.seconds)]
    return {"seconds_per_step": sum(seconds) / len(seconds), "tokens_per_second": sum(counted) / sum(seconds),
            "tokens_per_step": sum(counted) / len(counted), "peak_rss_mb": peak_rss_mb(),
            "gradient_checkpointing": trl_args.gradient_checkpointing, "bf16": trl_args.bf16}


def main(argv: list[str] | None = None) -> int:
    from nbtoolkit.generation import truncate_user_turns
    from nbtoolkit.models import DEFAULT_MODEL, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name, Hugging Face id or directory")
    parser.add_argument("--steps", type=int, default=5, help="measured steps (after one warmup step)")
    parser.add_argument("--batch", type=int, default=8, help="rows per step (no gradient accumulation)")
    parser.add_argument("--data", default=None, help="chat .jsonl or a table to prepare (default: shared "
                        "Stack Overflow parquet if present, else synthetic rows)")
    parser.add_argument("--rows", type=int, default=256, help="rows to read")
    parser.add_argument("--max-prompt-tokens", type=int, default=192, help="user turns cut to this many tokens")
    parser.add_argument("--max-length", type=int, default=1024,
                        help="sequence limit of both trainers (TRL's default, so neither cuts the rows further)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--full", action="store_true",
                        help="fine-tune every weight on both sides (the standard profile's method) instead of LoRA")
    parser.add_argument("--trl-bf16", action="store_true", help="keep TRL's bf16 default (slow without native bf16)")
    parser.add_argument("--trl-checkpointing", action="store_true",
                        help="keep TRL's gradient checkpointing default (less memory, slower steps)")
    parser.add_argument("--parallel-micro-batches", type=int, default=2,
                        help="also time ours with the step split into this many micro batches computed side by "
                             "side, one thread each (1: skip)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line too")
    args = parser.parse_args(argv)

    import torch

    from nbtoolkit.data.formats import write_jsonl

    tokenizer = load_tokenizer(args.model)
    conversations, source = load_rows(args.data, args.rows)
    conversations = [truncate_user_turns(m, tokenizer, args.max_prompt_tokens) for m in conversations]
    print(f"model {args.model}; {len(conversations)} rows from {source}; batch {args.batch}; "
          f"{args.steps} measured steps after 1 warmup; {'full fine-tuning' if args.full else 'LoRA'}; torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        work = Path(tmp)
        rows_file = write_jsonl(({"messages": m} for m in conversations), work / "rows.jsonl")
        ours = run_ours(args.model, rows_file, args, work)
        print(f"nbtoolkit run_sft : {ours['tokens_per_second']:8,.0f} tokens/s  {ours['seconds_per_step']:6.2f} s/step"
              f"  ({ours['tokens_per_step']:,.0f} tokens/step)  peak RSS {ours['peak_rss_mb']:,.0f} MB", flush=True)
        side = None
        if args.parallel_micro_batches > 1:
            side = run_ours(args.model, rows_file, args, work, args.parallel_micro_batches)
            print(f"  {args.parallel_micro_batches} micro batches side by side: {side['tokens_per_second']:8,.0f} "
                  f"tokens/s  {side['seconds_per_step']:6.2f} s/step  "
                  f"({side['tokens_per_second'] / ours['tokens_per_second']:.2f}x one micro batch)", flush=True)
        trl = run_trl(args.model, conversations, ours["config"], args, work)
        print(f"TRL SFTTrainer    : {trl['tokens_per_second']:8,.0f} tokens/s  {trl['seconds_per_step']:6.2f} s/step"
              f"  ({trl['tokens_per_step']:,.0f} tokens/step)  peak RSS {trl['peak_rss_mb']:,.0f} MB (process peak, "
              f"after both)  [gradient_checkpointing={trl['gradient_checkpointing']}, bf16={trl['bf16']}]")
    ratio = ours["tokens_per_second"] / trl["tokens_per_second"]
    print(f"speed-up (tokens/s): {ratio:.2f}x  (target >= 1.5x)  "
          f"s/step ratio: {trl['seconds_per_step'] / ours['seconds_per_step']:.2f}x")
    if side is not None:
        print(f"speed-up with {args.parallel_micro_batches} micro batches side by side: "
              f"{side['tokens_per_second'] / trl['tokens_per_second']:.2f}x")
    if args.json:
        for run in (ours, side or {}):
            run.pop("config", None)
        print(json.dumps({"ours": ours, "ours_side_by_side": side, "trl": trl, "ratio": ratio, "rows_source": source}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())

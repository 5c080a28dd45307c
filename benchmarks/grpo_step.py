"""Seconds per GRPO step: the RFT job (run_rft, nbtoolkit.training.grpo) against TRL's GRPOTrainer at its best
CPU settings, same model, same prompts, same batch and LoRA, measured in the same run.

    nice -n 5 .venv/bin/python benchmarks/grpo_step.py --model runs/x/jobs/sft-.../model \
        --prompts runs/x/data/train/rft/rft.jsonl --steps 4

TRL repeats every prompt once per reply (in sampling, the reference pass and the policy pass); run_rft samples a
group's replies from one prompt pass and scores them with the prompt's keys and values computed once. Both train
on every sampled group here (dynamic sampling off: TRL has no per-step refill), with the standard profile's
settings and a 4-prompt precheck; the first step of each is left out as warm-up. Peak RSS is each side's own
subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _config(args):
    from nbtoolkit.stages import PROFILES
    from nbtoolkit.training.config import RFTLoraConfig

    settings = {**PROFILES["standard"].rft, "max_steps": args.steps, "save_steps": args.steps, "warmup_steps": 0,
                "global_batch_size": args.prompts_per_step * 4, "dynamic_sampling": 0}
    return RFTLoraConfig.for_platform("local", **settings)


def _labels(prompts: str) -> list[str]:
    from nbtoolkit.data.formats import read_jsonl

    return sorted({str(r.get("reference_answer") or r["messages"][-1]["content"]) for r in read_jsonl(prompts)})


def run_ours(args) -> dict:
    from nbtoolkit.runtime.events import peak_rss_mb, read_metrics
    from nbtoolkit.training.rft import run_rft

    with tempfile.TemporaryDirectory(prefix="grpo-ours-") as run_dir:
        run_rft(_config(args), model=args.model, train_file=args.prompts, run_dir=run_dir, labels=_labels(args.prompts),
                precheck_prompts=4)
        rows = [row for row in read_metrics(run_dir) if row.get("phase") == "train"]
    seconds = [row["seconds_per_step"] for row in rows[1:] or rows]
    return {"seconds_per_step": sum(seconds) / len(seconds), "steps": [row["seconds_per_step"] for row in rows],
            "peak_rss_mb": peak_rss_mb()}


def run_trl(args) -> dict:
    """TRL 1.16 GRPOTrainer with the mapping the RFT job used before its own step (fp32 on CPUs without native
    bf16, no activation checkpointing, dropout off, the same LoRA and batch)."""
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from nbtoolkit.models import load_model
    from nbtoolkit.rewards import as_trl_reward
    from nbtoolkit.runtime.events import peak_rss_mb
    from nbtoolkit.training.rft import _stop_ids, build_reward, load_rft_records

    config = _config(args)
    loaded = load_model(args.model)
    stop = _stop_ids(loaded.tokenizer)
    loaded.model.generation_config.eos_token_id = stop if len(stop) > 1 else stop[0]
    records = load_rft_records(args.prompts, tokenizer=loaded.tokenizer, max_prompt_tokens=config.max_prompt_tokens)
    from datasets import Dataset

    dataset = Dataset.from_list([{"prompt": r["messages"], "reference_answer": r["reference_answer"], "id": r["id"]}
                                 for r in records])
    micro = min(config.micro_batch_size, config.global_batch_size)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory(prefix="grpo-trl-") as out:
        trl_args = GRPOConfig(
            output_dir=out, learning_rate=config.lr, max_steps=config.max_steps, warmup_steps=0,
            per_device_train_batch_size=micro, gradient_accumulation_steps=config.global_batch_size // micro,
            num_generations=config.number_generation, beta=config.kl_loss_coef, temperature=config.temperature,
            top_k=config.top_k, entropy_coef=config.ent_coeff, max_completion_length=config.max_new_tokens,
            save_strategy="no", logging_steps=1, seed=config.seed, use_cpu=True,
            bf16=loaded.plan.autocast_dtype == "bfloat16", activation_checkpointing=False, disable_dropout=True,
            report_to="none", dataloader_pin_memory=False, remove_unused_columns=False)
        reward = as_trl_reward(build_reward(config.reward, _labels(args.prompts)))
        reward.__name__ = config.reward
        trainer = GRPOTrainer(model=loaded.model, reward_funcs=[reward], args=trl_args, train_dataset=dataset,
                              processing_class=loaded.tokenizer, callbacks=[Timer()],
                              peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.alpha, lora_dropout=0.0,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer.train()
    seconds = times[1:] or times
    return {"seconds_per_step": sum(seconds) / len(seconds), "steps": times, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the starting model (an SFT run's model directory)")
    parser.add_argument("--prompts", required=True, help="an rft or chat JSONL file of prompts")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts-per-step", type=int, default=2, help="the standard profile's: 8 replies / 4")
    parser.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)  # one side, in a subprocess
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps((run_ours if args.side == "ours" else run_trl)(args)))
        return
    result = {}
    for side in ("ours", "trl"):
        command = [sys.executable, __file__, "--model", args.model, "--prompts", args.prompts, "--steps",
                   str(args.steps), "--prompts-per-step", str(args.prompts_per_step), "--side", side]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result[side] = json.loads(output.strip().splitlines()[-1])
    ours, trl = result["ours"], result["trl"]
    result["speedup"] = trl["seconds_per_step"] / ours["seconds_per_step"]
    print(json.dumps(result, indent=2))
    print(f"\n{args.prompts_per_step * 4} completions per step: TRL {trl['seconds_per_step']:.1f} s "
          f"(peak RSS {trl['peak_rss_mb']:,.0f} MB), run_rft {ours['seconds_per_step']:.1f} s "
          f"(peak RSS {ours['peak_rss_mb']:,.0f} MB): {result['speedup']:.1f}x")


if __name__ == "__main__":
    main()

"""What a GRPO step could cost: the RFT job's step (TRL's GRPOTrainer) against a prototype step that runs each
prompt once per group of replies, measured in the same run on the same model and prompts.

    nice -n 5 .venv/bin/python benchmarks/grpo_step.py --model runs/x/jobs/sft-.../model \
        --prompts runs/x/data/train/rft/rft.jsonl --steps 3

TRL repeats every prompt once per reply (in sampling, the reference pass and the policy pass), and replies to a
label prompt are a few tokens after a prompt of hundreds. The prototype samples a group's replies from one
prompt pass (nbtoolkit.generation), and scores them with the prompt's keys and values computed once and repeated
(the prefix sharing SFT's loss uses): reference log-probs with the adapters off, then the policy's, the
on-policy GRPO loss (group-normalized advantages, k3 KL to the reference, entropy bonus) and one AdamW update of
LoRA adapters. It is a diagnosis for a faster RFT stage, not a replacement: no checkpoints, no health checks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def trl_seconds_per_step(model: str, prompts: str, labels: list[str], config) -> float:
    """Seconds per optimizer step of the RFT job itself (run_rft, no dynamic sampling, a 4-prompt precheck)."""
    from dataclasses import replace

    from nbtoolkit.training.rft import run_rft

    with tempfile.TemporaryDirectory(prefix="grpo-step-") as run_dir:
        summary = run_rft(replace(config, dynamic_sampling=0), model=model, train_file=prompts, run_dir=run_dir,
                          labels=labels, precheck_prompts=4)
    return float(summary["seconds_per_step"])


def shared_prefix_steps(model: str, prompts: str, labels: list[str], config, steps: int) -> list[dict]:
    """Timed prototype steps of config.global_batch_size / number_generation prompts each."""
    import torch
    from peft import LoraConfig, get_peft_model

    from nbtoolkit.generation import _sampled_batch, encode_prompts
    from nbtoolkit.models import answer_terminator_ids, load_model
    from nbtoolkit.training.rft import _samples, _scores, build_reward, load_rft_records
    from nbtoolkit.training.sft import ChatExample, _hidden_states, collate

    loaded = load_model(model)
    tokenizer, group = loaded.tokenizer, config.number_generation
    records = load_rft_records(prompts, tokenizer=tokenizer, max_prompt_tokens=config.max_prompt_tokens)
    reward_fn = build_reward(config.reward, labels)
    policy = get_peft_model(loaded.model, LoraConfig(r=config.lora_r, lora_alpha=config.alpha, lora_dropout=0.0,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    stop = {*answer_terminator_ids(tokenizer), tokenizer.eos_token_id}
    terminator = answer_terminator_ids(tokenizer)[0]
    base = policy.get_base_model()
    head = base.get_output_embeddings()
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)

    def token_logps(batch):
        hidden, offset = _hidden_states(base, batch, True)
        logits = head(hidden[batch.answer_positions[:, offset:]]).float()
        logp = torch.log_softmax(logits, -1)
        return logp.gather(-1, batch.targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)

    rows = []
    for _ in range(steps):
        started = time.perf_counter()
        chosen = rng.sample(records, config.global_batch_size // group)
        ids = encode_prompts(tokenizer, [r["messages"] for r in chosen], None)
        policy.eval()
        with torch.no_grad():
            replies = [reply for prompt in ids for reply in _sampled_batch(
                policy, [prompt], None, 0, n=group, temperature=config.temperature, top_k=config.top_k, stop=stop,
                max_new_tokens=config.max_new_tokens, device="cpu", pad_id=loaded.pad_token_id,
                generator=generator)]
        sampled = time.perf_counter()
        policy.train()
        tokens = sum(len(t) + stopped for t, stopped in replies)
        rewards_all, learned = [], 0
        for k, (record, prompt) in enumerate(zip(chosen, ids)):
            replies_k = replies[k * group:(k + 1) * group]
            texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t, _ in replies_k]
            rewards = torch.tensor(_scores(reward_fn, _samples(record, texts)))
            rewards_all += rewards.tolist()
            learned += float(rewards.std()) > 0
            # A group whose rewards are equal has zero advantage but still pays its KL and entropy terms, as in TRL.
            advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
            examples = [ChatExample(tuple(prompt + t + ([terminator] if stopped else [])), len(prompt))
                        for t, stopped in replies_k]
            keep = [i for i, e in enumerate(examples) if e.answer_length]
            batch = collate([examples[i] for i in keep], loaded.pad_token_id)
            per_token = torch.repeat_interleave(advantages[keep],
                                                torch.tensor([examples[i].answer_length for i in keep]))
            with torch.no_grad(), policy.disable_adapter():
                reference, _ = token_logps(batch)
            logp, entropy = token_logps(batch)
            gap = reference - logp
            loss = (-torch.exp(logp - logp.detach()) * per_token + config.kl_loss_coef * (torch.exp(gap) - gap - 1)
                    - config.ent_coeff * entropy)
            (loss.sum() / tokens).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ended = time.perf_counter()
        rows.append({"seconds": ended - started, "sampling_seconds": sampled - started,
                     "reward_mean": statistics.fmean(rewards_all), "groups_with_reward_variance": learned,
                     "completion_tokens": tokens})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the starting model (an SFT run's model directory)")
    parser.add_argument("--prompts", required=True, help="an rft or chat JSONL file of prompts")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts-per-step", type=int, default=2, help="the standard profile's: 8 replies / 4")
    args = parser.parse_args(argv)

    from nbtoolkit.data.formats import read_jsonl
    from nbtoolkit.stages import PROFILES
    from nbtoolkit.training.config import RFTLoraConfig

    rft = PROFILES["standard"].rft
    config = RFTLoraConfig.for_platform("local", **{**rft, "max_steps": args.steps, "save_steps": args.steps,
                                                    "warmup_steps": 0,
                                                    "global_batch_size": args.prompts_per_step * 4})
    labels = sorted({str(r.get("reference_answer") or r["messages"][-1]["content"]) for r in read_jsonl(args.prompts)})
    trl = trl_seconds_per_step(args.model, args.prompts, labels, config)
    rows = shared_prefix_steps(args.model, args.prompts, labels, config, args.steps)
    prototype = statistics.fmean(r["seconds"] for r in rows[1:] or rows)  # the first step warms up
    result = {"completions_per_step": config.global_batch_size, "trl_seconds_per_step": trl,
              "shared_prefix_seconds_per_step": prototype, "speedup": trl / prototype, "prototype_steps": rows}
    print(json.dumps(result, indent=2))
    print(f"\n{config.global_batch_size} completions per step: TRL {trl:.1f} s, shared prefix {prototype:.1f} s "
          f"({trl / prototype:.1f}x)")


if __name__ == "__main__":
    main()

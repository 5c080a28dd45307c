"""Evaluation throughput: nbtoolkit's batched generation against a naive per-sample generate loop.

Both sides answer the same templated prompts (synthetic Stack Overflow questions with the case study's system
prompt, or --data) with greedy decoding and the same max_new_tokens, in one process, one after the other:

- ours:  nbtoolkit.generation.generate_replies with the model loaded as the product loads it (bf16 autocast on
         CPUs with native bf16, else float32): shared prompt head once, batched decoding, stop at the terminator
- naive: model.generate on one prompt at a time, float32, no batching

    nice -n 10 .venv/bin/python benchmarks/eval_throughput.py --samples 16
    .venv/bin/python benchmarks/eval_throughput.py --samples 32 --threads 1   # busy machine: compare CPU time
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from nbtoolkit.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or directory (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=32, help="prompts to answer (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="reply length limit (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of ours (default: %(default)s)")
    parser.add_argument("--max-prompt-tokens", type=int, default=192,
                        help="user turn cut to this many tokens, both sides (default: %(default)s)")
    parser.add_argument("--data", default=None, help="eval file (gen_qa/chat JSONL); default: synthetic questions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic questions (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help=(
        "torch threads (default: torch's choice); with 1 thread the CPU-time ratio is a fair measure even on a "
        "busy machine"))
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        parser.error("--samples, --batch-size and --max-new-tokens must be at least 1")
    return args


def synthetic_conversations(n: int, seed: int) -> list[list[dict]]:
    """The case study's prompts on synthetic Stack Overflow-like questions."""
    from nbtoolkit.data.synthetic import make_stackoverflow_dataset
    from nbtoolkit.data.tasks import STACKOVERFLOW_SYSTEM_PROMPT

    frame = make_stackoverflow_dataset(max(n, 30), seed=seed).head(n)
    return [[{"role": "system", "content": STACKOVERFLOW_SYSTEM_PROMPT},
             {"role": "user", "content": f"{row.Title}\n\n{row.Body}"}] for row in frame.itertuples()]


def naive_replies(loaded, conversations, *, max_new_tokens: int, max_prompt_tokens: int) -> list[str]:
    """One model.generate call per prompt, float32 (no autocast), same prompts and stopping rule as ours."""
    import torch

    from nbtoolkit.generation import encode_prompts
    from nbtoolkit.models import answer_terminator_ids

    model, tokenizer = loaded.model, loaded.tokenizer
    stop = list(dict.fromkeys([*answer_terminator_ids(tokenizer), tokenizer.eos_token_id]))
    replies = []
    with torch.inference_mode():
        for ids in encode_prompts(tokenizer, conversations, max_prompt_tokens):
            input_ids = torch.tensor([ids], device=loaded.plan.device)
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=loaded.pad_token_id,
                                    eos_token_id=stop, temperature=None, top_p=None, top_k=None)
            new = output[0, len(ids):].tolist()
            ended = next((k for k, token in enumerate(new) if token in stop), None)
            replies.append(tokenizer.decode(new if ended is None else new[:ended], skip_special_tokens=True).strip())
    return replies


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from nbtoolkit.evaluation import load_eval_examples
    from nbtoolkit.generation import encode_prompts, generate_replies
    from nbtoolkit.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        conversations = [e.conversation for e in load_eval_examples(args.data)[:args.samples]]
    else:
        conversations = synthetic_conversations(args.samples, args.seed)
    loaded = load_model(args.model, dtype="float32")
    product = load_model(args.model)
    prompt_tokens = [len(p) for p in encode_prompts(loaded.tokenizer, conversations, args.max_prompt_tokens)]
    print(f"model {loaded.spec.name}; naive: {loaded.plan.reason}; ours: {product.plan.reason}; "
          f"torch threads {torch.get_num_threads()}, "
          f"{len(conversations)} prompts of {sum(prompt_tokens) / len(prompt_tokens):.0f} tokens on average, "
          f"max_new_tokens {args.max_new_tokens}", flush=True)

    # Warm both paths up on one short prompt so one-time costs (allocations, kernel selection) are not timed.
    naive_replies(loaded, conversations[:1], max_new_tokens=2, max_prompt_tokens=args.max_prompt_tokens)
    generate_replies(product, conversations[:1], max_new_tokens=2, max_prompt_tokens=args.max_prompt_tokens,
                     progress=False)

    started, cpu_started = time.perf_counter(), time.process_time()
    naive = naive_replies(loaded, conversations, max_new_tokens=args.max_new_tokens,
                          max_prompt_tokens=args.max_prompt_tokens)
    naive_seconds, naive_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"naive per-sample generate: {naive_seconds:.1f} s, {len(naive) / naive_seconds:.2f} samples/s", flush=True)

    started, cpu_started = time.perf_counter(), time.process_time()
    ours = generate_replies(product, conversations, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            max_prompt_tokens=args.max_prompt_tokens, progress=False)
    ours_seconds, ours_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"ours (generate_replies, batch {args.batch_size}): {ours_seconds:.1f} s, "
          f"{len(ours) / ours_seconds:.2f} samples/s", flush=True)

    same = sum(a == b.text for a, b in zip(naive, ours)) / len(ours)
    result = {
        "model": loaded.spec.name, "ours_plan": product.plan.reason, "samples": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        "mean_reply_tokens": sum(g.n_tokens for g in ours) / len(ours),
        "naive_seconds": naive_seconds, "ours_seconds": ours_seconds,
        "naive_samples_per_second": len(naive) / naive_seconds, "ours_samples_per_second": len(ours) / ours_seconds,
        "speedup": naive_seconds / ours_seconds, "naive_cpu_seconds": naive_cpu, "ours_cpu_seconds": ours_cpu,
        "cpu_speedup": naive_cpu / ours_cpu, "identical_replies": same,
    }
    print(f"speedup: {result['speedup']:.2f}x wall, {result['cpu_speedup']:.2f}x CPU time (target >= 4x); "
          f"identical replies {same:.0%}; mean reply {result['mean_reply_tokens']:.1f} tokens")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

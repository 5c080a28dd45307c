"""Optimizer step time: the fused AdamW kernel nbtoolkit uses against torch's default (foreach) AdamW.

    nice -n 10 .venv/bin/python benchmarks/optimizer_step.py

Both update every weight of the model (as full fine-tuning does) with random gradients, alternating kinds so that a
machine slowing down mid-run hits both; the first step of each optimizer (state allocation) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    import torch

    from nbtoolkit.models import DEFAULT_MODEL, load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model whose weights are updated")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per optimizer and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (foreach, fused)")
    args = parser.parse_args(argv)

    params = [p for p in load_model(args.model, dtype="float32").model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"{sum(p.numel() for p in params) / 1e6:.1f}M weights, torch threads {torch.get_num_threads()}")
    seconds: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(args.rounds):
        for kind in seconds:
            optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **{kind: True})
            optimizer.step()
            started = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            seconds[kind].append((time.perf_counter() - started) / args.steps)
    mean = {kind: sum(values) / len(values) for kind, values in seconds.items()}
    print(f"foreach AdamW: {mean['foreach']:.3f} s/step; fused AdamW: {mean['fused']:.3f} s/step; "
          f"speed-up {mean['foreach'] / mean['fused']:.1f}x")
    print(json.dumps({"seconds_per_step": mean, "rounds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

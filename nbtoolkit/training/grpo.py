"""The GRPO step of the RFT job, written for short replies to long prompts (label tasks) on a CPU.

A library GRPO trainer (TRL's) repeats each prompt once per reply, in sampling, in the reference pass and in the
policy pass; here a prompt group's replies are sampled from one prompt pass, and scored with the prompt's keys and
values computed once and repeated (`nbtoolkit.training.sft.hidden_states`). On 2 CPU cores that made a step of 8
replies 3.5x faster (benchmarks/grpo_step.py).

The loss is the on-policy GRPO objective (one update per batch of samples, so the importance ratio is 1 and only its
gradient remains): per completion token, -advantage x ratio + kl_loss_coef x k3-KL to the reference (the starting
model: the adapters switched off) - ent_coeff x the token's entropy, summed over the step's trained tokens and
divided by their number. Advantages are group-normalized: (reward - group mean) / (group std + 1e-4).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nbtoolkit.training.sft import ChatExample, LossMode, base_model, collate, hidden_states

ADVANTAGE_EPS = 1e-4
FLAT_TOLERANCE = 1e-6  # rewards closer than this count as equal: the group has no advantage anywhere


@dataclass
class ReplyGroup:
    """One prompt's sampled replies: their tokens (with the terminator when they stopped), whether each hit
    max_new_tokens, their rewards and the reward function's per-reply metrics."""

    record: dict
    prompt: list[int]
    replies: list[list[int]]
    clipped: list[bool]
    rewards: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)

    @property
    def learnable(self) -> bool:
        """Whether the rewards differ: a group whose replies score the same gives GRPO no gradient."""
        return len(self.rewards) > 1 and max(self.rewards) - min(self.rewards) > FLAT_TOLERANCE

    def examples(self) -> list[ChatExample]:
        return [ChatExample(tuple(self.prompt + reply), len(self.prompt)) for reply in self.replies]


def group_advantages(rewards: Sequence[float]) -> torch.Tensor:
    """(reward - group mean) / (group std + 1e-4) for each reply of one group."""
    values = torch.tensor([float(r) for r in rewards], dtype=torch.float32)
    spread = values.std() if len(values) > 1 else torch.tensor(0.0)
    return (values - values.mean()) / (spread + ADVANTAGE_EPS)


def token_logprobs(model, examples: Sequence[ChatExample], pad_id: int, device, mode: LossMode = LossMode()
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of every reply token of `examples` (row-major, as collate's targets), under
    `model` as it is now (a PEFT model inside disable_adapter() gives the reference). mode: how the logits are
    computed (sft.exact_loss_mode); with share_prefix a group's common prompt runs once."""
    batch = collate(examples, pad_id).to(device)
    if mode.head_only:
        base = base_model(model)
        hidden, offset = hidden_states(base, batch, mode.share_prefix)
        logits = base.get_output_embeddings()(hidden[batch.answer_positions[:, offset:]])
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        logits = logits[batch.answer_positions]
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, batch.targets[:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


@dataclass
class StepStats:
    """Sums over the tokens a step trained on (divide by `tokens` for means)."""

    tokens: int = 0
    loss: float = 0.0
    policy_loss: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0

    def means(self) -> dict[str, float | None]:
        if not self.tokens:
            return {"loss": 0.0, "policy_loss": 0.0, "kl": None, "entropy": None}
        return {"loss": self.loss / self.tokens, "policy_loss": self.policy_loss / self.tokens,
                "kl": self.kl / self.tokens, "entropy": self.entropy / self.tokens}


def backward_groups(policy, groups: Sequence[ReplyGroup], *, kl_coef: float, entropy_coef: float, pad_id: int,
                    device, autocast: Callable, micro_batch_size: int, mode: LossMode = LossMode()) -> StepStats:
    """Accumulate the gradient of the GRPO loss over `groups` (each in forward passes of at most
    micro_batch_size replies); the loss is normalized by the trained tokens of all groups together, so the split
    into passes does not change it. kl_coef 0 skips the reference pass (kl is then not measured)."""
    stats = StepStats(tokens=sum(len(reply) for group in groups for reply in group.replies))
    for group in groups:
        advantages = group_advantages(group.rewards)
        examples = group.examples()
        for start in range(0, len(examples), micro_batch_size):
            chunk = examples[start:start + micro_batch_size]
            lengths = torch.tensor([example.answer_length for example in chunk])
            per_token = torch.repeat_interleave(advantages[start:start + len(chunk)], lengths).to(device)
            reference = None
            if kl_coef:
                with torch.no_grad(), policy.disable_adapter(), autocast():
                    reference, _ = token_logprobs(policy, chunk, pad_id, device, mode)
            with autocast():
                logp, entropy = token_logprobs(policy, chunk, pad_id, device, mode)
            policy_term = -torch.exp(logp - logp.detach()) * per_token
            loss = policy_term - entropy_coef * entropy
            if reference is not None:
                gap = reference - logp
                kl = torch.exp(gap) - gap - 1
                loss = loss + kl_coef * kl
                stats.kl += float(kl.detach().sum())
            (loss.sum() / stats.tokens).backward()
            stats.loss += float(loss.detach().sum())
            stats.policy_loss += float(policy_term.detach().sum())
            stats.entropy += float(entropy.detach().sum())
    return stats


def sampled_stats(groups: Sequence[ReplyGroup]) -> dict[str, float]:
    """Reward and reply statistics over every sampled group of a step (trained or not)."""
    rewards = [r for group in groups for r in group.rewards]
    lengths = [len(reply) for group in groups for reply in group.replies]
    clipped = [c for group in groups for c in group.clipped]
    row = {
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "reward_positive_share": sum(r > 0 for r in rewards) / len(rewards),
        "frac_zero_variance_groups": sum(not group.learnable for group in groups) / len(groups),
        "completion_length": statistics.fmean(lengths),
        "clipped_ratio": sum(clipped) / len(clipped),
    }
    names = sorted({name for group in groups for metrics in group.metrics for name in metrics})
    for name in names:
        values = [m[name] for group in groups for m in group.metrics if name in m and not math.isnan(m[name])]
        if values:
            row[f"reward/{name}"] = statistics.fmean(values)
    return row

"""The GRPO step of the RFT job, written for short replies to long prompts (label tasks) on a CPU.

A library GRPO trainer (TRL's) repeats each prompt once per reply, in sampling, in the reference pass and in the
policy pass; here a prompt group's replies are sampled from one prompt pass, and scored with the prompt's keys and
values computed once and repeated (`nbtoolkit.training.sft.hidden_states`). On 2 CPU cores that made a step of 8
replies 3.5x faster (benchmarks/grpo_step.py).

The loss is the on-policy GRPO objective (one update per batch of samples, so the importance ratio is 1 and only its
gradient remains): per completion token, -advantage x ratio + kl_loss_coef x k3-KL to the reference (the starting
model: the adapters switched off) - ent_coeff x the token's entropy, summed over the step's trained tokens and
divided by their number. Advantages are group-normalized: (reward - group mean) / (group std + 1e-4).

For label tasks the replies need not be sampled: `backward_label_groups` makes every label one reply of the group,
weighted by its probability under the policy (renormalized over the label set), which is the expectation the
sampled group estimates. Every prompt then contributes, weighted by how undecided the policy is on it (about
sqrt(p (1 - p)) for a right/wrong reward), and none of the step's time goes to sampling.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from nbtoolkit.generation import MIN_SHARED_PREFIX
from nbtoolkit.generation import shared_prefix_length as token_prefix_length
from nbtoolkit.training.sft import ChatExample, LossMode, base_model, collate, hidden_states, shared_head_cache

ADVANTAGE_EPS = 1e-4
FLAT_TOLERANCE = 1e-6  # rewards closer than this count as equal: the group has no advantage anywhere
# A label group whose likeliest reply has at least this probability counts as decided (a sampled group of 4 would
# nearly always be flat): its share is reported as frac_zero_variance_groups.
DECIDED_PROBABILITY = 0.99


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
    return _chosen_and_entropy(logits, batch.targets)


def _chosen_and_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token and the entropy of its position's distribution."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@dataclass
class StepStats:
    """Sums over the tokens a step trained on (divide by `tokens` for means)."""

    tokens: int = 0
    loss: float = 0.0
    policy_loss: float = 0.0
    kl: float | None = None  # None: not measured (no reference pass when kl_loss_coef is 0)
    entropy: float = 0.0

    def add(self, terms: dict[str, torch.Tensor], weights: torch.Tensor) -> None:
        """Add the weighted sums of a pass's per-token terms (_token_terms)."""
        for name in ("loss", "policy_loss", "kl", "entropy"):
            if name in terms:
                setattr(self, name, (getattr(self, name) or 0.0) + float((weights * terms[name]).detach().sum()))

    def means(self) -> dict[str, float | None]:
        if not self.tokens:
            return {"loss": 0.0, "policy_loss": 0.0, "kl": None, "entropy": None}
        return {"loss": self.loss / self.tokens, "policy_loss": self.policy_loss / self.tokens,
                "kl": None if self.kl is None else self.kl / self.tokens, "entropy": self.entropy / self.tokens}


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
            logp, entropy, reference = _policy_and_reference(
                policy, lambda: token_logprobs(policy, chunk, pad_id, device, mode), kl_coef, autocast)
            terms = _token_terms(logp, entropy, reference, per_token, kl_coef=kl_coef, entropy_coef=entropy_coef)
            (terms["loss"].sum() / stats.tokens).backward()
            stats.add(terms, torch.ones_like(logp))
    return stats


def _policy_and_reference(policy, score: Callable, kl_coef: float, autocast: Callable):
    """(log-probs, entropies, reference log-probs or None) of score() under the policy, and under the reference
    (the adapters switched off, no gradient) when kl_coef is set."""
    reference = None
    if kl_coef:
        with torch.no_grad(), policy.disable_adapter(), autocast():
            reference, _ = score()
    with autocast():
        logp, entropy = score()
    return logp, entropy, reference


def _token_terms(logp: torch.Tensor, entropy: torch.Tensor, reference: torch.Tensor | None,
                 advantages: torch.Tensor, *, kl_coef: float, entropy_coef: float) -> dict[str, torch.Tensor]:
    """GRPO's per-token loss and its parts: -advantage x ratio (1 on policy; its gradient is advantage x the
    log-prob's), the k3 KL to the reference when there is one, minus the entropy bonus."""
    terms = {"policy_loss": -torch.exp(logp - logp.detach()) * advantages, "entropy": entropy}
    terms["loss"] = terms["policy_loss"] - entropy_coef * entropy
    if reference is not None:
        gap = reference - logp
        terms["kl"] = torch.exp(gap) - gap - 1
        terms["loss"] = terms["loss"] + kl_coef * terms["kl"]
    return terms


def label_logprobs(model, groups: Sequence[ReplyGroup], pad_id: int, device, mode: LossMode = LossMode()
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """token_logprobs of every reply of every group, in the order group, reply, token; the groups' replies are the
    same label continuations. With mode.head_only and share_prefix all groups run as one batch: the prompts' common
    head once, then one row per prompt holding its own tokens followed by every label, each label attending to the
    prompt and to itself only (a 4-D mask), so the prompt is neither repeated nor recomputed per label."""
    replies = groups[0].replies
    prompts = [group.prompt for group in groups]
    head = token_prefix_length(prompts) if len(prompts) > 1 else len(prompts[0]) - 1
    if not (mode.head_only and mode.share_prefix) or head < MIN_SHARED_PREFIX:
        parts = [token_logprobs(model, group.examples(), pad_id, device, mode) for group in groups]
        return torch.cat([logp for logp, _ in parts]), torch.cat([entropy for _, entropy in parts])
    base = base_model(model)
    decoder = base.get_decoder()
    count = len(prompts)
    own = [len(prompt) - head for prompt in prompts]
    width = max(own)
    starts = [width + sum(len(reply) for reply in replies[:k]) for k in range(len(replies))]
    length = starts[-1] + len(replies[-1])
    ids = torch.full((count, length), pad_id, dtype=torch.long)
    positions = torch.zeros((count, length), dtype=torch.long)
    allowed = torch.zeros((count, length, head + length), dtype=torch.bool)
    allowed[:, :, :head] = True
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for i, prompt in enumerate(prompts):
        n = own[i]
        ids[i, :n] = torch.tensor(prompt[head:])
        positions[i, :width] = head + torch.arange(width)
        allowed[i, :width, head:head + n] = causal[:, :n]
        allowed[i, n:width, :head] = False
        allowed[i, n:width, head + n:head + width] = torch.eye(width - n, dtype=torch.bool)  # padding sees itself
        for start, reply in zip(starts, replies):
            span = slice(start, start + len(reply))
            ids[i, span] = torch.tensor(reply)
            positions[i, span] = len(prompt) + torch.arange(len(reply))
            allowed[i, span, head:head + n] = True
            allowed[i, span, head + start:head + start + len(reply)] = torch.ones(len(reply), len(reply),
                                                                                 dtype=torch.bool).tril()
    cache = shared_head_cache(base, torch.tensor([prompts[0][:head]], device=device), count)
    hidden = decoder(input_ids=ids.to(device), attention_mask=allowed[:, None].to(device),
                     position_ids=positions.to(device), past_key_values=cache, use_cache=True).last_hidden_state
    # The hidden state predicting reply token j: the prompt's last for j = 0, the reply's token j - 1 after that.
    rows = [torch.cat([hidden[i, own[i] - 1:own[i]], hidden[i, start:start + len(reply) - 1]])
            for i in range(count) for start, reply in zip(starts, replies)]
    targets = torch.tensor([token for _ in range(count) for reply in replies for token in reply], device=device)
    return _chosen_and_entropy(base.get_output_embeddings()(torch.cat(rows)), targets)


def backward_label_groups(policy, groups: Sequence[ReplyGroup], *, kl_coef: float, entropy_coef: float, pad_id: int,
                          device, autocast: Callable, prompts_per_pass: int, mode: LossMode = LossMode()
                          ) -> tuple[StepStats, dict]:
    """Accumulate the gradient of the GRPO loss in expectation over each group's replies, where every group's
    replies are the same label continuations (ReplyGroup.rewards: each label's reward for that prompt), in forward
    passes of at most prompts_per_pass groups.

    Per group: q = the policy's probabilities of the replies renormalized over them, the advantages are the
    q-weighted group-normalized rewards, and the loss is GRPO's per-token loss with each reply's tokens weighted
    by q, divided by the q-weighted reply length. The step's loss is the mean over groups. Returns the summed
    statistics and the step's reward row (expected reward, its spread, the share of decided groups)."""
    total, labels = len(groups), len(groups[0].replies)
    sizes = torch.tensor([len(reply) for reply in groups[0].replies], device=device)
    stats = StepStats(tokens=total * int(sizes.sum()))
    means, spreads, probabilities, lengths = [], [], [], []
    for first in range(0, total, prompts_per_pass):
        chunk = groups[first:first + prompts_per_pass]
        count = len(chunk)
        rewards = torch.tensor([group.rewards for group in chunk], dtype=torch.float32, device=device)
        reply_of_token = torch.arange(count * labels, device=device).repeat_interleave(sizes.repeat(count))
        logp, entropy, reference = _policy_and_reference(
            policy, lambda: label_logprobs(policy, chunk, pad_id, device, mode), kl_coef, autocast)
        sequence = torch.zeros(count * labels, device=device).index_add(0, reply_of_token, logp.float())
        with torch.no_grad():
            q = torch.softmax(sequence.view(count, labels), dim=1)
            mean = (q * rewards).sum(1, keepdim=True)
            spread = (q * (rewards - mean) ** 2).sum(1, keepdim=True).sqrt()
            advantages = ((rewards - mean) / (spread + ADVANTAGE_EPS)).flatten()[reply_of_token]
            length = (q * sizes).sum(1)
            # each token's weight: its reply's probability / (its group's q-weighted length x number of groups)
            weights = (q.flatten() / (length.repeat_interleave(labels) * total))[reply_of_token]
        terms = _token_terms(logp, entropy, reference, advantages, kl_coef=kl_coef, entropy_coef=entropy_coef)
        (weights * terms["loss"]).sum().backward()
        # Scaled so that StepStats.means() gives the mean over groups of the q-weighted per-token values.
        stats.add(terms, weights * stats.tokens)
        means.append(mean.flatten())
        spreads.append(spread.flatten())
        probabilities.append(torch.stack([(q * (rewards > 0)).sum(1), q.max(1).values], dim=1))
        lengths.append(length)
    positive, likeliest = torch.cat(probabilities).unbind(1)
    row = {"reward_mean": float(torch.cat(means).mean()), "reward_std": float(torch.cat(spreads).mean()),
           "reward_positive_share": float(positive.mean()),
           "frac_zero_variance_groups": float((likeliest >= DECIDED_PROBABILITY).float().mean()),
           "completion_length": float(torch.cat(lengths).mean()), "clipped_ratio": 0.0}
    return stats, row


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

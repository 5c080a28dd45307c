"""Reinforcement fine-tuning (GRPO with LoRA) of a local model.

`run_rft` starts from a full model directory (usually an SFT run's `model/`), first measures whether the starting
model earns any reward (under ~5% positive means "do SFT first", docs/hyperparameters.md), then trains LoRA adapters
with GRPO (the step is nbtoolkit.training.grpo). It writes metrics.jsonl rows and the warning signs of a failing run
(reward collapse, KL blow-up, replies hitting max_new_tokens) through RunLog, checkpoints for resume
(nbtoolkit.training.checkpoints), and ends with `adapter/` and a merged `model/`.

How the hyperparameters act:
- Batching. A step trains global_batch_size completions: global_batch_size / number_generation prompts, each
  sampled number_generation times, scored in forward passes of at most micro_batch_size replies of one prompt.
- Dynamic sampling (dynamic_sampling > 0, DAPO's). A step samples replies to its prompts from the current policy
  and keeps the groups whose rewards differ; while it has fewer than it needs, it samples the next prompts of the
  stream, up to dynamic_sampling prompts in all, and trains on the groups it found. A group whose replies all earn
  the same reward has zero advantage and would only add KL and entropy terms. With dynamic_sampling 0 every drawn
  group is trained on.
- label_groups (label tasks): nothing is sampled; a prompt's group is every label, weighted by its probability
  under the policy (grpo.backward_label_groups), so every drawn prompt is trained on and dynamic_sampling is unused;
  a forward pass scores micro_batch_size prompts on every label.
- kl_loss_coef: weight of the k3 KL estimate to the starting model (the adapters switched off); 0 skips that pass.
- ent_coeff: the loss minus ent_coeff x the mean entropy of the reply tokens.
- max_prompt_tokens cuts user turns before templating; sampling stops at the chat template's answer terminator.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nbtoolkit.data.formats import read_jsonl
from nbtoolkit.generation import (
    MIN_SHARED_PREFIX,
    encode_prompts,
    generate_replies,
    prefix_cache,
    sample_continuations,
    sample_groups,
    shared_prefix_length,
    truncate_user_turns,
)
from nbtoolkit.models import LoadedModel, answer_terminator, answer_terminator_ids, label_continuations, load_model
from nbtoolkit.models.threads import CoreShare
from nbtoolkit.rewards import get_reward, positive_reward_share
from nbtoolkit.runtime.events import (
    METRICS_FILE,
    RunLog,
    drop_metrics_after,
    peak_rss_mb,
    read_metrics,
    write_json_atomic,
)
from nbtoolkit.training.checkpoints import (
    TrainingProgress,
    export_model,
    latest_checkpoint,
    load_checkpoint,
    remove_leftovers,
    save_checkpoint,
)
from nbtoolkit.training.config import RFTLoraConfig
from nbtoolkit.training.grpo import (
    DECIDED_PROBABILITY,
    ReplyGroup,
    backward_groups,
    backward_label_groups,
    sampled_stats,
)
from nbtoolkit.training.sft import MAX_GRAD_NORM, ChatExample, exact_loss_mode, lr_factor, make_optimizer

CHECKPOINTS_DIR = "checkpoints"
PRECHECK_FILE = "precheck.json"

# Before training: prompts sampled from the training file, number_generation replies each.
PRECHECK_PROMPTS = 16
POSITIVE_SHARE_LOW = 0.05   # below: the model almost never earns reward; GRPO has nothing to reinforce
POSITIVE_SHARE_HIGH = 0.95  # above: nearly every reply already earns reward; GRPO has no signal
# Held-out reward before and after training (greedy), on the first prompts of eval_file.
EVAL_PROMPTS = 32

# Warning signs during training (TrainingHealth).
COLLAPSE_WINDOW = 3         # logged rows averaged at the start and at the end
COLLAPSE_DROP = 0.5         # reward units (a quarter of the +1/-1 label reward's range)
ZERO_VARIANCE_ROWS = 3      # consecutive rows where every group's rewards are equal
KL_FACTOR = 10.0            # kl above KL_FACTOR x the first logged kl ...
KL_FLOOR = 1.0              # ... and above this absolute value
CLIPPED_SHARE = 0.5         # share of replies that hit max_new_tokens

RewardFn = Callable[[list[dict]], list[dict]]


# ---------------------------------------------------------------------------------------------------------------
# Data


def load_rft_records(path: str | os.PathLike, *, tokenizer=None, max_prompt_tokens: int | None = None) -> list[dict]:
    """Prompts of an "rft" or "chat" JSONL file as {"id", "messages", "reference_answer"}.

    "rft" records hold system + user messages and `reference_answer`; "chat" records end with the assistant's
    answer, which becomes the reference. With a tokenizer, user turns are cut to max_prompt_tokens tokens.
    A missing id becomes "row-<line>"; a non-string reference is JSON-encoded (rewards compare strings).
    """
    records = []
    for number, record in enumerate(read_jsonl(path), start=1):
        where = f"{path} record {number}"
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: needs a non-empty 'messages' list (an rft or chat record)")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if "reference_answer" in record:
            reference = record["reference_answer"]
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
        elif messages[-1]["role"] == "assistant":
            reference, messages = messages[-1]["content"], messages[:-1]
        else:
            raise ValueError(f"{where}: no 'reference_answer' and the last message is not an assistant answer")
        if not isinstance(reference, str):
            reference = json.dumps(reference, ensure_ascii=False)
        if not reference.strip():
            raise ValueError(f"{where}: the reference answer is blank")
        if not any(m["role"] == "user" and str(m["content"]).strip() for m in messages):
            raise ValueError(f"{where}: no user message to answer")
        if tokenizer is not None and max_prompt_tokens:
            messages = truncate_user_turns(messages, tokenizer, max_prompt_tokens)
        record_id = record.get("id")
        records.append({"id": f"row-{number}" if record_id is None else str(record_id), "messages": messages,
                        "reference_answer": reference})
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def _samples(record: dict, replies: Sequence[str]) -> list[dict]:
    """Reward-contract samples (docs/metrics.md) of one prompt's replies."""
    return [{"id": f"{record['id']}#{k}" if len(replies) > 1 else record["id"],
             "messages": [*record["messages"], {"role": "assistant", "content": reply}],
             "reference_answer": record["reference_answer"]} for k, reply in enumerate(replies)]



def _scored(reward_fn: RewardFn, samples: list[dict]) -> tuple[list[float], list[dict[str, float]]]:
    """aggregate_reward_score and the "Metric" entries of metrics_list per sample, matched by id (the contract does
    not promise the order)."""
    by_id = {out["id"]: out for out in reward_fn(samples)}
    outputs = [by_id[s["id"]] for s in samples]
    metrics = [{m["name"]: float(m["value"]) for m in out.get("metrics_list") or [] if m.get("type") == "Metric"}
               for out in outputs]
    return [float(out["aggregate_reward_score"]) for out in outputs], metrics


def _scores(reward_fn: RewardFn, samples: list[dict]) -> list[float]:
    """aggregate_reward_score per sample, matched by id."""
    return _scored(reward_fn, samples)[0]


# ---------------------------------------------------------------------------------------------------------------
# Rewards


def build_reward(name: str, labels: Sequence[str]) -> RewardFn:
    """The reward-contract function registered as `name` in nbtoolkit.rewards.REWARDS, built for `labels`."""
    return get_reward(name, list(labels))


def frac_zero_variance_groups(rewards: Sequence[float | None], group_size: int, *, tolerance: float = 1e-6) -> float:
    """Share of prompt groups (consecutive runs of group_size rewards) whose rewards are all equal.

    Such a group has zero advantage everywhere, so it gives GRPO no gradient. None/NaN rewards are ignored; a
    group with fewer than two valid rewards counts as zero-variance.
    """
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    groups = [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]
    if not groups:
        return float("nan")
    flat = 0
    for group in groups:
        valid = [float(r) for r in group if r is not None and not math.isnan(float(r))]
        if len(valid) < 2 or max(valid) - min(valid) <= tolerance:
            flat += 1
    return flat / len(groups)


# ---------------------------------------------------------------------------------------------------------------
# Batching


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is made of completions, prompts and forward passes."""

    completions_per_step: int
    prompts_per_step: int
    generations_per_prompt: int
    micro_batch_size: int
    gradient_accumulation_steps: int


def batch_plan(config: RFTLoraConfig) -> BatchPlan:
    """global_batch_size completions per step = global_batch_size / number_generation prompts; a forward pass
    scores at most micro_batch_size replies of one prompt (its prompt computed once), so a micro batch above the
    group size is the group."""
    total, group = config.global_batch_size, config.number_generation
    if total % group:
        raise ValueError(f"global_batch_size ({total}) must be a multiple of number_generation ({group}): "
                         "each step scores whole groups of replies to a prompt")
    prompts = total // group
    if config.label_groups:  # a forward pass scores micro_batch_size prompts on every label
        micro = min(config.micro_batch_size, prompts)
        return BatchPlan(total, prompts, group, micro, math.ceil(prompts / micro))
    micro = min(config.micro_batch_size, group)
    return BatchPlan(total, prompts, group, micro, prompts * math.ceil(group / micro))


# ---------------------------------------------------------------------------------------------------------------
# Before training: does the starting model ever earn reward?


def _stop_ids(tokenizer) -> list[int]:
    """Token ids that end a reply: the chat template's answer terminator (when it is one token) and eos."""
    terminator = answer_terminator_ids(tokenizer)
    return list(dict.fromkeys([*(terminator if len(terminator) == 1 else []), tokenizer.eos_token_id]))


def positive_share_precheck(loaded: LoadedModel, records: Sequence[dict], reward_fn: RewardFn,
                            config: RFTLoraConfig, *, n_prompts: int = PRECHECK_PROMPTS) -> dict:
    """Reward of the starting model on a sample of training prompts, number_generation sampled replies each.

    positive_share is nbtoolkit.rewards.positive_reward_share: the share of prompts where some reply earns
    reward > 0. Also: the share of replies with reward > 0, and the share of prompt groups whose rewards differ
    (the only ones GRPO learns from). Warnings: under 5% of prompts or of replies positive means do SFT first
    (docs/hyperparameters.md); nearly every reply positive means no signal; most replies hitting max_new_tokens
    means cut answers.
    """
    started = time.perf_counter()
    chosen = random.Random(config.seed).sample(list(records), min(n_prompts, len(records)))
    n = config.number_generation
    replies = sample_groups(loaded, [r["messages"] for r in chosen], n=n, temperature=config.temperature,
                            top_k=config.top_k, max_new_tokens=config.max_new_tokens, seed=config.seed)
    samples = [s for record, group in zip(chosen, replies) for s in _samples(record, [text for text, _ in group])]
    share = float(positive_reward_share(reward_fn, samples))
    scores = _scores(reward_fn, samples)
    result = {
        "prompts": len(chosen),
        "samples_per_prompt": n,
        "positive_share": share,
        "reply_positive_share": sum(s > 0 for s in scores) / len(scores),
        "learnable_group_share": 1.0 - frac_zero_variance_groups(scores, n),
        "reward_mean": statistics.fmean(scores),
        "hit_max_new_tokens_share": sum(hit for group in replies for _, hit in group) / len(samples),
        "examples": [{"reference_answer": r["reference_answer"], "reply": group[0][0]}
                     for r, group in zip(chosen[:3], replies)],
        "seconds": round(time.perf_counter() - started, 2),
        "warnings": [],
    }
    # Prompt-level share is the published measure; with sampled replies one lucky prompt in 16 passes it, so the
    # reply-level share (how often a group holds a positive reply at all) must clear the bar too.
    if share < POSITIVE_SHARE_LOW or result["reply_positive_share"] < POSITIVE_SHARE_LOW:
        result["warnings"].append(
            f"the starting model earns a positive reward on only {share:.1%} of sampled prompts and "
            f"{result['reply_positive_share']:.1%} of replies ({n} per prompt; under {POSITIVE_SHARE_LOW:.0%}): "
            "RFT has almost nothing to reinforce. Do SFT first and start RFT from the SFT model")
    elif result["reply_positive_share"] > POSITIVE_SHARE_HIGH:
        result["warnings"].append(
            f"the starting model already earns a positive reward on {result['reply_positive_share']:.1%} of sampled "
            "replies: nearly every group scores the same, so RFT has little signal. Use harder prompts or skip RFT")
    if result["hit_max_new_tokens_share"] > CLIPPED_SHARE:
        result["warnings"].append(
            f"{result['hit_max_new_tokens_share']:.0%} of the starting model's replies hit max_new_tokens "
            f"({config.max_new_tokens}) before the answer terminator: raise max_new_tokens, or SFT the answer format")
    return result


def held_out_reward(loaded: LoadedModel, records: Sequence[dict], reward_fn: RewardFn, *, max_new_tokens: int,
                    max_prompts: int = EVAL_PROMPTS) -> dict:
    """Mean reward and positive share of greedy replies to the first max_prompts records."""
    chosen = list(records)[:max_prompts]
    replies = generate_replies(loaded, [r["messages"] for r in chosen], max_new_tokens=max_new_tokens,
                               max_prompt_tokens=None, progress=False)
    scores = _scores(reward_fn, [s for r, g in zip(chosen, replies) for s in _samples(r, [g.text])])
    return {"prompts": len(chosen), "reward_mean": statistics.fmean(scores),
            "positive_share": sum(s > 0 for s in scores) / len(scores)}


# ---------------------------------------------------------------------------------------------------------------
# During training: warning signs


class TrainingHealth:
    """Watches metrics rows for the warning signs of a failing RFT run (docs/case-study.md); each kind is reported
    once, with its step."""

    def __init__(self) -> None:
        self.rewards: list[float] = []
        self.first_kl: float | None = None
        self.flat_rows = 0
        self.raised: dict[str, str] = {}

    def update(self, row: dict) -> list[str]:
        """New warning messages caused by this row."""
        step, found = row.get("step"), {}
        reward = row.get("reward_mean")
        if reward is not None:
            self.rewards.append(reward)
            if len(self.rewards) >= 2 * COLLAPSE_WINDOW:
                start = statistics.fmean(self.rewards[:COLLAPSE_WINDOW])
                now = statistics.fmean(self.rewards[-COLLAPSE_WINDOW:])
                if now < start - COLLAPSE_DROP:
                    found["reward_collapse"] = (
                        f"reward collapse at step {step}: mean reward of the last {COLLAPSE_WINDOW} logs {now:.3f} "
                        f"is far below the first {COLLAPSE_WINDOW} ({start:.3f}); lower lr or raise kl_loss_coef")
        flat = row.get("frac_zero_variance_groups")
        if flat is None and row.get("reward_std") is not None:
            flat = 1.0 if row["reward_std"] < 1e-6 else 0.0
        self.flat_rows = self.flat_rows + 1 if flat is not None and flat >= 1.0 - 1e-9 else 0
        if self.flat_rows >= ZERO_VARIANCE_ROWS:
            found["no_reward_variance"] = (
                f"no reward variance for {self.flat_rows} logged steps (step {step}): every prompt's replies score "
                "the same, so GRPO gets no gradient; the policy may have collapsed, or the task is too easy or too "
                "hard for the model (check temperature and the precheck)")
        kl = row.get("kl")
        if kl is not None:
            if self.first_kl is None:
                self.first_kl = kl
            elif kl > KL_FLOOR and kl > KL_FACTOR * self.first_kl:
                found["kl_blowup"] = (
                    f"KL blow-up at step {step}: kl {kl:.3f} is over {KL_FACTOR:g}x its first value "
                    f"({self.first_kl:.3g}) and above {KL_FLOOR:g}; the policy drifts from the starting model. "
                    "Lower lr or raise kl_loss_coef")
        clipped = row.get("clipped_ratio")
        if clipped is not None and clipped > CLIPPED_SHARE:
            found["max_new_tokens"] = (
                f"{clipped:.0%} of replies hit max_new_tokens at step {step}: they are cut before the answer "
                "terminator; raise max_new_tokens or check that the model learned the answer format (SFT)")
        new = {kind: message for kind, message in found.items() if kind not in self.raised}
        self.raised.update(new)
        return list(new.values())




# ---------------------------------------------------------------------------------------------------------------
# The run


def run_rft(
    config: RFTLoraConfig,
    *,
    model: str | os.PathLike,
    train_file: str | os.PathLike,
    run_dir: str | os.PathLike,
    labels: Sequence[str],
    reward_fn: RewardFn | None = None,
    eval_file: str | os.PathLike | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    stop_event=None,
    precheck_prompts: int = PRECHECK_PROMPTS,
) -> dict:
    """GRPO with LoRA from `model` (a full model directory or name) on the prompts of train_file.

    reward_fn follows the reward contract (docs/metrics.md); without it config.reward is looked up in
    nbtoolkit.rewards.REWARDS and built for `labels`. stop_event (anything with is_set()) stops after the current
    step with a checkpoint; resume=True continues from the newest checkpoint in run_dir/checkpoints. Returns a
    JSON-ready summary; the merged model lands in run_dir/model (load it with load_model), the adapter in
    run_dir/adapter. precheck_prompts: how many training prompts the positive-share precheck samples.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    run_started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or RunLog(run_dir)
    warnings: list[str] = []

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    plan = batch_plan(config)
    if config.label_groups and not labels:
        raise ValueError("label_groups=True needs the task's label set (labels), and this task has none")
    remove_leftovers(run_dir)
    if (run_dir / CHECKPOINTS_DIR).is_dir():
        remove_leftovers(run_dir / CHECKPOINTS_DIR)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise ValueError(f"{run_dir / CHECKPOINTS_DIR} already holds checkpoints ({checkpoint.name}) of an earlier "
                         "run: pass resume=True to continue it, or choose a new run directory")
    if resume and checkpoint is None:
        warn(f"resume=True but {run_dir / CHECKPOINTS_DIR} holds no checkpoint: starting at step 0")
    if config.reasoning_effort is not None:
        warn(f"reasoning_effort={config.reasoning_effort!r} applies to Nova models only; ignored here")
    reward_name = getattr(reward_fn, "__name__", "custom") if reward_fn is not None else config.reward
    reward_fn = reward_fn or build_reward(config.reward, labels)

    loaded = load_model(model)
    tokenizer, device = loaded.tokenizer, loaded.plan.device
    if len(answer_terminator_ids(tokenizer)) != 1:
        warn(f"the answer terminator {answer_terminator(tokenizer)!r} is several tokens; generation can only stop "
             "at single tokens, so it stops at the tokenizer's eos token instead")
    stop = _stop_ids(tokenizer)

    records = load_rft_records(train_file, tokenizer=tokenizer, max_prompt_tokens=config.max_prompt_tokens)
    if len(records) < plan.prompts_per_step:
        raise ValueError(f"{train_file} has {len(records)} prompts; one step needs {plan.prompts_per_step} "
                         f"(global_batch_size {config.global_batch_size} / number_generation "
                         f"{config.number_generation})")
    prompt_tokens = [len(ids) for ids in encode_prompts(tokenizer, [r["messages"] for r in records], None)]
    if max(prompt_tokens) + config.max_new_tokens > config.max_length:
        longer = sum(n + config.max_new_tokens > config.max_length for n in prompt_tokens)
        warn(f"{longer} prompts plus max_new_tokens exceed max_length {config.max_length} tokens (longest prompt "
             f"{max(prompt_tokens)}); lower max_prompt_tokens if memory or time is short")
    if config.label_groups:
        batching = (f"{plan.prompts_per_step} prompts per step, each scored on all {len(labels)} labels "
                    f"({plan.gradient_accumulation_steps} forward passes of up to {plan.micro_batch_size} prompts, "
                    "nothing sampled)")
    else:
        batching = (f"{plan.prompts_per_step} prompts x {plan.generations_per_prompt} replies = "
                    f"{plan.completions_per_step} completions per step, {plan.gradient_accumulation_steps} forward "
                    f"passes of up to {plan.micro_batch_size} replies")
    log.info(f"RFT (GRPO + LoRA r={config.lora_r}, alpha={config.alpha}) from {loaded.spec.name} on "
             f"{len(records)} prompts: {batching}, {config.max_steps} steps; reward {reward_name}; "
             f"device {device} {loaded.plan.weights_dtype} ({loaded.plan.reason})")

    eval_records = None
    if eval_file is not None:
        eval_records = load_rft_records(eval_file, tokenizer=tokenizer, max_prompt_tokens=config.max_prompt_tokens)

    # Checks of the starting model, kept in precheck.json so a resumed run reports the same numbers.
    precheck_path = run_dir / PRECHECK_FILE
    precheck_read = resume and checkpoint is not None and precheck_path.exists()
    if precheck_read:
        before = json.loads(precheck_path.read_text())
        log.info("resuming: positive-share precheck read from precheck.json")
    else:
        before = {"precheck": positive_share_precheck(loaded, records, reward_fn, config, n_prompts=precheck_prompts)}
        if eval_records is not None:
            before["eval"] = held_out_reward(loaded, eval_records, reward_fn, max_new_tokens=config.max_new_tokens)
        write_json_atomic(precheck_path, before)
        log.metric(step=0, phase="precheck", positive_share=before["precheck"]["positive_share"],
                   reply_positive_share=before["precheck"]["reply_positive_share"],
                   learnable_group_share=before["precheck"]["learnable_group_share"],
                   reward_mean=before["precheck"]["reward_mean"],
                   eval_reward_mean=before.get("eval", {}).get("reward_mean"))
    precheck = before["precheck"]
    log.info(f"precheck on {precheck['prompts']} prompts x {precheck['samples_per_prompt']} sampled replies: "
             f"{precheck['positive_share']:.1%} of prompts and {precheck['reply_positive_share']:.1%} of replies earn "
             f"a positive reward; {precheck['learnable_group_share']:.0%} of prompt groups have rewards that differ "
             f"(GRPO learns from those); mean reward {precheck['reward_mean']:.3f}")
    for message in precheck["warnings"]:
        warn(message)

    if stop_event is not None and stop_event.is_set():
        log.info("stop requested before training: nothing trained, no model written")
        return _summary(config, "stopped", TrainingProgress(), plan, reward_name, precheck, before, None, warnings,
                        run_dir, log, loaded, run_started, None, precheck_read=precheck_read)

    prompts = encode_prompts(tokenizer, [r["messages"] for r in records], None)

    torch.manual_seed(config.seed)  # LoRA initialisation, then the replies sampled during training
    policy = get_peft_model(loaded.model, LoraConfig(r=config.lora_r, lora_alpha=config.alpha, lora_dropout=0.0,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = make_optimizer(policy, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, config.max_steps))
    trainable = [p for p in policy.parameters() if p.requires_grad]
    mode = exact_loss_mode(policy, [ChatExample(tuple(p + [stop[0]]), len(p)) for p in prompts[:2]],
                           loaded.pad_token_id, device)
    progress = TrainingProgress(config=config.to_dict())
    if checkpoint is not None and resume:
        progress = load_checkpoint(checkpoint, policy, optimizer, scheduler, True, device)
        drop_metrics_after(run_dir, progress.step)
        log.info(f"resuming from {checkpoint.name}")
    first_step = progress.step
    stream = PromptStream(len(records), config.seed, position=progress.rows_seen)

    # Every prompt starts with the templated system prompt: sampling computes it once per step.
    shared = shared_prefix_length(prompts)
    shared = shared if shared >= MIN_SHARED_PREFIX else 0

    label_replies = label_continuations(tokenizer, labels) if config.label_groups else []
    label_rewards: dict[int, tuple[list[float], list[dict[str, float]]]] = {}

    def draw_label_groups() -> list[ReplyGroup]:
        """One step's prompts, each with every label as its group (rewards computed once per prompt)."""
        chosen = [stream.next() for _ in range(plan.prompts_per_step)]
        progress.rows_seen = stream.position
        for i in chosen:
            if i not in label_rewards:
                label_rewards[i] = _scored(reward_fn, _samples(records[i], list(labels)))
        return [ReplyGroup(records[i], list(prompts[i]), label_replies, [False] * len(label_replies),
                           *label_rewards[i]) for i in chosen]

    def draw_groups() -> tuple[list[ReplyGroup], list[ReplyGroup]]:
        """(groups sampled, groups to train on) for one step."""
        sampled, keep = [], []
        rounds = max(1, config.dynamic_sampling // plan.prompts_per_step) if config.dynamic_sampling else 1
        policy.eval()
        with torch.no_grad(), loaded.plan.autocast():
            head = prefix_cache(policy, prompts[0][:shared], device) if shared else None
        for _ in range(rounds):
            chosen = [stream.next() for _ in range(plan.prompts_per_step)]
            progress.rows_seen = stream.position
            groups = sample_reply_groups(policy, tokenizer, [records[i] for i in chosen],
                                         [prompts[i] for i in chosen], reward_fn, config, stop=stop,
                                         pad_id=loaded.pad_token_id, device=device, autocast=loaded.plan.autocast,
                                         head=head, head_length=shared)
            sampled += groups
            keep += [g for g in groups if g.learnable or not config.dynamic_sampling]
            if len(keep) >= plan.prompts_per_step:
                break
        return sampled, keep[:plan.prompts_per_step]

    health = TrainingHealth()
    if first_step:  # a resumed run: the warning signs see the whole run, and those raised before are not repeated
        for row in read_metrics(run_dir):
            if row.get("phase") == "train":
                warnings.extend(health.update(row))
    share = CoreShare.for_this_process()
    share.enabled = share.enabled and loaded.plan.device_type == "cpu"
    window: list[dict] = []
    status, saved_step = "completed", progress.step if checkpoint is not None and resume else None
    while progress.step < config.max_steps:
        share.update()
        if stop_event is not None and stop_event.is_set():
            status = "stopped"
            break
        started = time.perf_counter()
        if config.label_groups:
            sampled = trained = draw_label_groups()
        else:
            sampled, trained = draw_groups()
        sampling_seconds = time.perf_counter() - started
        policy.train()
        if config.label_groups:
            stats, rewards_row = backward_label_groups(
                policy, trained, kl_coef=config.kl_loss_coef, entropy_coef=config.ent_coeff,
                pad_id=loaded.pad_token_id, device=device, autocast=loaded.plan.autocast,
                prompts_per_pass=plan.micro_batch_size, mode=mode)
        else:
            stats = backward_groups(policy, trained, kl_coef=config.kl_loss_coef, entropy_coef=config.ent_coeff,
                                    pad_id=loaded.pad_token_id, device=device, autocast=loaded.plan.autocast,
                                    micro_batch_size=plan.micro_batch_size, mode=mode)
            rewards_row = sampled_stats(sampled)
        lr = optimizer.param_groups[0]["lr"]
        # A step without a learnable group has no gradients; the optimizer then skips every parameter.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)) if stats.tokens else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        progress.step += 1
        progress.tokens += stats.tokens
        progress.train_seconds += seconds
        progress.last_loss = stats.means()["loss"]
        window.append({**stats.means(), **rewards_row, "lr": lr, "grad_norm": grad_norm,
                       "sampled_groups": len(sampled), "trained_groups": len(trained),
                       "sampling_seconds": sampling_seconds, "seconds_per_step": seconds})
        step = progress.step
        if step % config.logging_steps == 0 or step == config.max_steps:
            row = {"step": step, "phase": "train", **_window_means(window), "threads": share.threads}
            window = []
            log.metric(**row)
            if config.label_groups:
                groups = (f"expected reward {row['reward_mean']:.3f}  undecided prompts (no label at "
                          f"{DECIDED_PROBABILITY:.0%}) {1 - row['frac_zero_variance_groups']:.0%} of "
                          f"{row['trained_groups']:.0f}")
            else:
                groups = (f"reward {row['reward_mean']:.3f}  groups with differing rewards "
                          f"{1 - row['frac_zero_variance_groups']:.0%} of {row['sampled_groups']:.0f} sampled, "
                          f"{row['trained_groups']:.0f} trained")
            log.info(f"step {step}/{config.max_steps}  {groups}  kl {_fmt(row.get('kl'))}  "
                     f"{row['seconds_per_step']:.1f} s/step")
            for message in health.update(row):
                warn(message)
        log.progress(step, config.max_steps)
        if step % config.save_steps == 0 and step < config.max_steps:
            save_checkpoint(run_dir, policy, optimizer, scheduler, progress, True)
            saved_step = step
    share.restore()
    steps_here = progress.step - first_step

    if status == "stopped":
        if progress.step > 0 and saved_step != progress.step:
            save_checkpoint(run_dir, policy, optimizer, scheduler, progress, True)
        log.info(f"stop requested at step {progress.step}: checkpoint saved; continue with resume=True")
        if progress.step == 0:
            return _summary(config, status, progress, plan, reward_name, precheck, before, None, warnings, run_dir,
                            log, loaded, run_started, None, precheck_read=precheck_read)
    else:
        save_checkpoint(run_dir, policy, optimizer, scheduler, progress, True)
    paths = export_model(policy, tokenizer, run_dir, True)
    model_dir, adapter_dir = Path(paths["model"]), Path(paths["adapter"])
    log.info(f"RFT {status} at step {progress.step}: adapter in {adapter_dir}, merged model in {model_dir}")

    after_eval = None
    if eval_records is not None:
        after_eval = held_out_reward(load_model(model_dir), eval_records, reward_fn,
                                     max_new_tokens=config.max_new_tokens)
        log.info(f"held-out reward on {after_eval['prompts']} eval prompts: "
                 f"{before.get('eval', {}).get('reward_mean', float('nan')):.3f} before, "
                 f"{after_eval['reward_mean']:.3f} after")
        log.metric(step=progress.step, phase="eval", eval_reward_mean=after_eval["reward_mean"],
                   eval_positive_share=after_eval["positive_share"])
    log.progress(progress.step, config.max_steps)

    summary = _summary(config, status, progress, plan, reward_name, precheck, before, after_eval, warnings, run_dir,
                       log, loaded, run_started, checkpoint if resume else None, precheck_read=precheck_read,
                       model_dir=model_dir, adapter_dir=adapter_dir)
    summary["seconds_per_step"] = round(progress.train_seconds / progress.step, 3) if steps_here else None
    return summary


class PromptStream:
    """Training prompts as an endless stream of per-epoch permutations, a function of (seed, position) only: a
    resumed run draws the same prompts."""

    def __init__(self, rows: int, seed: int, position: int = 0) -> None:
        self.rows, self.seed, self.position = rows, seed, position
        self._epoch: tuple[int, np.ndarray] | None = None

    def next(self) -> int:
        epoch, offset = divmod(self.position, self.rows)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.rows))
        self.position += 1
        return int(self._epoch[1][offset])


def sample_reply_groups(policy, tokenizer, records: Sequence[dict], prompts: Sequence[list[int]],
                        reward_fn: RewardFn, config: RFTLoraConfig, *, stop: Sequence[int], pad_id: int, device,
                        autocast: Callable, head=None, head_length: int = 0) -> list[ReplyGroup]:
    """number_generation sampled replies to each prompt, scored by reward_fn. Sampling draws from torch's global
    RNG, which checkpoints save and restore. A reply that stopped keeps the answer terminator (stop[0]) as its last
    token, so training also teaches where to stop. head: the keys and values of the first head_length tokens,
    which every prompt shares (generation.prefix_cache of the current policy)."""
    import torch

    policy.eval()
    with torch.no_grad(), autocast():
        replies = sample_continuations(policy, [list(p[head_length:]) for p in prompts], head, head_length,
                                       n=config.number_generation,
                                       temperature=config.temperature, top_k=config.top_k, stop=set(stop),
                                       max_new_tokens=config.max_new_tokens, device=device, pad_id=pad_id)
    n, groups = config.number_generation, []
    for k, (record, prompt) in enumerate(zip(records, prompts)):
        own = replies[k * n:(k + 1) * n]
        texts = [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens, _ in own]
        rewards, metrics = _scored(reward_fn, _samples(record, texts))
        groups.append(ReplyGroup(record, list(prompt), [tokens + [stop[0]] if stopped else tokens
                                                        for tokens, stopped in own],
                                 [not stopped for _, stopped in own], rewards, metrics))
    return groups


def _window_means(rows: list[dict]) -> dict[str, float | None]:
    """Each key's mean over the rows where it has a value (None when it has none)."""
    keys = dict.fromkeys(key for row in rows for key in row)
    means = {}
    for key in keys:
        values = [row[key] for row in rows if row.get(key) is not None]
        means[key] = statistics.fmean(values) if values else None
    return means


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary(config: RFTLoraConfig, status: str, progress: TrainingProgress, plan: BatchPlan, reward_name: str,
             precheck: dict, before: dict, after_eval: dict | None, warnings: list[str], run_dir: Path, log: RunLog,
             loaded: LoadedModel, run_started: float, checkpoint: Path | None, *, precheck_read: bool = False,
             model_dir: Path | None = None, adapter_dir: Path | None = None) -> dict:
    """The JSON-ready result of run_rft; reward and kl come from every train row of metrics.jsonl, so a resumed
    run reports the first reward of the whole run. precheck_read: the precheck came from precheck.json (a resumed
    run), so this run sampled nothing for it."""
    logged = read_metrics(log.run_dir)
    by_step = {row["step"]: row for row in logged if row.get("phase") == "train"}
    rows = [by_step[step] for step in sorted(by_step)]
    rewards = [row["reward_mean"] for row in rows if row.get("reward_mean") is not None]
    kls = [row["kl"] for row in rows if row.get("kl") is not None]
    precheck_run = {"prompts": 0, "seconds": 0.0} if precheck_read else precheck
    return {
        "method": config.METHOD,
        "status": status,
        "steps": progress.step,
        "max_steps": config.max_steps,
        "prompts_drawn": progress.rows_seen,
        "trained_tokens": progress.tokens,
        "resumed_from": checkpoint.name if checkpoint is not None else None,
        "reward": reward_name,
        "reward_mean_first": rewards[0] if rewards else None,
        "reward_mean_last": rewards[-1] if rewards else None,
        "kl_last": kls[-1] if kls else None,
        "positive_share_before": precheck["positive_share"],
        "precheck": precheck,
        "eval_reward_before": before.get("eval"),
        "eval_reward_after": after_eval,
        "batch": asdict(plan),
        "entropy_bonus": {"ent_coeff": config.ent_coeff, "applied_as": "loss - ent_coeff x mean reply-token entropy"},
        # Replies sampled before training (the precheck), timed apart from the GRPO steps.
        "sampled_prompts": precheck_run["prompts"],
        "sampling_seconds": round(precheck_run["seconds"], 2),
        "train_seconds": round(progress.train_seconds, 2),
        "seconds_per_step": None,
        "total_seconds": round(time.perf_counter() - run_started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "device": loaded.plan.to_dict(),
        "paths": {"run_dir": str(run_dir), "model": None if model_dir is None else str(model_dir),
                  "adapter": None if adapter_dir is None else str(adapter_dir),
                  "checkpoints": str(run_dir / CHECKPOINTS_DIR), "metrics": str(log.run_dir / METRICS_FILE)},
        "warnings": warnings,
    }

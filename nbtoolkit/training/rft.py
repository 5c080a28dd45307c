"""Reinforcement fine-tuning (GRPO with LoRA) of a local model, through TRL's GRPOTrainer.

`run_rft` starts from a full model directory (usually an SFT run's `model/`), first measures whether the starting
model earns any reward (under ~5% positive means "do SFT first", docs/hyperparameters.md), then trains LoRA adapters
with GRPO. It writes metrics.jsonl rows and the warning signs of a failing run (reward collapse, KL blow-up, replies
hitting max_new_tokens) through RunLog, checkpoints for resume, and ends with `adapter/` and a merged `model/`.

How our hyperparameters map onto TRL 1.16 (see `grpo_args`):
- Batching. A GRPO batch counts completions, not prompts. per_device_train_batch_size = micro_batch_size,
  gradient_accumulation_steps = global_batch_size / micro_batch_size, and TRL's default generation batch (one
  generation round per optimizer step) is then global_batch_size completions, i.e. global_batch_size /
  number_generation prompts each sampled number_generation times.
- ent_coeff -> entropy_coef. TRL 1.16 has an entropy bonus built in (the loss minus entropy_coef x the mean
  per-token entropy of the completions), so no subclass is needed.
- kl_loss_coef -> beta. With LoRA the KL reference is the starting model itself (the adapters disabled).
- max_prompt_tokens. TRL 1.16 does not truncate prompts; the user turn is cut before templating instead.
- max_new_tokens -> max_completion_length; generation stops at the chat template's answer terminator, which TRL
  reads from model.generation_config.eos_token_id.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nbtoolkit.data.formats import read_jsonl
from nbtoolkit.generation import encode_prompts, generate_replies, sample_groups, truncate_user_turns
from nbtoolkit.models import LoadedModel, answer_terminator, answer_terminator_ids, load_model
from nbtoolkit.models.threads import CoreShare
from nbtoolkit.rewards import as_trl_reward, get_reward, positive_reward_share
from nbtoolkit.runtime.events import RunLog, drop_metrics_after, read_metrics, write_json_atomic
from nbtoolkit.training.config import RFTLoraConfig

CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
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
    A missing id becomes "row-<line>"; a non-string reference is JSON-encoded (TRL columns need one type).
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


def _scores(reward_fn: RewardFn, samples: list[dict]) -> list[float]:
    """aggregate_reward_score per sample, matched by id (the contract does not promise the order)."""
    by_id = {out["id"]: float(out["aggregate_reward_score"]) for out in reward_fn(samples)}
    return [by_id[s["id"]] for s in samples]


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


class GroupedReward:
    """A TRL reward function that also reports, for each generation batch, frac_zero_variance_groups and
    reward_positive_share to TRL's logged metrics (through the `log_metric` argument TRL passes).

    TRL's sampler puts the num_generations replies of a prompt next to each other, so groups are consecutive.
    """

    def __init__(self, trl_reward: Callable[..., list[float]], group_size: int, name: str = "reward") -> None:
        self.trl_reward = trl_reward
        self.group_size = group_size
        self.__name__ = name  # TRL names the per-function metrics rewards/<name>/mean after it
        self.last: dict[str, float] = {}

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        rewards = [None if r is None else float(r) for r in self.trl_reward(prompts, completions, **kwargs)]
        valid = [r for r in rewards if r is not None and not math.isnan(r)]
        self.last = {
            "frac_zero_variance_groups": frac_zero_variance_groups(rewards, self.group_size),
            "reward_positive_share": sum(r > 0 for r in valid) / len(valid) if valid else float("nan"),
        }
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in self.last.items():
                log_metric(name, value)
        return rewards


# ---------------------------------------------------------------------------------------------------------------
# Batching and the TRL config


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is made of completions, prompts and forward passes."""

    completions_per_step: int
    prompts_per_step: int
    generations_per_prompt: int
    micro_batch_size: int
    gradient_accumulation_steps: int


def batch_plan(config: RFTLoraConfig) -> BatchPlan:
    """global_batch_size completions per step = global_batch_size / number_generation prompts, in forward passes
    of micro_batch_size completions (gradient accumulation makes up the rest)."""
    total, group = config.global_batch_size, config.number_generation
    micro = min(config.micro_batch_size, total)
    if total % group:
        raise ValueError(f"global_batch_size ({total}) must be a multiple of number_generation ({group}): "
                         "each step scores whole groups of replies to a prompt")
    if total % micro:
        raise ValueError(f"global_batch_size ({total}) must be a multiple of micro_batch_size ({micro})")
    return BatchPlan(total, total // group, group, micro, total // micro)


def grpo_args(config: RFTLoraConfig, output_dir: str | os.PathLike, *, device: str = "cpu", bf16: bool = False):
    """TRL GRPOConfig for `config`: our names mapped to TRL's, checkpoints in output_dir, nothing reported online.

    bf16 (mixed precision) only when the device plan asks for it; on CPUs without native bf16 it is float32.
    """
    from trl import GRPOConfig

    plan = batch_plan(config)
    return GRPOConfig(
        output_dir=str(output_dir),
        learning_rate=config.lr,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        per_device_train_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        num_generations=config.number_generation,
        beta=config.kl_loss_coef,
        temperature=config.temperature,
        top_k=config.top_k,
        entropy_coef=config.ent_coeff,
        max_completion_length=config.max_new_tokens,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device.split(":")[0] == "cpu",
        bf16=bf16,
        fp16=False,
        activation_checkpointing=False,  # TRL turns it on by default; a small model fits, and it costs ~20% time
        disable_dropout=True,  # policy and reference log-probs must agree on identical inputs
        report_to="none",
        dataloader_pin_memory=False,
        remove_unused_columns=False,  # the reward needs reference_answer and id
        disable_tqdm=bool(os.environ.get("TRAINING_JOB_NAME")),  # in a training container, log lines only
    )


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


def learnable_prompts(loaded: LoadedModel, records: Sequence[dict], reward_fn: RewardFn, config: RFTLoraConfig,
                      *, log: RunLog | None = None) -> list[dict]:
    """Dynamic sampling done once before training: number_generation sampled replies to up to
    config.dynamic_sampling prompts, keeping the prompts whose replies earn different rewards. A group whose
    replies all score the same has zero advantage: GRPO would spend a step's compute on it and learn nothing."""
    started = time.perf_counter()
    chosen = random.Random(config.seed + 1).sample(list(records), min(config.dynamic_sampling, len(records)))
    groups = sample_groups(loaded, [r["messages"] for r in chosen], n=config.number_generation,
                           temperature=config.temperature, top_k=config.top_k, max_new_tokens=config.max_new_tokens,
                           seed=config.seed + 1, progress=log is None)
    kept = []
    for record, group in zip(chosen, groups):
        scores = _scores(reward_fn, _samples(record, [text for text, _ in group]))
        if max(scores) - min(scores) > 1e-6:
            kept.append(record)
    if log is not None:
        log.info(f"dynamic sampling: {len(kept)} of {len(chosen)} prompts have replies that earn different rewards "
                 f"({config.number_generation} sampled at temperature {config.temperature:g}); GRPO trains on those "
                 f"({time.perf_counter() - started:.0f} s)")
        log.metric(step=0, phase="dynamic_sampling", prompts_sampled=len(chosen), prompts_kept=len(kept),
                   seconds=round(time.perf_counter() - started, 2))
    return kept


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
# During training: metrics rows and warning signs


# TRL log key -> metrics.jsonl column
_LOG_COLUMNS = {
    "loss": "loss",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "reward_positive_share": "reward_positive_share",
    "frac_zero_variance_groups": "frac_zero_variance_groups",
    "kl": "kl",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "policy_loss": "policy_loss",
}


def metrics_row(logs: dict, step: int, seconds_per_step: float | None = None, *, reward_prefix: str | None = None
                ) -> dict:
    """One metrics.jsonl row from a TRL `logs` dict.

    reward_prefix: the reward function's name; the "Metric" entries its metrics_list reports (as_trl_reward logs
    them as "<name>/<metric>", e.g. label_correct) become "reward/<metric>" columns.
    """
    row: dict[str, Any] = {"step": step, "phase": "train"}
    for key, column in _LOG_COLUMNS.items():
        if logs.get(key) is not None:
            row[column] = float(logs[key])
    if reward_prefix:
        for key, value in logs.items():
            if key.startswith(f"{reward_prefix}/") and value is not None:
                row[f"reward/{key[len(reward_prefix) + 1:]}"] = float(value)
    if "frac_zero_variance_groups" not in row and logs.get("frac_reward_zero_std") is not None:
        row["frac_zero_variance_groups"] = float(logs["frac_reward_zero_std"])
    row["seconds_per_step"] = None if seconds_per_step is None else round(seconds_per_step, 3)
    return row


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


def _monitor_callback(log: RunLog, health: TrainingHealth, stop_event=None, reward_prefix: str | None = None):
    from transformers import TrainerCallback

    class RFTMonitor(TrainerCallback):
        """metrics.jsonl rows and warnings on every log, progress.json and the stop request on every step."""

        def __init__(self) -> None:
            self.rows: list[dict] = []
            self.warnings: list[str] = []
            self.stopped = False
            self.first_step = 0
            self.share = CoreShare.for_this_process()

        def on_train_end(self, args, state, control, **kwargs):
            self.share.restore()

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step
            self._mark = (time.perf_counter(), state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.share.update()
            log.progress(state.global_step, state.max_steps)
            if stop_event is not None and stop_event.is_set() and not self.stopped:
                self.stopped = True
                log.info(f"stop requested: saving a checkpoint at step {state.global_step} and stopping")
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs or any(key.startswith("eval_") for key in logs):
                return
            now, step = time.perf_counter(), state.global_step
            seconds = (now - self._mark[0]) / (step - self._mark[1]) if step > self._mark[1] else None
            self._mark = (now, step)
            row = metrics_row(logs, step, seconds, reward_prefix=reward_prefix)
            log.metric(**row)
            self.rows.append(row)
            for message in health.update(row):
                log.warning(message)
                self.warnings.append(message)

    return RFTMonitor()


# ---------------------------------------------------------------------------------------------------------------
# Files


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint-<step> directory under run_dir/checkpoints, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    last = get_last_checkpoint(str(folder))
    return Path(last) if last else None


def _write_dir_atomic(target: Path, write: Callable[[Path], Any]) -> Path:
    """write(temp_dir), then swap it into place, so a reader never sees a half-written directory."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _save_pretrained(obj, tokenizer) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        obj.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return write


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
    from peft import LoraConfig
    from trl import GRPOTrainer

    run_started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or RunLog(run_dir)
    warnings: list[str] = []

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    plan = batch_plan(config)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise ValueError(f"{run_dir / CHECKPOINTS_DIR} already holds checkpoints ({checkpoint.name}) of an earlier "
                         "run: pass resume=True to continue it, or choose a new run directory")
    if resume and checkpoint is None:
        warn(f"resume=True but {run_dir / CHECKPOINTS_DIR} holds no checkpoint: starting at step 0")
    if resume and checkpoint is not None:
        drop_metrics_after(run_dir, int(checkpoint.name.rsplit("-", 1)[-1]))
    if config.reasoning_effort is not None:
        warn(f"reasoning_effort={config.reasoning_effort!r} applies to Nova models only; ignored here")
    reward_name = getattr(reward_fn, "__name__", "custom") if reward_fn is not None else config.reward
    reward_fn = reward_fn or build_reward(config.reward, labels)

    loaded = load_model(model)
    tokenizer = loaded.tokenizer
    if len(answer_terminator_ids(tokenizer)) != 1:
        warn(f"the answer terminator {answer_terminator(tokenizer)!r} is several tokens; generation can only stop "
             "at single tokens, so it stops at the tokenizer's eos token instead")
    # TRL stops sampling at every id of model.generation_config.eos_token_id (plus the tokenizer's eos).
    stop = _stop_ids(tokenizer)
    loaded.model.generation_config.eos_token_id = stop if len(stop) > 1 else stop[0]

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
    log.info(f"RFT (GRPO + LoRA r={config.lora_r}, alpha={config.alpha}) from {loaded.spec.name} on "
             f"{len(records)} prompts: {plan.prompts_per_step} prompts x {plan.generations_per_prompt} replies = "
             f"{plan.completions_per_step} completions per step, forward passes of {plan.micro_batch_size} "
             f"({plan.gradient_accumulation_steps} accumulated), {config.max_steps} steps; reward {reward_name}; "
             f"device {loaded.plan.device} {loaded.plan.weights_dtype} ({loaded.plan.reason})")

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
        return _summary(config, "stopped", 0, plan, reward_name, precheck, before, None, warnings, run_dir,
                        log, loaded, run_started, checkpoint if resume else None, precheck_read=precheck_read)

    from datasets import Dataset

    if config.dynamic_sampling:
        learnable = learnable_prompts(loaded, records, reward_fn, config, log=log)
        if len(learnable) >= plan.prompts_per_step:
            records = learnable
        else:
            warn(f"dynamic sampling kept {len(learnable)} prompts, fewer than one step needs "
                 f"({plan.prompts_per_step}): training on every prompt")
    dataset = Dataset.from_list([{"prompt": r["messages"], "reference_answer": r["reference_answer"],
                                  "id": r["id"]} for r in records])
    reward = GroupedReward(as_trl_reward(reward_fn), config.number_generation, name=reward_name)
    health = TrainingHealth()
    monitor = _monitor_callback(log, health, stop_event, reward_prefix=getattr(reward_fn, "__name__", None))
    args = grpo_args(config, run_dir / CHECKPOINTS_DIR, device=loaded.plan.device,
                     bf16=loaded.plan.autocast_dtype == "bfloat16")
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.alpha, lora_dropout=0.0,
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=loaded.model, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=[monitor])
    if checkpoint is not None and resume:
        log.info(f"resuming from {checkpoint.name}")
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint is not None else None)
    train_seconds = time.perf_counter() - train_started
    warnings.extend(monitor.warnings)
    steps = trainer.state.global_step
    steps_here = steps - monitor.first_step
    status = "stopped" if monitor.stopped and steps < config.max_steps else "completed"

    policy = trainer.accelerator.unwrap_model(trainer.model)
    adapter_dir = _write_dir_atomic(run_dir / ADAPTER_DIR, _save_pretrained(policy, tokenizer))
    merged = policy.merge_and_unload()
    merged.config.use_cache = True
    merged.eval()
    model_dir = _write_dir_atomic(run_dir / MODEL_DIR, _save_pretrained(merged, tokenizer))
    log.info(f"RFT {status} at step {steps}: adapter in {adapter_dir}, merged model in {model_dir}")

    after_eval = None
    if eval_records is not None:
        after = LoadedModel(merged, tokenizer, loaded.spec, loaded.plan, model_dir)
        after_eval = held_out_reward(after, eval_records, reward_fn, max_new_tokens=config.max_new_tokens)
        log.info(f"held-out reward on {after_eval['prompts']} eval prompts: "
                 f"{before.get('eval', {}).get('reward_mean', float('nan')):.3f} before, "
                 f"{after_eval['reward_mean']:.3f} after")
        log.metric(step=steps, phase="eval", eval_reward_mean=after_eval["reward_mean"],
                   eval_positive_share=after_eval["positive_share"])
    log.progress(steps, config.max_steps)

    summary = _summary(config, status, steps, plan, reward_name, precheck, before, after_eval, warnings, run_dir,
                       log, loaded, run_started, checkpoint if resume else None, precheck_read=precheck_read,
                       model_dir=model_dir,
                       adapter_dir=adapter_dir)
    summary["train_seconds"] = round(train_seconds, 2)
    summary["seconds_per_step"] = round(train_seconds / steps_here, 3) if steps_here else None
    return summary


def _summary(config: RFTLoraConfig, status: str, steps: int, plan: BatchPlan, reward_name: str, precheck: dict,
             before: dict, after_eval: dict | None, warnings: list[str], run_dir: Path, log: RunLog,
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
    sampling = [row for row in logged if row.get("phase") == "dynamic_sampling"]
    precheck_run = {"prompts": 0, "seconds": 0.0} if precheck_read else precheck
    return {
        "method": config.METHOD,
        "status": status,
        "steps": steps,
        "max_steps": config.max_steps,
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
        "entropy_bonus": {"ent_coeff": config.ent_coeff, "applied_as": "trl GRPOConfig.entropy_coef"},
        # Replies sampled before training (the precheck and dynamic sampling), timed apart from the GRPO steps.
        "sampled_prompts": precheck_run["prompts"] + (sampling[-1]["prompts_sampled"] if sampling else 0),
        "sampling_seconds": round(precheck_run["seconds"] + (sampling[-1].get("seconds", 0.0) if sampling else 0.0),
                                  2),
        "train_seconds": 0.0,
        "seconds_per_step": None,
        "total_seconds": round(time.perf_counter() - run_started, 2),
        "device": loaded.plan.to_dict(),
        "paths": {"run_dir": str(run_dir), "model": None if model_dir is None else str(model_dir),
                  "adapter": None if adapter_dir is None else str(adapter_dir),
                  "checkpoints": str(run_dir / CHECKPOINTS_DIR), "metrics": str(log.run_dir / "metrics.jsonl")},
        "warnings": warnings,
    }

"""Supervised fine-tuning on this machine (LoRA or every weight): loss on the answer tokens only, resumable.

Design: a compact explicit loop rather than a transformers `Trainer` subclass. The loss needs the decoder's hidden
states (the LM head runs on answer positions only, and the rows' shared system prompt runs once per micro batch),
and checkpoints must be atomic and resume with the same data order and RNG; with `Trainer` that takes overrides
around its own non-atomic checkpointing, while the loop is shorter and faster (benchmarks/sft_throughput.py).
peft builds the adapters and the LoRA+ optimizer; transformers loads and saves the models.

A run directory holds metrics.jsonl and log.txt (through RunLog), checkpoints/step-<N>/ (the last two), and at
the end adapter/ (LoRA only) and model/ (merged weights + tokenizer, loadable with load_model); see
nbtoolkit.training.checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from nbtoolkit.data.chat import read_chat_rows
from nbtoolkit.errors import ConfigError, DataError, ModelError, NbtoolkitError
from nbtoolkit.generation import encode_prompts
from nbtoolkit.generation import shared_prefix_length as token_prefix_length
from nbtoolkit.models import answer_terminator_ids, load_model
from nbtoolkit.models.threads import CoreShare
from nbtoolkit.runtime.events import METRICS_FILE, RunLog, drop_metrics_after, peak_rss_mb
from nbtoolkit.training.checkpoints import (
    CHECKPOINT_PREFIX,
    TrainingProgress,
    export_model,
    latest_checkpoint,
    load_checkpoint,
    remove_leftovers,
    save_checkpoint,
)
from nbtoolkit.training.config import SFTFullConfig, SFTLoraConfig
from nbtoolkit.training.selection import (
    SELECTION_METRIC,
    VALIDATION_ROWS,
    BestWeights,
    load_validation_set,
    validation_accuracy,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "EVAL_ROWS",
    "MIN_SHARED_PREFIX",
    "BatchOrder",
    "ChatExample",
    "SFTBatch",
    "answer_token_loss",
    "base_model",
    "collate",
    "hidden_states",
    "shared_head_cache",
    "latest_checkpoint",
    "lr_factor",
    "make_optimizer",
    "read_chat_rows",
    "run_sft",
    "shared_prefix_length",
    "tokenize_chat",
]

EVAL_ROWS = 64  # eval loss uses the first rows of eval_file: enough to follow a trend, cheap on a CPU
MAX_GRAD_NORM = 1.0
# Rows are sorted by length within windows of this many batches (then the batches shuffled): less padding while
# each batch stays a random draw from a small window of the shuffled data.
LENGTH_GROUP_BATCHES = 4
# Shorter common prefixes are not worth a second decoder call.
MIN_SHARED_PREFIX = 16


class StopFlag(Protocol):
    """threading.Event, or anything else with is_set()."""

    def is_set(self) -> bool: ...


# ---------------------------------------------------------------------------------------------------------------
# Data: chat rows -> token ids with the prompt length


@dataclass(frozen=True)
class ChatExample:
    """One training sequence: prompt ids then answer ids (answer text + the chat template's terminator)."""

    input_ids: tuple[int, ...]
    prompt_length: int
    prompt_cut: bool = False  # the user turn was cut below max_prompt_tokens so the answer fits max_length

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def answer_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def tokenize_chat(
    messages: Sequence[dict],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    max_prompt_tokens: int | None,
    terminator_ids: Sequence[int] | None = None,
    source: str | None = None,
    row: int | None = None,
) -> ChatExample:
    """Prompt = chat template of every message but the last (user turns cut to max_prompt_tokens) with the
    generation prompt; answer = the last message's text + terminator. Cuts the user turns further when the whole
    does not fit max_length, and raises DataError when even that cannot make the answer fit."""
    *context, answer = messages
    terminator = list(answer_terminator_ids(tokenizer) if terminator_ids is None else terminator_ids)
    answer_ids = list(tokenizer(answer["content"], add_special_tokens=False)["input_ids"]) + terminator
    budget = max_prompt_tokens or None
    prompt = encode_prompts(tokenizer, [context], budget)[0]
    if len(prompt) + len(answer_ids) <= max_length:
        return ChatExample(tuple(prompt + answer_ids), len(prompt))
    longest_user = max(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"])
                       for m in context if m["role"] == "user")
    budget = min(budget or longest_user, longest_user)
    while len(prompt) + len(answer_ids) > max_length:
        budget -= len(prompt) + len(answer_ids) - max_length
        if budget < 1:
            overhead = len(encode_prompts(tokenizer, [context], 1)[0])
            raise DataError(
                f"the answer ({len(answer_ids)} tokens with the terminator) does not fit max_length={max_length} "
                f"even with the question cut to one token (template and other turns take {overhead} tokens); "
                f"raise max_length or shorten the answer", source=source, row=row)
        prompt = encode_prompts(tokenizer, [context], budget)[0]
    return ChatExample(tuple(prompt + answer_ids), len(prompt), prompt_cut=True)


def _tokenize_rows(rows, tokenizer, config, terminator, source) -> list[ChatExample]:
    return [tokenize_chat(messages, tokenizer, max_length=config.max_length, max_prompt_tokens=config.max_prompt_tokens,
                          terminator_ids=terminator, source=source, row=row)
            for row, (_, messages) in enumerate(rows, 1)]


# ---------------------------------------------------------------------------------------------------------------
# Batches and the answer-only loss


@dataclass
class SFTBatch:
    """A right-padded micro batch. answer_positions marks the hidden states that predict an answer token;
    targets are those tokens in row-major order. labels (-100 outside answers) serve the full-logits path."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    answer_positions: torch.Tensor
    targets: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Tokens processed (prompt + answer, no padding)."""
        return int(self.attention_mask.sum())

    @property
    def n_answer_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: str | torch.device) -> SFTBatch:
        return SFTBatch(*(getattr(self, name).to(device) for name in
                          ("input_ids", "attention_mask", "labels", "answer_positions", "targets")))


def collate(examples: Sequence[ChatExample], pad_id: int) -> SFTBatch:
    """Pad to the longest example. Masks come from the lengths, never from pad ids (pad == eos for SmolLM2)."""
    width = max(example.length for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    answer_positions = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, example in enumerate(examples):
        n, p = example.length, example.prompt_length
        input_ids[i, :n] = torch.tensor(example.input_ids)
        attention[i, :n] = 1
        labels[i, p:n] = input_ids[i, p:n]
        answer_positions[i, p - 1:n - 1] = True  # the hidden state at t predicts token t + 1
    targets = labels[:, 1:][answer_positions[:, :-1]]
    return SFTBatch(input_ids, attention, labels, answer_positions, targets)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def shared_prefix_length(batch: SFTBatch) -> int:
    """Leading tokens every row of the batch shares (template and system prompt), stopping before the first
    position that predicts an answer token, so every row keeps at least one token of its own."""
    first_answer = int(batch.answer_positions.to(torch.int8).argmax(dim=1).min())
    return min(token_prefix_length(batch.input_ids.tolist()), first_answer)


def shared_head_cache(base: torch.nn.Module, head: torch.Tensor, rows: int):
    """The decoder's keys and values of `head` (token ids, shape (1, length)), run once and repeated for `rows`
    rows; gradients flow through them."""
    from transformers import DynamicCache

    cache = DynamicCache(config=base.config)
    base.get_decoder()(input_ids=head, past_key_values=cache, use_cache=True)
    cache.batch_repeat_interleave(rows)
    return cache


def hidden_states(base: torch.nn.Module, batch: SFTBatch, share_prefix: bool) -> tuple[torch.Tensor, int]:
    """The decoder's last hidden states, and the offset of their first position. With share_prefix, the prefix
    that all rows share runs once and its keys and values are repeated for every row (gradients flow through
    them), so a long common system prompt costs one row instead of one per row."""
    decoder = base.get_decoder()
    attention = None if bool(batch.attention_mask.all()) else batch.attention_mask  # no padding: causal fast path
    prefix = shared_prefix_length(batch) if share_prefix else 0
    if prefix < MIN_SHARED_PREFIX:
        return decoder(input_ids=batch.input_ids, attention_mask=attention, use_cache=False).last_hidden_state, 0
    cache = shared_head_cache(base, batch.input_ids[:1, :prefix], batch.input_ids.shape[0])
    output = decoder(input_ids=batch.input_ids[:, prefix:], attention_mask=attention, past_key_values=cache,
                     use_cache=True)
    return output.last_hidden_state, prefix


def answer_token_loss(
    model: torch.nn.Module, batch: SFTBatch, *, head_only: bool = True, share_prefix: bool = True
) -> torch.Tensor:
    """Summed cross-entropy of the answer tokens.

    head_only runs the decoder for hidden states and the LM head on the answer positions only (a few of the
    sequence's hundreds), skipping the vocabulary-sized projection elsewhere; share_prefix also computes the
    rows' common prefix once. head_only=False computes full logits (the reference, and the fallback for
    architectures that post-process logits).
    """
    if not head_only:
        attention = None if bool(batch.attention_mask.all()) else batch.attention_mask
        logits = model(input_ids=batch.input_ids, attention_mask=attention, use_cache=False).logits
        return F.cross_entropy(logits[batch.answer_positions].float(), batch.targets, reduction="sum")
    base = base_model(model)
    hidden, offset = hidden_states(base, batch, share_prefix)
    logits = base.get_output_embeddings()(hidden[batch.answer_positions[:, offset:]])
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


@dataclass(frozen=True)
class LossMode:
    head_only: bool = True
    share_prefix: bool = True


def exact_loss_mode(model: torch.nn.Module, examples: Sequence[ChatExample], pad_id: int, device: str
                     ) -> LossMode:
    """The fastest loss computation that matches the model's own loss on a small batch. Models that scale or
    soft-cap logits after the LM head, or whose cache cannot be shared, fall back to slower exact modes."""
    batch = collate(examples, pad_id).to(device)
    # Without autocast: the question is what the model computes; bf16 rounding alone would fail the comparison.
    with torch.no_grad(), torch.autocast(batch.input_ids.device.type, enabled=False):
        reference = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                          use_cache=False).loss.item()
        for mode in (LossMode(True, True), LossMode(True, False)):
            try:
                value = answer_token_loss(model, batch, head_only=mode.head_only,
                                          share_prefix=mode.share_prefix).item() / batch.n_answer_tokens
            except (RuntimeError, ValueError, TypeError, AttributeError):
                continue
            if math.isclose(value, reference, rel_tol=1e-4, abs_tol=1e-5):
                return mode
    return LossMode(False, False)


class BatchOrder:
    """Which rows each optimizer step trains on, a function of (seed, step) only: a resumed run sees the same data.

    Rows are read as an endless stream of per-epoch permutations; each window of LENGTH_GROUP_BATCHES batches is
    sorted by length, cut into batches, and the batches shuffled.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, group_batches: int = LENGTH_GROUP_BATCHES):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = max(1, group_batches)
        self._permutations: dict[int, np.ndarray] = {}
        self._group: tuple[int, list[list[int]]] | None = None

    def _row(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.lengths))
        if epoch not in self._permutations:
            self._permutations = {e: p for e, p in self._permutations.items() if e == epoch - 1}
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.lengths))
        return int(self._permutations[epoch][offset])

    def rows(self, step: int) -> list[int]:
        """Row indices of optimizer step `step` (0-based)."""
        group, slot = divmod(step, self.group_batches)
        if self._group is None or self._group[0] != group:
            size = self.group_batches * self.batch_size
            rows = sorted((self._row(group * size + k) for k in range(size)), key=lambda r: self.lengths[r])
            batches = [rows[i:i + self.batch_size] for i in range(0, size, self.batch_size)]
            order = np.random.default_rng([self.seed, 1, group]).permutation(len(batches))
            self._group = (group, [batches[i] for i in order])
        return self._group[1][slot]

    def epoch(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step * self.batch_size / len(self.lengths)


# ---------------------------------------------------------------------------------------------------------------
# Model, optimizer, schedule


def _is_lora(config: SFTLoraConfig | SFTFullConfig) -> bool:
    if not isinstance(config, (SFTLoraConfig, SFTFullConfig)):
        raise TypeError(f"run_sft needs an SFTLoraConfig or SFTFullConfig, got {type(config).__name__}")
    if config.platform != "local":
        raise ValueError(f"this config is for platform {config.platform!r}; run_sft trains locally "
                         "(use SFTLoraConfig.for_platform('local') or the SageMaker runtime)")
    return isinstance(config, SFTLoraConfig)


def _with_adapters(model: torch.nn.Module, config: SFTLoraConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as error:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise ModelError(f"LoRA target_modules {list(config.target_modules)} do not fit this model ({error}); "
                         f"its linear layers are named {linear}") from error


def train_above(model: torch.nn.Module, frozen_layers: int) -> None:
    """Make every weight trainable except the token embeddings and the lowest `frozen_layers` decoder blocks
    (none when 0). Nothing below the lowest trained block needs a gradient, so autograd neither stores the frozen
    blocks' activations nor runs their backward."""
    model.requires_grad_(True)
    if not frozen_layers:
        return
    blocks = getattr(base_model(model).get_decoder(), "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ConfigError(f"frozen_layers={frozen_layers} needs a decoder whose blocks are a list (`layers`); this "
                          "model's is not: use frozen_layers=0")
    if frozen_layers >= len(blocks):
        raise ConfigError(f"frozen_layers={frozen_layers} leaves no block to train: this model has {len(blocks)} "
                          "blocks")
    model.get_input_embeddings().requires_grad_(False)  # tied to the LM head in small models: it stays too
    for block in blocks[:frozen_layers]:
        block.requires_grad_(False)


def make_optimizer(model: torch.nn.Module, config: SFTLoraConfig | SFTFullConfig) -> torch.optim.Optimizer:
    """AdamW on the trainable parameters (no weight decay); with LoRA+ (lora_plus_lr_ratio > 1) the B matrices
    get lr * ratio."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates all 135M weights of a full fine-tuning step in 0.06 s on 2 cores, against 0.39 s
    # for the default (foreach) one.
    fused = {"fused": True} if all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                   for p in trainable) else {}
    ratio = getattr(config, "lora_plus_lr_ratio", 1.0)
    if ratio > 1:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=config.lr, loraplus_lr_ratio=ratio,
                                              weight_decay=0.0, **fused)
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer
    return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0, **fused)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to the peak over `warmup` steps, then linear decay towards 0 at `total` (no step at lr 0)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(total - step, 1) / max(total - warmup, 1)


# ---------------------------------------------------------------------------------------------------------------
# The run


def _evaluate(model, examples: list[ChatExample], micro_batch_size: int, pad_id: int, device: str, plan,
              mode: LossMode) -> float:
    """Mean answer-token loss, in eval mode (no dropout, no RNG use)."""
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: e.length)
    with torch.no_grad():
        for start in range(0, len(ordered), micro_batch_size):
            batch = collate(ordered[start:start + micro_batch_size], pad_id).to(device)
            with plan.autocast():
                total += answer_token_loss(model, batch, head_only=mode.head_only,
                                           share_prefix=mode.share_prefix).item()
            count += batch.n_answer_tokens
    model.train()
    return total / count


def _describe_changes(saved: dict | None, current: dict) -> list[str]:
    ignored = {"max_steps", "save_steps", "logging_steps"}
    return sorted(key for key in current if key not in ignored and saved and saved.get(key) != current[key])


def run_sft(
    config: SFTLoraConfig | SFTFullConfig,
    *,
    model: str | os.PathLike,
    train_file: str | os.PathLike,
    run_dir: str | os.PathLike,
    eval_file: str | os.PathLike | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    stop_event: StopFlag | None = None,
    mix: dict | None = None,
    general_data: dict[str, str] | None = None,
    labels: Sequence[str] | None = None,
    validation_file: str | os.PathLike | None = None,
    validation_rows: int = VALIDATION_ROWS,
    validate_from: float = 0.5,
    early_stopping_patience: int = 0,
) -> dict[str, Any]:
    """Fine-tune `model` (a name, Hugging Face id or directory) on the chat rows of `train_file`.

    Trains config.max_steps optimizer steps of global_batch_size rows (micro batches accumulated), loss on the
    answer tokens only. resume=True continues from the newest checkpoint in run_dir with the same data order.
    stop_event is checked between steps: a set event saves a checkpoint and returns status "stopped".
    mix (MixConfig.to_dict()) with general_data ({category: chat JSONL}) mixes general rows into every batch at
    the mix's exact shares (nbtoolkit.mixing) and records the realized mix in run_dir/mix.json.
    validation_file with labels makes the run end on its best checkpoint: from validate_from x max_steps on, at
    every save step and at the end, greedy replies to validation_rows validation rows (a fixed stratified sample)
    are scored, and the exported model is the step with the best exact match (ties: the later step).
    early_stopping_patience > 0 stops after that many checks in a row without a better score.
    Returns a summary (status, steps, final_loss, eval_loss, train_seconds, tokens_per_second, peak_rss_mb,
    selection, paths).
    """
    lora = _is_lora(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = log or RunLog(run_dir)
    remove_leftovers(run_dir)
    if (run_dir / "checkpoints").is_dir():
        remove_leftovers(run_dir / "checkpoints")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise NbtoolkitError(f"{run_dir} already holds checkpoints ({checkpoint.name}); pass resume=True to "
                             "continue that run, or choose a new run directory")
    if resume and checkpoint is None:
        log.warning(f"resume asked for, but {run_dir} has no checkpoint: starting from step 0")

    train_rows = read_chat_rows(train_file)
    eval_rows = read_chat_rows(eval_file, limit=EVAL_ROWS) if eval_file is not None else []
    loaded = load_model(model)
    tokenizer, plan, device = loaded.tokenizer, loaded.plan, loaded.plan.device
    pad_id = loaded.pad_token_id
    terminator = answer_terminator_ids(tokenizer)
    train = _tokenize_rows(train_rows, tokenizer, config, terminator, str(train_file))
    evals = _tokenize_rows(eval_rows, tokenizer, config, terminator, str(eval_file)) if eval_rows else []
    cut = sum(example.prompt_cut for example in train)
    if cut:
        log.warning(f"{cut} of {len(train)} rows had the question cut below max_prompt_tokens="
                    f"{config.max_prompt_tokens} so the answer fits max_length={config.max_length}")
    order = BatchOrder([e.length for e in train], config.global_batch_size, config.seed)
    mixed = None
    if mix is not None:
        from nbtoolkit.mixing.training import mixed_training

        mixed = mixed_training(mix, general_data, train, lambda rows, source: _tokenize_rows(
            rows, tokenizer, config, terminator, source), batch_size=config.global_batch_size, seed=config.seed,
            warn=log.warning)
        train, order = mixed.examples, mixed.order
        mixed.record(run_dir, 0, planned_steps=config.max_steps)
        log.info(f"mixing: {mixed.mix}")

    validation = None
    if validation_file is not None and labels:
        validation = load_validation_set(validation_file, labels, limit=validation_rows, seed=config.seed)
        log.info(f"checkpoint choice on validation: exact match on {validation.describe()}, at every save step "
                 f"from step {_first_validated_step(config, validate_from)} and at the end")
    elif validation_file is not None:
        log.warning("validation_file given without a label set: the run ends on its last step")

    torch.manual_seed(config.seed)  # LoRA initialisation
    net = _with_adapters(loaded.model, config) if lora else loaded.model
    if not lora:
        train_above(net, config.frozen_layers)
    mode = exact_loss_mode(net, sorted(train, key=lambda e: e.length)[:2], pad_id, device)
    if not mode.head_only:
        log.warning("this model post-processes its logits, so the loss uses full logits (slower)")
    elif not mode.share_prefix:
        log.warning("this model cannot share the rows' common prefix, so each row computes its own (slower)")
    net.train()
    optimizer = make_optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, config.max_steps))
    trainable = [p for p in net.parameters() if p.requires_grad]

    progress = TrainingProgress(config=config.to_dict())
    if checkpoint is not None and resume:
        progress = load_checkpoint(checkpoint, net, optimizer, scheduler, lora, device)
        drop_metrics_after(run_dir, progress.step)
        changed = _describe_changes(progress.config, config.to_dict())
        if changed:
            log.warning(f"resuming with changed settings {changed}: the run is no longer one reproducible run")
        progress.config = config.to_dict()
        log.info(f"resumed from {checkpoint.name}")

    method = (f"LoRA r={config.lora_r} alpha={config.alpha}" if lora else "full fine-tuning" + (
        f", the lowest {config.frozen_layers} blocks frozen" if config.frozen_layers else ""))
    accumulation = config.global_batch_size // config.micro_batch_size
    log.info(f"SFT ({method}) of {loaded.spec.name}: {len(train):,} rows (mean {np.mean([e.length for e in train]):.0f}"
             f" tokens), {config.max_steps} steps of {config.global_batch_size} rows"
             f"{f' ({accumulation} micro batches of {config.micro_batch_size})' if accumulation > 1 else ''}, "
             f"lr {config.lr:g}; {sum(p.numel() for p in trainable):,} trainable of "
             f"{loaded.parameters:,} parameters; {plan.reason}")

    window = {"steps": 0, "loss": 0.0, "tokens": 0, "seconds": 0.0}
    status = "completed"
    saved_step = progress.step if checkpoint is not None and resume else None
    best = BestWeights.from_state(run_dir, progress.best)
    loaded_net = dataclasses.replace(loaded, model=net)
    stale_checks = 0

    def check_validation(step: int) -> bool:
        """Score the validation set now; True when the run should stop early."""
        nonlocal stale_checks
        score = validation_accuracy(loaded_net, validation, batch_size=config.micro_batch_size,
                                    max_prompt_tokens=config.max_prompt_tokens)
        improved = best.offer(net, step, score["exact_match"])
        progress.best = best.state()
        stale_checks = 0 if improved else stale_checks + 1
        log.metric(step=step, validation_exact_match=score["exact_match"],
                   validation_exact_match_stderr=score["exact_match_stderr"], validation_rows=score["rows"])
        log.info(f"validation exact match {score['exact_match']:.3f} ± {score['exact_match_stderr']:.3f} at step "
                 f"{step} ({score['seconds']:.0f} s){' - best so far' if improved else ''}")
        return bool(early_stopping_patience) and stale_checks >= early_stopping_patience
    share = CoreShare.for_this_process()
    share.enabled = share.enabled and device == "cpu" and config.parallel_micro_batches <= 1
    with _micro_batch_workers(config.parallel_micro_batches, device) as workers:
        while progress.step < config.max_steps:
            share.update()
            if stop_event is not None and stop_event.is_set():
                status = "stopped"
                break
            started = time.perf_counter()
            examples = sorted((train[r] for r in order.rows(progress.step)), key=lambda e: e.length)
            loss, tokens, grad_norm, lr = _train_step(net, optimizer, scheduler, trainable, examples, config, pad_id,
                                                      plan, mode, workers)
            seconds = time.perf_counter() - started

            progress.step += 1
            progress.rows_seen += len(examples)
            progress.tokens += tokens
            progress.train_seconds += seconds
            progress.last_loss = loss
            for key, value in (("steps", 1), ("loss", loss), ("tokens", tokens), ("seconds", seconds)):
                window[key] += value
            step = progress.step
            if step % config.logging_steps == 0 or step == config.max_steps:
                mean_loss = window["loss"] / window["steps"]
                log.metric(step=step, loss=mean_loss, lr=lr, tokens_per_second=window["tokens"] / window["seconds"],
                           seconds_per_step=window["seconds"] / window["steps"], epoch=round(order.epoch(step), 4),
                           grad_norm=grad_norm, tokens=window["tokens"], threads=share.threads)
                log.info(f"step {step}/{config.max_steps}  loss {mean_loss:.4f}  lr {lr:.3g}  "
                         f"{window['tokens'] / window['seconds']:,.0f} tokens/s  "
                         f"{window['seconds'] / window['steps']:.2f} s/step")
                window = {"steps": 0, "loss": 0.0, "tokens": 0, "seconds": 0.0}
            log.progress(step, config.max_steps)
            stop_early = False
            if step % config.save_steps == 0:
                if evals:
                    _record_eval(net, evals, config, pad_id, device, plan, mode, progress, log)
                if validation is not None and step >= _first_validated_step(config, validate_from):
                    stop_early = check_validation(step)
                save_checkpoint(run_dir, net, optimizer, scheduler, progress, lora)
                saved_step = step
                log.info(f"checkpoint {CHECKPOINT_PREFIX}{step} saved")
            if stop_early:
                log.info(f"early stop at step {step}: no better validation score in {stale_checks} checks")
                break

    share.restore()
    if mixed is not None:
        mixed.record(run_dir, progress.step, planned_steps=config.max_steps)
    paths: dict[str, str | None] = {"run_dir": str(run_dir), "metrics": str(run_dir / METRICS_FILE),
                                    "adapter": None, "model": None}
    if status == "stopped":
        if progress.step > 0 and saved_step != progress.step:
            save_checkpoint(run_dir, net, optimizer, scheduler, progress, lora)
        log.info(f"stopped at step {progress.step}/{config.max_steps}; continue with resume=True")
    else:
        if evals and progress.eval_step != progress.step:
            _record_eval(net, evals, config, pad_id, device, plan, mode, progress, log)
        if validation is not None and str(progress.step) not in best.history:
            check_validation(progress.step)
        if validation is not None and best.step is not None and best.step != progress.step:
            best.restore(net)
            log.info(f"ending on step {best.step}: its validation exact match {best.score:.3f} beats the last "
                     f"step's {best.history[str(progress.step)]:.3f}")
        paths.update(export_model(net, tokenizer, run_dir, lora))
        log.info(f"done: {progress.step} steps in {progress.train_seconds:.0f} s; model saved to {paths['model']}")
    last = latest_checkpoint(run_dir)
    paths["checkpoint"] = str(last) if last else None
    return {
        "status": status,
        "method": config.METHOD,
        "steps": progress.step,
        "max_steps": config.max_steps,
        "rows": len(train),
        "epochs": round(order.epoch(progress.step), 4),
        "final_loss": progress.last_loss,
        "eval_loss": progress.eval_loss,
        "train_seconds": round(progress.train_seconds, 3),
        "tokens_per_second": progress.tokens / progress.train_seconds if progress.train_seconds else None,
        "peak_rss_mb": peak_rss_mb(),
        "mix": mixed.summary(progress.step) if mixed is not None else None,
        "selection": None if validation is None else {
            "metric": SELECTION_METRIC, "split": "validation", "rows": len(validation.truth),
            "rows_total": validation.rows_total, "selected_step": best.step, "selected_score": best.score,
            "by_step": best.history},
        "paths": paths,
    }


def _first_validated_step(config: SFTLoraConfig | SFTFullConfig, validate_from: float) -> int:
    return max(1, math.ceil(validate_from * config.max_steps))


@contextlib.contextmanager
def _micro_batch_workers(count: int, device: str) -> Iterator[ThreadPoolExecutor | None]:
    """Threads that run micro batches side by side on a CPU, every op on one core (for small matrices this may
    keep the cores busier than splitting every op). torch's thread count is process-wide: restored on exit, and
    one thread meanwhile (the periodic eval loss and checkpoints too)."""
    if count <= 1 or device != "cpu":
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="micro-batch") as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _train_step(net, optimizer, scheduler, trainable, examples: list[ChatExample], config, pad_id: int, plan,
                mode: LossMode, workers: ThreadPoolExecutor | None = None) -> tuple[float, int, float, float]:
    """One optimizer step over micro batches; the loss is the mean over every answer token of the step, so
    accumulation equals one big batch. With `workers`, micro batches run forward and backward side by side
    (autograd accumulates their gradients safely). Returns (loss, tokens, grad norm before clipping, lr used)."""
    n_answer = sum(example.answer_length for example in examples)

    def micro_step(chunk: list[ChatExample]) -> tuple[float, int]:
        batch = collate(chunk, pad_id).to(plan.device)
        with plan.autocast():  # autocast is per thread: entered by the thread that runs the forward
            loss = answer_token_loss(net, batch, head_only=mode.head_only, share_prefix=mode.share_prefix)
        (loss / n_answer).backward()
        return loss.item(), batch.n_tokens

    chunks = [examples[start:start + config.micro_batch_size]
              for start in range(0, len(examples), config.micro_batch_size)]
    done = list(workers.map(micro_step, chunks)) if workers is not None else [micro_step(c) for c in chunks]
    loss_sum, tokens = sum(loss for loss, _ in done), sum(n for _, n in done)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / n_answer, tokens, grad_norm, lr


def _record_eval(net, evals, config, pad_id, device, plan, mode: LossMode, progress: TrainingProgress,
                 log: RunLog) -> None:
    progress.eval_loss = _evaluate(net, evals, config.micro_batch_size, pad_id, device, plan, mode)
    progress.eval_step = progress.step
    log.metric(step=progress.step, eval_loss=progress.eval_loss, eval_rows=len(evals))
    log.info(f"eval loss {progress.eval_loss:.4f} on {len(evals)} rows at step {progress.step}")

"""Greedy generation for chat prompts: the shared prompt head encoded once, batched decoding, bf16 where supported."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from tqdm.auto import tqdm

from nbtoolkit.models import LoadedModel, answer_terminator_ids
from nbtoolkit.models.threads import CoreShare


@dataclass(frozen=True)
class Generation:
    """One reply with its token count, whether it stopped at max_new_tokens, and the log-probability of each
    scored continuation (when generate_replies was given some)."""

    text: str
    n_tokens: int
    truncated: bool
    continuation_logprobs: tuple[float, ...] = ()


def truncate_user_turns(messages: list[dict], tokenizer, max_tokens: int | None) -> list[dict]:
    """Cut each user message to `max_tokens` tokens so the template's end (and the question's head) survive."""
    if not max_tokens:
        return messages
    out = []
    for message in messages:
        if message["role"] == "user":
            ids = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
            if len(ids) > max_tokens:
                message = {**message, "content": tokenizer.decode(ids[:max_tokens])}
        out.append(message)
    return out


def encode_prompts(tokenizer, conversations: Sequence[list[dict]], max_prompt_tokens: int | None) -> list[list[int]]:
    """Token ids of each conversation rendered with the chat template and a generation prompt."""
    encoded = []
    for messages in conversations:
        messages = truncate_user_turns(list(messages), tokenizer, max_prompt_tokens)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return encoded


# A shared prompt head shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with (the templated system prompt, typically), leaving each at least one more."""
    if len(prompts) < 2:
        return 0
    shortest = min(len(p) for p in prompts)
    common = len(os.path.commonprefix([list(p) for p in prompts]))
    return min(common, shortest - 1)


def prefix_cache(model, prefix: list[int], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values of the shared prompt head, computed once for every batch of a call."""
    output = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    return [(keys, values) for keys, values, *_ in output.past_key_values]


def _prefill(model, suffixes: list[list[int]], prefix_kv, prefix_length: int, device, pad_id: int):
    """Run the rows' own tokens after the shared prefix in one batch, left-padded between the prefix and each row's
    tokens (rows arrive length-sorted, so little padding); the resulting cache is the batch's decoding cache.

    One padded pass costs about half of one pass per row on a CPU (per-op overhead dominates small passes).
    Returns the next-token logits of each row, the cache's per-layer keys and values, and its attention mask.
    """
    rows, width = len(suffixes), max(len(ids) for ids in suffixes)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((rows, prefix_length + width), dtype=torch.long, device=device)
    attention[:, :prefix_length] = 1
    for row, ids in enumerate(suffixes):
        input_ids[row, width - len(ids):] = torch.tensor(ids, device=device)
        attention[row, prefix_length + width - len(ids):] = 1
    # padding gets the row's first real position: it is masked out, and the real tokens' positions follow on
    positions = (attention[:, prefix_length:].cumsum(-1) - 1).clamp(min=0) + prefix_length
    cache = DynamicCache(ddp_cache_data=[(keys.expand(rows, -1, -1, -1).contiguous(),
                                          values.expand(rows, -1, -1, -1).contiguous())
                                         for keys, values in prefix_kv]) if prefix_kv else DynamicCache()
    output = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
    layers = [(keys, values) for keys, values, *_ in output.past_key_values]
    return output.logits[:, -1], layers, attention


def _continuation_logprobs(model, logits, layers, attention, positions,
                           continuations: Sequence[Sequence[int]]) -> torch.Tensor:
    """Summed log-probability of each continuation after each row's prompt: (rows, continuations).

    The prompts' cache is reused as is (each pass gets a fresh cache object over the same tensors), so scoring
    costs a few tokens per continuation, not another pass over the prompts.
    """
    first = torch.log_softmax(logits.float(), dim=-1)
    scores = []
    for ids in continuations:
        score = first[:, ids[0]]
        if len(ids) > 1:
            rows, rest = logits.shape[0], len(ids) - 1
            tokens = torch.tensor(ids, device=logits.device)
            output = model(input_ids=tokens[:-1].expand(rows, rest),
                           attention_mask=torch.cat([attention, attention.new_ones(rows, rest)], dim=1),
                           position_ids=positions + 1 + torch.arange(rest, device=logits.device),
                           past_key_values=DynamicCache(ddp_cache_data=layers), use_cache=True)
            following = torch.log_softmax(output.logits.float(), dim=-1)
            score = score + following.gather(-1, tokens[1:].expand(rows, rest)[..., None]).squeeze(-1).sum(-1)
        scores.append(score)
    return torch.stack(scores, dim=1)


def _greedy_batch(model, suffixes: list[list[int]], prefix_kv, prefix_length: int, *, stop: set[int],
                  max_new_tokens: int, device, pad_id: int, continuations: Sequence[Sequence[int]] = (),
                  on_step: Callable[[int], None] | None = None
                  ) -> list[tuple[list[int], bool, tuple[float, ...]]]:
    """Greedy continuation of `prefix + suffix` for each suffix: (new tokens before the stop token, stopped,
    log-probabilities of the given continuations).

    Decoding runs on the whole batch, padded between the cached prefix and each row's own tokens; position ids
    skip the padding, so each row sees exactly its own prompt.
    """
    logits, layers, attention = _prefill(model, suffixes, prefix_kv, prefix_length, device, pad_id)
    positions = torch.tensor([[prefix_length + len(ids) - 1] for ids in suffixes], device=device)
    scores: list[tuple[float, ...]] = [()] * len(suffixes)
    if continuations:
        scores = [tuple(row) for row in _continuation_logprobs(
            model, logits, layers, attention, positions, continuations).tolist()]
    replies, stopped = _decode(model, logits, DynamicCache(ddp_cache_data=layers), attention, positions,
                               pick=lambda step_logits: step_logits.argmax(-1), stop=stop,
                               max_new_tokens=max_new_tokens, device=device, on_step=on_step)
    return list(zip(replies, stopped, scores))


def _decode(model, logits, cache, attention, positions, *, pick: Callable[[torch.Tensor], torch.Tensor],
            stop: set[int], max_new_tokens: int, device, on_step: Callable[[int], None] | None = None
            ) -> tuple[list[list[int]], list[bool]]:
    """Decode every row from its next-token logits: pick(logits) chooses the tokens (greedy or sampled); rows that
    reach a stop token leave the batch, so long replies do not make the finished ones pay for extra steps.
    on_step(rows) is called after every step. Returns each row's new tokens (before the stop token) and whether
    it stopped."""
    rows = logits.shape[0]
    replies: list[list[int]] = [[] for _ in range(rows)]
    stopped = [False] * rows
    active = list(range(rows))
    for step in range(max_new_tokens):
        tokens = pick(logits)
        keep = []
        for slot, row in enumerate(active):
            token = int(tokens[slot])
            if token in stop:
                stopped[row] = True
            else:
                replies[row].append(token)
                keep.append(slot)
        if on_step is not None:
            on_step(len(active))
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, attention, positions = tokens[index], attention[index], positions[index]
            active = [active[slot] for slot in keep]
        attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=1)
        positions = positions + 1
        logits = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1]
    return replies, stopped


@torch.inference_mode()
def generate_replies(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    max_prompt_tokens: int | None = 512,
    progress: bool = True,
    continuations: Sequence[Sequence[int]] = (),
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """Greedy replies to chat `conversations`, in input order, stopping at the chat template's terminator.

    The prompt head all conversations share (the system prompt) is encoded once; prompts then run `batch_size`
    length-sorted rows at a time (their own tokens in one left-padded pass, then batched decoding) under the
    device plan's autocast (bf16 on CPUs that support it). `continuations` (token ids, e.g. each label plus the
    answer terminator) are scored after every prompt from the same cache; max_new_tokens=0 only scores.
    on_batch(done, total) is called after every batch.
    """
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.plan.device
    prompts = encode_prompts(tokenizer, conversations, max_prompt_tokens)
    stop = {*answer_terminator_ids(tokenizer), tokenizer.eos_token_id}
    pad_id = loaded.pad_token_id
    prefix_length = shared_prefix_length(prompts)
    if prefix_length < MIN_SHARED_PREFIX:
        prefix_length = 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    # The bar counts decoding steps (at most max_new_tokens per prompt), so it moves at every token, not once per
    # batch (a batch of long replies takes minutes on a CPU); a batch's unused steps are added when it ends.
    budget = max(1, max_new_tokens)
    bar = tqdm(total=len(prompts) * budget, desc="generating", unit="tok", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
    bar.set_postfix_str(f"0/{len(prompts)} samples")
    started = time.perf_counter()
    share = CoreShare.for_this_process()
    share.enabled = share.enabled and loaded.plan.device_type == "cpu"
    with loaded.plan.autocast():
        prefix_kv = prefix_cache(model, prompts[0][:prefix_length], device) if prefix_length else None
        for start in range(0, len(order), batch_size):
            share.update()
            batch = order[start:start + batch_size]
            counted = bar.n
            replies = _greedy_batch(model, [prompts[i][prefix_length:] for i in batch], prefix_kv, prefix_length,
                                    stop=stop, max_new_tokens=max_new_tokens, device=device, pad_id=pad_id,
                                    continuations=continuations, on_step=bar.update)
            for i, (tokens, stopped, scores) in zip(batch, replies):
                results[i] = Generation(tokenizer.decode(tokens, skip_special_tokens=True).strip(), len(tokens),
                                        truncated=not stopped and max_new_tokens > 0, continuation_logprobs=scores)
            done = start + len(batch)
            bar.update(counted + len(batch) * budget - bar.n)
            bar.set_postfix_str(f"{done}/{len(prompts)} samples, {done / (time.perf_counter() - started):.2f}/s")
            if on_batch is not None:
                on_batch(done, len(prompts))
    share.restore()
    bar.close()
    return [r for r in results if r is not None]


@torch.inference_mode()
def sample_groups(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    n: int,
    temperature: float,
    top_k: int = 0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch_size: int = 8,
    max_prompt_tokens: int | None = None,
    progress: bool = False,
) -> list[list[tuple[str, bool]]]:
    """n sampled replies (text, hit max_new_tokens) to each conversation, in input order.

    Each prompt is prefilled once (after the shared prompt head) and its cache repeated n times, so a group of n
    replies costs one prompt pass instead of n (`model.generate(num_return_sequences=n)` repeats the prompt).
    Sampling uses its own seeded generator: the global RNG is untouched.
    """
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.plan.device
    prompts = encode_prompts(tokenizer, conversations, max_prompt_tokens)
    stop = {*answer_terminator_ids(tokenizer), tokenizer.eos_token_id}
    prefix_length = shared_prefix_length(prompts)
    if prefix_length < MIN_SHARED_PREFIX:
        prefix_length = 0
    generator = torch.Generator(device=device).manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[tuple[str, bool]]] = [[] for _ in prompts]
    model.eval()
    bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not progress)
    with loaded.plan.autocast():
        prefix_kv = prefix_cache(model, prompts[0][:prefix_length], device) if prefix_length else None
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            replies = sample_continuations(model, [prompts[i][prefix_length:] for i in batch], prefix_kv,
                                           prefix_length, n=n, temperature=temperature, top_k=top_k, stop=stop,
                                           max_new_tokens=max_new_tokens, device=device,
                                           pad_id=loaded.pad_token_id, generator=generator)
            for slot, i in enumerate(batch):
                results[i] = [(tokenizer.decode(tokens, skip_special_tokens=True).strip(), not stopped)
                              for tokens, stopped in replies[slot * n:(slot + 1) * n]]
            bar.update(len(batch))
    bar.close()
    return results


def sample_continuations(model, suffixes: list[list[int]], prefix_kv, prefix_length: int, *, n: int,
                         temperature: float, top_k: int, stop: set[int], max_new_tokens: int, device, pad_id: int,
                         generator: torch.Generator | None = None) -> list[tuple[list[int], bool]]:
    """n sampled continuations of `prefix + suffix` for each suffix (row-major: row 0's n replies first): each
    reply's new tokens before the stop token, and whether it stopped. Each row is prefilled once and its cache
    repeated n times. generator: None samples from torch's global RNG."""
    logits, layers, attention = _prefill(model, suffixes, prefix_kv, prefix_length, device, pad_id)
    cache = DynamicCache(ddp_cache_data=layers)
    cache.batch_repeat_interleave(n)
    logits, attention = logits.repeat_interleave(n, 0), attention.repeat_interleave(n, 0)
    positions = torch.tensor([[prefix_length + len(ids) - 1] for ids in suffixes], device=device).repeat_interleave(
        n, 0)

    def sample(step_logits: torch.Tensor) -> torch.Tensor:
        scores = step_logits.float() / temperature
        if top_k:
            kth = torch.topk(scores, min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(-1)

    replies, stopped = _decode(model, logits, cache, attention, positions, pick=sample, stop=stop,
                               max_new_tokens=max_new_tokens, device=device)
    return list(zip(replies, stopped))

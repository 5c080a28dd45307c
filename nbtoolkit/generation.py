"""Batched greedy generation for chat prompts: length-sorted batches, bf16 autocast where supported."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nbtoolkit.models import LoadedModel, answer_terminator_ids


@dataclass(frozen=True)
class Generation:
    """One reply with its token count and whether it stopped at max_new_tokens."""

    text: str
    n_tokens: int
    truncated: bool


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


@torch.inference_mode()
def generate_replies(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    max_prompt_tokens: int | None = 512,
    progress: bool = True,
) -> list[Generation]:
    """Greedy replies to chat `conversations`, in input order, stopping at the chat template's terminator.

    Prompts are sorted by length so each left-padded batch wastes little compute; forward passes run under
    the device plan's autocast (bf16 on CPUs that support it).
    """
    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.plan.device
    prompts = encode_prompts(tokenizer, conversations, max_prompt_tokens)
    pad_id = loaded.pad_token_id
    stop = list(dict.fromkeys([*answer_terminator_ids(tokenizer), tokenizer.eos_token_id]))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    bar = tqdm(total=len(prompts), desc="generating", unit="sample", disable=not progress)
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = prompts[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        with loaded.plan.autocast():
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), do_sample=False,
                max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stop,
                temperature=None, top_p=None, top_k=None)
        for row, i in enumerate(batch):
            new = output[row, width:].tolist()
            ended = next((k for k, token in enumerate(new) if token in stop), None)
            kept = new if ended is None else new[:ended]
            results[i] = Generation(tokenizer.decode(kept, skip_special_tokens=True).strip(), len(kept),
                                    truncated=ended is None)
        bar.update(len(batch))
        bar.set_postfix(samples_per_s=f"{bar.n / (time.perf_counter() - started):.2f}")
    bar.close()
    return [r for r in results if r is not None]

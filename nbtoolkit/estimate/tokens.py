"""Tokens per row of a prepared file, counted once with the model's tokenizer, then cut by any config's lengths.

A row is kept as (prompt tokens, the user turns' tokens, answer tokens), so changing max_length or
max_prompt_tokens in a form recomputes the cut lengths without tokenizing again.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_ROWS = 1000  # rows tokenized from a bigger file (evenly spaced); the mean is what an estimate needs
TERMINATOR_TOKENS = 2  # the chat template's end-of-turn after an answer (SmolLM2: <|im_end|> and a newline)


@dataclass(frozen=True)
class TokenStats:
    """Token counts of a file's rows (or an even sample of them)."""

    path: str
    rows: int
    prompt: np.ndarray  # the whole prompt with the chat template and the generation prompt
    users: tuple[tuple[int, ...], ...]  # each user turn's own tokens
    answer: np.ndarray  # the answer's tokens with the terminator
    seconds: float  # time it took to tokenize the sampled rows (scaled to `rows` in tokenize_seconds)

    @property
    def sampled(self) -> int:
        return len(self.prompt)

    @property
    def tokenize_seconds(self) -> float:
        """About how long a job takes to tokenize every row (what it does before its first step)."""
        return self.seconds * self.rows / max(1, self.sampled)

    def prompt_lengths(self, max_prompt_tokens: int | None) -> np.ndarray:
        """Prompt tokens with each user turn cut to max_prompt_tokens (0 or None: no cut)."""
        if not max_prompt_tokens:
            return self.prompt.astype(float)
        cut = np.array([sum(max(0, u - max_prompt_tokens) for u in turns) for turns in self.users], dtype=float)
        return self.prompt - cut

    def sequence_lengths(self, max_length: int, max_prompt_tokens: int | None) -> np.ndarray:
        """Training sequence lengths (prompt + answer) as SFT builds them: the prompt is cut further so the whole
        fits max_length."""
        return np.minimum(self.prompt_lengths(max_prompt_tokens) + self.answer, max_length)

    def mean_sequence(self, max_length: int, max_prompt_tokens: int | None) -> float:
        return float(self.sequence_lengths(max_length, max_prompt_tokens).mean())

    def mean_prompt(self, max_prompt_tokens: int | None) -> float:
        return float(self.prompt_lengths(max_prompt_tokens).mean())

    def file_rows(self) -> np.ndarray:
        """The file's row index of each counted row (every row, or the evenly spaced sample)."""
        return np.array(_counted_rows(self.rows, self.sampled))


def _counted_rows(rows: int, sample: int) -> list[int]:
    """Indices of the rows a file of `rows` rows is counted by: all of them, or `sample` evenly spaced."""
    return list(range(rows)) if rows <= sample else [int(i) for i in np.linspace(0, rows - 1, sample)]


_CACHE: dict[tuple, TokenStats] = {}
_LOCK = threading.Lock()


def token_stats(path: str | os.PathLike, tokenizer, *, tokenizer_name: str = "", sample: int = SAMPLE_ROWS
                ) -> TokenStats:
    """Count the tokens of a prepared file's rows (chat, rft or gen_qa; JSONL, or any table evaluate reads).

    Cached per file (path, size, modification time) and tokenizer, so a form asking again costs nothing.
    """
    from nbtoolkit.evaluation import load_eval_examples

    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, tokenizer_name or id(tokenizer), sample)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    examples = load_eval_examples(path)  # every record format the jobs read: conversation + reference answer
    rows = len(examples)
    examples = [examples[i] for i in _counted_rows(rows, sample)]
    started = time.perf_counter()
    prompts = [tokenizer.apply_chat_template(e.conversation, add_generation_prompt=True, tokenize=False)
               for e in examples]
    prompt = np.array([len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]], dtype=float)
    user_texts = [[m["content"] for m in e.conversation if m["role"] == "user"] for e in examples]
    flat = [text for texts in user_texts for text in texts]
    flat_ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    flat_lengths = iter(len(ids) for ids in flat_ids)
    users = tuple(tuple(next(flat_lengths) for _ in texts) for texts in user_texts)
    answer = np.array([len(ids) + TERMINATOR_TOKENS for ids in
                       tokenizer([e.reference for e in examples], add_special_tokens=False)["input_ids"]], dtype=float)
    stats = TokenStats(str(path), rows, prompt, users, answer, time.perf_counter() - started)
    with _LOCK:
        _CACHE[key] = stats
    return stats


def model_tokenizer(model: str):
    """The tokenizer a model's jobs use (a name, Hugging Face id, model directory or a run directory's model)."""
    from nbtoolkit.models import load_tokenizer

    return load_tokenizer(model)

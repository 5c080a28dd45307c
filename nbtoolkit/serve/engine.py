"""One model answering chat requests, one at a time: load a run directory (base + adapter), generate, stream.

Generation runs in its own thread and hands text to the caller through a queue as it is decoded, so the same code
serves streaming and non-streaming requests. A lock serializes requests: one CPU model, one generation at a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.errors import ModelError, NbtoolkitError
from nbtoolkit.models import DEFAULT_MODEL, LoadedModel, answer_terminator_ids, load_model, recommended_sampling

EMBEDDED_ALIASES = ("embedded", "default")
ADAPTER_CONFIG = "adapter_config.json"
# A reply never waits longer than this for the next piece of text before the request fails.
PIECE_TIMEOUT_SECONDS = 600.0


class RequestError(NbtoolkitError, ValueError):
    """A chat request the server cannot serve; `status` is the HTTP status, `param` the offending field."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings of one request, already validated (temperature 0 means greedy)."""

    max_tokens: int = field(default=256, metadata={"help": "Most new tokens to generate."})
    temperature: float = field(default=1.0, metadata={"help": "0 for greedy decoding, up to 2."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass, (0, 1]."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Up to 4 strings that end the reply."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed, for repeatable replies."})

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise RequestError(f"max_tokens must be a positive integer, got {self.max_tokens!r}", param="max_tokens")
        if not 0 <= self.temperature <= 2:
            raise RequestError(f"temperature must be between 0 and 2, got {self.temperature}", param="temperature")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}", param="top_p")
        if len(self.stop) > 4 or any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError("stop takes at most 4 non-empty strings", param="stop")


@dataclass
class Completion:
    """What one generation produced, filled in while it streams."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def resolve_serving_target(target: str | Path) -> tuple[str, Path | None]:
    """(model to load, adapter directory or None) for what `nbtoolkit serve` was given.

    'embedded' is the default model; a training run directory serves its merged model/ or, when it only has
    adapter/, the base model plus that adapter; a PEFT adapter directory serves its base plus the adapter.
    """
    text = str(target).strip()
    if text.lower() in EMBEDDED_ALIASES:
        return DEFAULT_MODEL, None
    path = Path(text).expanduser()
    if not path.is_dir():
        return text, None
    if (path / ADAPTER_CONFIG).is_file():
        return _adapter_base(path), path
    if (path / "config.json").is_file() or (path / "model" / "config.json").is_file():
        return str(path), None
    if (path / "adapter" / ADAPTER_CONFIG).is_file():
        return _adapter_base(path / "adapter"), path / "adapter"
    trained = sorted(p.parent.parent for p in path.glob("*/*/model/config.json"))
    hint = f"; its trained models are in {', '.join(str(p) for p in trained[:4])}" if trained else ""
    raise ModelError(f"{path} holds no model: expected config.json, model/ (a training run directory) or a LoRA "
                     f"adapter (adapter_config.json){hint}")


def _adapter_base(adapter: Path) -> str:
    try:
        base = json.loads((adapter / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"{adapter / ADAPTER_CONFIG} does not name its base model ({error})") from error
    if not base:
        raise ModelError(f"{adapter / ADAPTER_CONFIG} has an empty base_model_name_or_path")
    return base


def load_serving_model(target: str | Path, *, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """The model `target` stands for (see resolve_serving_target), adapters merged in, in eval mode."""
    base, adapter = resolve_serving_target(target)
    loaded = load_model(base, device=device, dtype=dtype)
    if adapter is None:
        return loaded
    from peft import PeftModel

    started = time.perf_counter()
    try:
        merged = PeftModel.from_pretrained(loaded.model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelError(f"cannot apply the adapter {adapter} to {base}: {error}") from error
    loaded.model = merged.eval()
    loaded.load_seconds += time.perf_counter() - started
    return loaded


class _StopScanner:
    """Holds back the tail of the text that could still grow into a stop string, so none is ever streamed."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now; sets `stopped` when a stop string appears."""
        if not self.stops:
            return piece
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[:min(hits)], ""
            return out
        cut = max(len(self.buffer) - self.keep, 0)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class ChatEngine:
    """Answers chat messages with one loaded model; `stream()` yields text pieces as they are decoded."""

    def __init__(self, loaded: LoadedModel, name: str) -> None:
        self.loaded = loaded
        self.name = name
        self.created = int(time.time())
        self.lock = threading.Lock()
        tokenizer = loaded.tokenizer
        if not tokenizer.chat_template:
            raise ModelError(f"{name}: the tokenizer has no chat template, so it cannot answer chat messages")
        self.stop_ids = list(dict.fromkeys([*answer_terminator_ids(tokenizer), tokenizer.eos_token_id]))
        self.context_length = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 0) or None
        # Used when a request leaves temperature / top_p unset: {"temperature", "top_p", "source"}.
        self.sampling = recommended_sampling(loaded)

    def settings(self, *, temperature: float | None = None, top_p: float | None = None,
                 **others: Any) -> GenerationSettings:
        """A request's GenerationSettings, the model's recommended sampling filling what the request leaves unset."""
        return GenerationSettings(
            temperature=self.sampling["temperature"] if temperature is None else temperature,
            top_p=self.sampling["top_p"] if top_p is None else top_p, **others)

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Prompt token ids: the messages rendered with the chat template and a generation prompt."""
        from nbtoolkit.generation import encode_prompts

        try:
            return encode_prompts(self.loaded.tokenizer, [list(messages)], max_prompt_tokens=None)[0]
        except Exception as error:  # noqa: BLE001 - a template refusing the messages is the caller's problem
            raise RequestError(f"the chat template rejected these messages: {error}", param="messages") from error

    def check(self, prompt: list[int], settings: GenerationSettings) -> GenerationSettings:
        """Settings that fit the context window (max_tokens clipped); a prompt that is already too long fails."""
        if self.context_length is None:
            return settings
        room = self.context_length - len(prompt)
        if room < 1:
            raise RequestError(f"the prompt has {len(prompt)} tokens; this model's context window is "
                               f"{self.context_length}", param="messages", code="context_length_exceeded")
        if settings.max_tokens > room:
            return GenerationSettings(room, settings.temperature, settings.top_p, settings.stop, settings.seed)
        return settings

    def stream(self, prompt: list[int], settings: GenerationSettings, completion: Completion) -> Iterator[str]:
        """Text pieces of the reply, in order; `completion` holds the totals once the iterator is exhausted.

        Waits for earlier requests first. Closing the iterator early stops the generation at its next token.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model, plan = self.loaded.tokenizer, self.loaded.model, self.loaded.plan
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=PIECE_TIMEOUT_SECONDS)
        outcome: dict[str, Any] = {}
        sampling = settings.temperature > 0
        kwargs = {"max_new_tokens": settings.max_tokens, "do_sample": sampling,
                  "pad_token_id": self.loaded.pad_token_id, "eos_token_id": self.stop_ids, "streamer": streamer,
                  "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
                  "temperature": settings.temperature if sampling else None,
                  "top_p": settings.top_p if sampling else None, "top_k": None}

        def run() -> None:
            try:
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                ids = torch.tensor([prompt], dtype=torch.long, device=plan.device)
                with torch.inference_mode(), plan.autocast():
                    outcome["output"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            except BaseException as error:  # noqa: BLE001 - handed to the consumer below
                outcome["error"] = error
                streamer.end()
            finally:
                # Released here, not by the consumer: a client that goes away must not hold the model forever.
                self.lock.release()

        self.lock.acquire()
        started = time.perf_counter()
        try:
            worker = threading.Thread(target=run, name="nbtoolkit-generate", daemon=True)
            worker.start()
        except BaseException:
            self.lock.release()
            raise
        scanner = _StopScanner(settings.stop)
        completion.prompt_tokens = len(prompt)
        try:
            for piece in streamer:
                if scanner.stopped:
                    continue  # drain: generation stops at its next token
                text = scanner.feed(piece)
                if scanner.stopped:
                    cancel.set()
                if text:
                    completion.text += text
                    yield text
            worker.join()
            if "error" in outcome:
                raise RuntimeError(f"generation failed: {outcome['error']}") from outcome["error"]
            tail = scanner.flush() if not scanner.stopped else ""
            if tail:
                completion.text += tail
                yield tail
            new = outcome["output"][0, len(prompt):].tolist()
            ended = next((k for k, token in enumerate(new) if token in self.stop_ids), None)
            completion.completion_tokens = len(new) if ended is None else ended
            if scanner.stopped or ended is not None:
                completion.finish_reason = "stop"
            else:
                completion.finish_reason = "length"
        finally:
            cancel.set()
            completion.seconds = time.perf_counter() - started

    def complete(self, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Completion:
        """The whole reply at once."""
        prompt = self.encode(messages)
        completion = Completion()
        for _ in self.stream(prompt, self.check(prompt, settings), completion):
            pass
        return completion

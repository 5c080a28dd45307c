"""Self-synthesized rehearsal: the base model's own replies to our general prompts, used as general data.

Training on what the model already says about general topics pulls it back towards its starting behaviour while
it learns the user's task, with no download. Each reply is generated once per model (weights), prompt and
max_new_tokens and cached under the nbtoolkit cache (`cache_root()/rehearsal/<model key>/replies.jsonl`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbtoolkit.mixing.config import MixError
from nbtoolkit.mixing.prompts import rehearsal_prompts

REHEARSAL_FORMAT = 1
DEFAULT_MAX_NEW_TOKENS = 96
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def _dir_fingerprint(path: Path) -> dict[str, Any]:
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json")))
    return {"path": str(path.resolve()),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies a model's weights for the cache, without loading it when a name or path is given."""
    from nbtoolkit.models import LoadedModel, embedded_gguf_path, model_path, resolve_model

    if isinstance(model, LoadedModel):
        if model.spec.kind == "embedded":
            return model_fingerprint(model.spec)
        if model.path is not None:
            return {"kind": model.spec.kind, **_dir_fingerprint(Path(model.path))}
        digest = hashlib.sha256()
        for name, tensor in sorted(model.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"kind": model.spec.kind, "name": model.spec.name, "weights_sha256": digest.hexdigest()}
    spec = resolve_model(model)
    if spec.kind == "embedded":
        import importlib.metadata

        from nbtoolkit.models.registry import EMBEDDED_DISTRIBUTION

        gguf = embedded_gguf_path()
        return {"kind": "embedded", "name": spec.name, "gguf": gguf.name, "size": gguf.stat().st_size,
                "version": importlib.metadata.version(EMBEDDED_DISTRIBUTION)}
    return {"kind": spec.kind, **_dir_fingerprint(model_path(spec))}


def model_cache_key(model: Any) -> str:
    """Hex key of a model's weights (see model_fingerprint)."""
    payload = {"format": REHEARSAL_FORMAT, "model": model_fingerprint(model)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _prompt_key(prompt: str, max_new_tokens: int) -> str:
    return hashlib.sha256(json.dumps([prompt, max_new_tokens]).encode()).hexdigest()[:24]


def rehearsal_cache_dir() -> Path:
    from nbtoolkit.models import cache_root

    return cache_root() / "rehearsal"


def complete_reply(text: str, truncated: bool) -> str | None:
    """The reply as a training answer (None when empty). A reply cut at max_new_tokens is trimmed to its last full
    sentence when that keeps at least half of it, so the model is not taught to stop mid-sentence."""
    text = text.strip()
    if not text or not truncated:
        return text or None
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]].strip() if ends and ends[-1] >= len(text) / 2 else text


def synthesize_rehearsal(
    model: Any = None,
    *,
    categories: Sequence[str] | None = None,
    split: str = "train",
    per_category: int | None = None,
    prompts: Sequence[dict] | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    cache: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Chat records {"id", "category", "messages": [user, assistant]} of the model's greedy replies.

    model: a LoadedModel, name or directory (None: the embedded default); loaded only on a cache miss.
    per_category: use only the first N built-in prompts of each category (a quick run).
    prompts: [{"id", "category", "prompt"}] of your own instead of the built-in ones (categories/split select
    among the built-in ones). Empty replies are dropped; replies cut at max_new_tokens end at a full sentence
    where possible (complete_reply).
    """
    from nbtoolkit.data.formats import read_jsonl, write_jsonl
    from nbtoolkit.models import DEFAULT_MODEL, LoadedModel, load_model
    from nbtoolkit.runtime.events import write_json_atomic

    model = DEFAULT_MODEL if model is None else model
    chosen = (list(prompts) if prompts is not None
              else rehearsal_prompts(categories, split=split, per_category=per_category))
    if not chosen:
        raise ValueError("no rehearsal prompts selected")
    # One cache file per model: {prompt key: reply}. Only prompts not seen before are generated.
    path = rehearsal_cache_dir() / model_cache_key(model) / "replies.jsonl"
    cached = {r["key"]: r for r in read_jsonl(path)} if cache and path.is_file() else {}
    keys = [_prompt_key(p["prompt"], max_new_tokens) for p in chosen]
    missing = list(dict.fromkeys(k for k in keys if k not in cached))
    name = None
    if missing:
        from nbtoolkit.generation import generate_replies

        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        name = loaded.spec.name
        text_of = {k: p["prompt"] for k, p in zip(keys, chosen)}
        replies = generate_replies(loaded, [[{"role": "user", "content": text_of[k]}] for k in missing],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, max_prompt_tokens=None,
                                   progress=progress)
        for key, reply in zip(missing, replies):
            cached[key] = {"key": key, "prompt": text_of[key], "reply": reply.text, "truncated": reply.truncated,
                           "max_new_tokens": max_new_tokens}
        if cache:
            write_jsonl(cached.values(), path)
            write_json_atomic(path.with_name("model.json"), {"model": model_fingerprint(model), "name": name})
    records = []
    for p, key in zip(chosen, keys):
        answer = complete_reply(cached[key]["reply"], cached[key]["truncated"])
        if answer is not None:
            records.append({"id": p["id"], "category": p["category"],
                            "messages": [{"role": "user", "content": p["prompt"]},
                                         {"role": "assistant", "content": answer}]})
    if not records:
        raise MixError(f"{name or model} gave no usable reply to {len(chosen)} prompts (only whitespace or "
                       "special tokens: a random-init test model?); serve the general categories with files instead")
    return records

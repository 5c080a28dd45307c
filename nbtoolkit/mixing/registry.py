"""General-data categories backed by real sources: files you point at, or the model's own rehearsal replies.

    registry = GeneralDataRegistry()
    registry.add("instruction-following", "alpaca_5000.json")      # instruction/input/output, detected
    registry.add("math", "gsm8k/train.jsonl", limit=2000)           # question/answer with '#### 72' answers
    registry.add("baseline", "c4_demo.jsonl")                       # plain text -> "continue the text" rows
    registry.add_rehearsal()                                        # every category, offline (the base model)
    files = registry.write("general/", mix)                         # one chat JSONL per category of the mix

Sources may be JSONL, JSON, CSV/TSV or Parquet files, s3:// URIs, or `hf://datasets/<org>/<name>/<file>` when a
Hugging Face hub is reachable. Every source becomes chat records {"messages": [user, assistant]}.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nbtoolkit.errors import DataError, unknown_name_message
from nbtoolkit.mixing.config import CATEGORIES, MixConfig, MixError, check_category

# Schemas told from the columns, in the order they are tried.
SCHEMAS = ("chat", "alpaca", "gsm8k", "qa", "prompt_response", "text")
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
TEXT_PROMPT = "Continue the text:\n\n"
TEXT_HEAD_WORDS = 60
TEXT_TAIL_WORDS = 60


def detect_schema(columns: Sequence[str], sample_answer: str | None = None) -> str | None:
    """The general-data schema of a table with these columns (see SCHEMAS), or None."""
    cols = set(columns)
    if "messages" in cols:
        return "chat"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"question", "answer"} <= cols:
        return "gsm8k" if sample_answer is not None and "####" in sample_answer else "qa"
    if "prompt" in cols and cols & {"response", "completion", "output"}:
        return "prompt_response"
    if "text" in cols:
        return "text"
    return None


def _gsm8k_answer(answer: str) -> str:
    """GSM8K's worked answer without its calculator annotations, the final line made a sentence."""
    body, _, final = _GSM8K_CALC.sub("", answer).rpartition("####")
    return f"{body.strip()}\nThe answer is {final.strip()}." if body else answer.strip()


def _cut_words(words: list[str], limit: int) -> str:
    """The first `limit` words, ended at the last sentence end inside them when there is one past the middle."""
    text = " ".join(words[:limit])
    end = max(text.rfind(". "), text.rfind("? "), text.rfind("! "))
    return text[:end + 1] if end > len(text) / 2 else text


def text_to_chat(text: str) -> tuple[str, str] | None:
    """A plain document as a (prompt, continuation) pair, or None when it is too short to split."""
    words = text.split()
    if len(words) < 20:
        return None
    head_words = min(TEXT_HEAD_WORDS, len(words) // 2)
    head = _cut_words(words, head_words)
    rest = words[len(head.split()):]
    tail = _cut_words(rest, TEXT_TAIL_WORDS)
    return (TEXT_PROMPT + head, tail) if tail else None


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def frame_to_chat(frame, schema: str, *, source: str, question: str | None = None,
                  answer: str | None = None) -> tuple[list[dict], int]:
    """(chat records, rows skipped for a blank question or answer) of a table in one of SCHEMAS."""
    from nbtoolkit.data.loaders import as_text_column, require_columns

    records: list[dict] = []
    skipped = 0
    if question or answer:
        if not (question and answer):
            raise DataError("give both question= and answer= columns (or neither, to detect them)", source=source)
        schema = "qa"
    if schema == "chat":
        require_columns(frame, ["messages"], source=source)
        for row, messages in enumerate(frame["messages"].tolist(), 1):
            if not isinstance(messages, (list, np.ndarray)) or len(messages) < 2:
                raise DataError("messages must be a list of at least a user and an assistant turn", source=source,
                                row=row, column="messages")
            messages = [dict(m) for m in messages]
            if messages[-1].get("role") != "assistant" or not str(messages[-1].get("content", "")).strip():
                skipped += 1
                continue
            records.append({"messages": messages})
        return records, skipped
    if schema == "text":
        for text in as_text_column(frame, "text", source=source).tolist():
            pair = text_to_chat(text)
            if pair is None:
                skipped += 1
            else:
                records.append(_chat(*pair))
        return records, skipped
    if schema == "alpaca":
        instruction = as_text_column(frame, "instruction", source=source).tolist()
        extra = (as_text_column(frame, "input", source=source).tolist() if "input" in frame.columns
                 else [""] * len(frame))
        questions = [f"{i.strip()}\n\n{x.strip()}" if x.strip() else i.strip() for i, x in zip(instruction, extra)]
        answers = as_text_column(frame, "output", source=source).tolist()
    elif schema in ("qa", "gsm8k"):
        q_col, a_col = question or "question", answer or "answer"
        questions = as_text_column(frame, q_col, source=source).tolist()
        answers = as_text_column(frame, a_col, source=source).tolist()
        if schema == "gsm8k":
            answers = [_gsm8k_answer(a) for a in answers]
    elif schema == "prompt_response":
        a_col = next(c for c in ("response", "completion", "output") if c in frame.columns)
        questions = as_text_column(frame, "prompt", source=source).tolist()
        answers = as_text_column(frame, a_col, source=source).tolist()
    else:
        raise DataError(unknown_name_message("general-data schema", schema, SCHEMAS), source=source)
    for q, a in zip(questions, answers):
        if q.strip() and a.strip():
            records.append(_chat(q.strip(), a.strip()))
        else:
            skipped += 1
    return records, skipped


def _fetch(location: str) -> str:
    """A local path for `hf://datasets/<org>/<name>/<file>` (downloaded once); other locations unchanged."""
    if not location.startswith("hf://"):
        return location
    parts = location.removeprefix("hf://").split("/")
    if len(parts) < 4 or parts[0] != "datasets":
        raise DataError("write a hub dataset file as hf://datasets/<org>/<name>/<path/to/file>", source=location)
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id=f"{parts[1]}/{parts[2]}", filename="/".join(parts[3:]), repo_type="dataset")
    except Exception as error:  # noqa: BLE001 - offline, missing repo, auth: one actionable message
        raise DataError(f"cannot fetch it from the Hugging Face hub ({type(error).__name__}: {error}); without a "
                        "reachable hub, download the file and pass its local path", source=location) from None


@dataclass(frozen=True)
class FileSource:
    """Rows of one file for one category."""

    category: str = field(metadata={"help": "the general-data category the rows serve"})
    location: str = field(metadata={"help": "path, s3:// URI or hf://datasets/<org>/<name>/<file>"})
    schema: str | None = field(default=None, metadata={"help": f"one of {SCHEMAS}; None: told from the columns"})
    question: str | None = field(default=None, metadata={"help": "question column (with answer=)"})
    answer: str | None = field(default=None, metadata={"help": "answer column (with question=)"})
    limit: int | None = field(default=None, metadata={"help": "keep a seeded sample of this many rows"})

    def __post_init__(self) -> None:
        check_category(self.category)
        if self.schema is not None and self.schema not in SCHEMAS:
            raise ValueError(unknown_name_message("general-data schema", self.schema, SCHEMAS))
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")

    def describe(self) -> str:
        return f"{Path(self.location).name if '://' not in self.location else self.location}"

    def load(self, seed: int = 0) -> tuple[list[dict], dict[str, Any]]:
        from nbtoolkit.data.loaders import load_table

        frame = load_table(_fetch(self.location))
        sample = None
        if self.schema is None and "answer" in frame.columns and len(frame):
            sample = str(frame["answer"].iloc[0])
        schema = self.schema or detect_schema([str(c) for c in frame.columns], sample)
        if schema is None and not (self.question and self.answer):
            raise DataError(f"cannot tell how to read its columns {list(map(str, frame.columns))}: give "
                            f"question= and answer= columns, or schema= one of {SCHEMAS}", source=self.location)
        records, skipped = frame_to_chat(frame, schema or "qa", source=self.location, question=self.question,
                                         answer=self.answer)
        if self.limit is not None and len(records) > self.limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(records), self.limit, replace=False))
            records = [records[i] for i in keep]
        return records, {"source": self.location, "schema": schema or "qa", "rows": len(records),
                         "skipped": skipped}


@dataclass(frozen=True)
class RehearsalSource:
    """The base model's own replies to the built-in prompts of its categories (self-synthesized rehearsal)."""

    model: Any = None
    categories: tuple[str, ...] = CATEGORIES
    max_new_tokens: int = 96
    per_category: int | None = None
    extra_prompts: tuple[tuple[str, str], ...] = ()  # (category, prompt) pairs added to the built-in ones

    def describe(self) -> str:
        from nbtoolkit.models import DEFAULT_MODEL, LoadedModel

        name = self.model.spec.name if isinstance(self.model, LoadedModel) else (self.model or DEFAULT_MODEL)
        return f"rehearsal: replies of {name}"

    def load(self, categories: Sequence[str], progress: bool = True) -> dict[str, list[dict]]:
        """Chat records per category (generated in one batch for all of them, or read from the cache)."""
        from nbtoolkit.mixing.rehearsal import synthesize_rehearsal

        from nbtoolkit.mixing.prompts import rehearsal_prompts

        prompts = rehearsal_prompts(categories, per_category=self.per_category)
        prompts += [{"id": f"{c}-x{i:04d}", "category": c, "prompt": p}
                    for i, (c, p) in enumerate(self.extra_prompts) if c in categories]
        records = synthesize_rehearsal(self.model, prompts=prompts, max_new_tokens=self.max_new_tokens,
                                       progress=progress)
        by_category: dict[str, list[dict]] = {c: [] for c in categories}
        for record in records:
            by_category[record["category"]].append({"messages": record["messages"], "id": record["id"]})
        return by_category


# Public general data: category -> its file under a data directory ($NBTOOLKIT_DATA_DIR or the one passed in).
# Alpaca is CC BY-NC 4.0 (research only), GSM8K MIT, the C4 sample ODC-BY.
KNOWN_GENERAL_FILES = {"instruction-following": "alpaca-5k/alpaca_5000.json", "math": "gsm8k/train.jsonl",
                       "baseline": "c4-demo/c4_demo.jsonl"}


class GeneralDataRegistry:
    """Which sources serve each general-data category; loads them into chat records and writes them out."""

    def __init__(self) -> None:
        self._files: dict[str, list[FileSource]] = {}
        self._rehearsal: RehearsalSource | None = None
        self._rehearsal_rows: dict[str, list[dict]] = {}

    @classmethod
    def default(cls, data_dir: str | os.PathLike | None = None, *, model: Any = None, limit: int | None = None,
                per_category: int | None = None, max_new_tokens: int = 96) -> GeneralDataRegistry:
        """Everything available offline: the KNOWN_GENERAL_FILES found in a data directory (data_dir,
        $NBTOOLKIT_DATA_DIR, ./data or a shared/data folder; `limit` rows each) and self-synthesized rehearsal by
        `model` (None: the embedded model; `per_category` prompts each) for every other category."""
        from nbtoolkit.forgetting import benchmark_dirs

        registry = cls()
        for category, relative in KNOWN_GENERAL_FILES.items():
            found = next((d / relative for d in benchmark_dirs(data_dir) if (d / relative).is_file()), None)
            if found is not None:
                registry.add(category, found, limit=limit)
        registry.add_rehearsal(model, max_new_tokens=max_new_tokens, per_category=per_category)
        return registry

    def add(self, category: str, location: str | os.PathLike, *, schema: str | None = None,
            question: str | None = None, answer: str | None = None, limit: int | None = None) -> FileSource:
        """Serve `category` (one of the SDK's names) with the rows of a file; a category may have several."""
        source = FileSource(category, str(location), schema, question, answer, limit)
        if "://" not in source.location and not Path(source.location).expanduser().exists():
            raise DataError("file not found", source=source.location)
        self._files.setdefault(category, []).append(source)
        return source

    def add_rehearsal(self, model: Any = None, *, categories: Sequence[str] | None = None,
                      max_new_tokens: int = 96, per_category: int | None = None) -> RehearsalSource:
        """Serve categories (default: all) that have no file with the model's own replies to our prompts
        (self-synthesized rehearsal; model None is the embedded default). per_category limits the prompts."""
        chosen = tuple(check_category(c) for c in (categories or CATEGORIES))
        extra = self._rehearsal.extra_prompts if self._rehearsal is not None else ()
        self._rehearsal = RehearsalSource(model, chosen, max_new_tokens, per_category, extra)
        self._rehearsal_rows = {}
        return self._rehearsal

    def add_rehearsal_prompts(self, category: str, location: str | os.PathLike, *, limit: int | None = None,
                              seed: int = 0, **columns: Any) -> int:
        """Rehearse `category` on more prompts: the questions of a file (any schema FileSource reads; its answers
        are ignored), answered by the rehearsal model. Needs add_rehearsal() first; returns the prompts added."""
        if self._rehearsal is None:
            raise MixError("call registry.add_rehearsal(model) before adding rehearsal prompts")
        check_category(category)
        if category in self._files:
            raise MixError(f"{category!r} is served by files, which win over rehearsal; add the prompts to "
                           "another category or drop the files")
        records, _ = FileSource(category, str(location), limit=limit, **columns).load(seed)
        prompts = [r["messages"][-2]["content"] for r in records]
        self._rehearsal = replace(self._rehearsal,
                                  categories=tuple(dict.fromkeys([*self._rehearsal.categories, category])),
                                  extra_prompts=self._rehearsal.extra_prompts + tuple((category, p) for p in prompts))
        self._rehearsal_rows.pop(category, None)
        return len(prompts)

    @property
    def categories(self) -> list[str]:
        """Categories with a source, in the SDK's order."""
        served = set(self._files) | set(self._rehearsal.categories if self._rehearsal else ())
        return [c for c in CATEGORIES if c in served]

    def describe(self):
        """A DataFrame: category -> its sources."""
        import pandas as pd

        rows = []
        for category in self.categories:
            files = self._files.get(category)
            sources = [f.describe() for f in files] if files else [self._rehearsal.describe()]
            rows.append({"category": category, "sources": ", ".join(sources)})
        return pd.DataFrame(rows, columns=["category", "sources"]).set_index("category")

    def load(self, category: str, *, seed: int = 0, progress: bool = True) -> tuple[list[dict], list[dict]]:
        """(chat records, one info dict per source) of a category; files win over rehearsal."""
        check_category(category)
        if category in self._files:
            records, infos = [], []
            for source in self._files[category]:
                rows, info = source.load(seed)
                records += rows
                infos.append(info)
            return records, infos
        if self._rehearsal is not None and category in self._rehearsal.categories:
            if category not in self._rehearsal_rows:
                self._rehearsal_rows.update(self._rehearsal.load([category], progress=progress))
            rows = self._rehearsal_rows[category]
            return rows, [{"source": self._rehearsal.describe(), "schema": "rehearsal", "rows": len(rows),
                           "skipped": 0}]
        raise MixError(f"no source serves category {category!r}; served: {', '.join(self.categories) or 'none'} "
                       "(add a file with registry.add(category, path), or registry.add_rehearsal())")

    def write(self, out_dir: str | os.PathLike, mix: MixConfig | None = None, *, seed: int = 0,
              progress: bool = True) -> dict[str, str]:
        """One chat JSONL per category (the mix's categories, or every served one) in out_dir; returns
        {category: path} and writes out_dir/sources.json describing where each file came from."""
        from nbtoolkit.data.formats import write_jsonl
        from nbtoolkit.runtime.events import write_json_atomic

        wanted = list(mix.category_weights) if mix is not None else self.categories
        missing = [c for c in wanted if c not in self.categories]
        if missing:
            raise MixError(f"the mix gives weight to {', '.join(missing)}, which no source serves; add sources, "
                           f"call registry.add_rehearsal(), or use mix.restricted_to({self.categories})")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self._rehearsal is not None:  # one generation batch for every rehearsed category
            pending = [c for c in wanted if c not in self._files and c in self._rehearsal.categories
                       and c not in self._rehearsal_rows]
            if pending:
                self._rehearsal_rows.update(self._rehearsal.load(pending, progress=progress))
        files, described = {}, {}
        for category in wanted:
            records, infos = self.load(category, seed=seed, progress=progress)
            if not records:
                raise MixError(f"category {category!r} has no usable rows ({infos})")
            files[category] = str(write_jsonl(records, out / f"{category}.jsonl").resolve())
            described[category] = {"file": files[category], "rows": len(records), "sources": infos}
        write_json_atomic(out / "sources.json", described)
        return files


def mixing_extra(mix: MixConfig, general_files: Mapping[str, str]) -> dict[str, Any]:
    """JobSpec.extra for an SFT job that trains on `mix`: {"mix": ..., "general_data": {category: file}}."""
    missing = [c for c in mix.category_weights if c not in general_files]
    if missing:
        raise MixError(f"no general data file for {', '.join(missing)} (write them with GeneralDataRegistry.write)")
    for category, path in general_files.items():
        if not Path(path).is_file():
            raise DataError("file not found", source=str(path))
    return {"mix": mix.to_dict(),
            "general_data": {c: str(Path(general_files[c]).resolve()) for c in mix.category_weights}}

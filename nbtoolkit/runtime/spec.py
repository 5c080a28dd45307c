"""What to run: a JobSpec (kind, config, model, data, name), its JSON form, and the job.json every runtime writes
into a run directory (the spec, the files as the worker sees them, the attempt, the versions)."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.errors import unknown_name_message
from nbtoolkit.runtime.events import JOB_FILE, read_json, utc_now, write_json_atomic
from nbtoolkit.training.config import CONFIGS, MethodConfig, config_from_dict, config_to_dict

BUILTIN_KINDS = ("sft_lora", "sft_full", "rft_lora", "eval")
TRAINING_KINDS = ("sft_lora", "sft_full", "rft_lora")
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
JOB_FORMAT = "nbtoolkit.job/1"
SPEC_FIELDS = ("kind", "config", "model", "train_file", "eval_file", "labels", "name", "extra")


@dataclass(frozen=True)
class JobSpec:
    """One job: what to run (kind + config), on which model and data, under which name.

    A custom kind `package.module:function` (or `path/to/file.py:function`) is called like the built-in job
    functions: `function(config, *, model, train_file, eval_file, labels, run_dir, resume, log, stop_event,
    **extra)`, receiving the keywords its signature names. Round-trips through JSON (`to_json` / `from_json`).
    """

    kind: str = field(metadata={"help": "sft_lora, sft_full, rft_lora, eval, or package.module:function"})
    config: MethodConfig | None = field(default=None, metadata={
        "help": "the method's hyperparameters; None: the kind's local defaults"})
    model: str | None = field(default=None, metadata={"help": "model name, Hugging Face id or directory"})
    train_file: str | None = field(default=None, metadata={"help": "training JSONL (chat, converse or rft)"})
    eval_file: str | None = field(default=None, metadata={"help": "evaluation JSONL (chat or gen_qa)"})
    labels: tuple[str, ...] | None = field(default=None, metadata={"help": "declared label set, e.g. HQ,LQ_EDIT"})
    name: str | None = field(default=None, metadata={
        "help": "job name (letters, digits, hyphens; 1-63 chars); prefixes the run directory"})
    extra: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "more keyword arguments for the job function (JSON values)"})

    def __post_init__(self) -> None:
        put = functools.partial(object.__setattr__, self)
        kind = str(self.kind).strip()
        if kind not in BUILTIN_KINDS:
            module, sep, function = kind.rpartition(":")
            if not sep:
                raise ValueError(unknown_name_message("job kind", kind, BUILTIN_KINDS)
                                 + "; or 'package.module:function' for a job function of your own")
            if not module or not function.isidentifier():
                raise ValueError(f"job kind {kind!r}: write a custom kind as 'package.module:function'")
        put("kind", kind)
        config = self.config
        if isinstance(config, dict):
            config = config_from_dict(config)
        if kind in BUILTIN_KINDS:
            expected = CONFIGS[kind]
            if config is None:
                config = expected.for_platform("local")
            elif type(config) is not expected:
                raise ValueError(f"job kind {kind!r} needs a {expected.__name__}, got {type(config).__name__}")
        elif config is not None and not isinstance(config, MethodConfig):
            raise TypeError(f"config must be a MethodConfig (e.g. SFTLoraConfig), got {type(config).__name__}")
        put("config", config)
        for name in ("model", "train_file", "eval_file"):
            value = getattr(self, name)
            put(name, None if value is None or str(value).strip() == "" else str(value))
        if self.labels is not None:
            labels = (self.labels,) if isinstance(self.labels, str) else tuple(str(x) for x in self.labels)
            put("labels", labels or None)
        name = self.name if self.name is not None else default_job_name(kind)
        if not JOB_NAME_PATTERN.match(name):
            raise ValueError(f"job name {name!r} is not allowed: use 1-63 letters, digits and hyphens, starting and "
                             f"ending with a letter or digit (e.g. {default_job_name(name) !r})")
        put("name", name)
        extra = dict(self.extra or {})
        try:
            json.dumps(extra)
        except TypeError as error:
            raise ValueError(f"extra must hold JSON values (it is saved in job.json): {error}") from None
        put("extra", extra)
        if kind in BUILTIN_KINDS and self.model is None:
            raise ValueError(f"a {kind} job needs a model (a name such as 'smollm2-135m-instruct' or a directory)")
        if kind in TRAINING_KINDS and self.train_file is None:
            raise ValueError(f"a {kind} job needs train_file (a JSONL written by prepare)")
        if kind == "eval" and self.eval_file is None and self.train_file is None:
            raise ValueError("an eval job needs eval_file (a JSONL of chat or gen_qa records)")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": config_to_dict(self.config), "model": self.model,
                "train_file": self.train_file, "eval_file": self.eval_file,
                "labels": list(self.labels) if self.labels is not None else None, "name": self.name,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        unknown = sorted(set(data) - set(SPEC_FIELDS))
        if unknown:
            raise ValueError(unknown_name_message("JobSpec field", unknown[0], sorted(SPEC_FIELDS)))
        data = dict(data)
        if data.get("config") is not None:
            data["config"] = config_from_dict(data["config"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))


def default_job_name(text: str) -> str:
    """A valid job name made from a kind or a rejected name."""
    base = text.rpartition(":")[2] or text
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:63].strip("-")
    return name or "job"


@functools.lru_cache(maxsize=1)
def runtime_versions() -> dict[str, str | None]:
    """Python and the library versions a job.json records."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("nbtoolkit", "torch", "transformers", "peft", "trl"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def job_record(spec: JobSpec, *, files: dict[str, str | None], command: list[str], cwd: str,
               runtime: dict[str, Any], attempt: int, resume: bool, **more: Any) -> dict[str, Any]:
    """The job.json of one attempt: the spec, the model and data files as the worker reads them (`files`: model,
    train_file, eval_file), the worker command and where the runtime ran it; `more` adds runtime-specific keys."""
    return {"format": JOB_FORMAT, "kind": spec.kind, "spec": spec.to_dict(), "config": config_to_dict(spec.config),
            "config_changed": spec.config.changed() if spec.config is not None else {},
            "model": files.get("model"), "train_file": files.get("train_file"), "eval_file": files.get("eval_file"),
            "attempt": attempt, "resume": resume, "created": utc_now(), "command": command, "cwd": cwd, **more,
            "runtime": runtime, "versions": runtime_versions()}


def next_attempt(run_dir: str | os.PathLike | None) -> int:
    """1 for a new run directory, else the attempt after the one its job.json records."""
    if run_dir is None:
        return 1
    return int((read_json(Path(run_dir) / JOB_FILE) or {}).get("attempt", 0)) + 1


def write_job_record(run_dir: str | os.PathLike, record: dict[str, Any], **more: Any) -> dict[str, Any]:
    """Write run_dir/job.json: `record` (with `more` keys) plus the attempts so far and this launch."""
    run_dir = Path(run_dir)
    history = (read_json(run_dir / JOB_FILE) or {}).get("attempts", []) if record.get("resume") else []
    data = {**record, **more, "attempts": [*history, {"attempt": record["attempt"], "launched": utc_now(),
                                                      "resume": bool(record.get("resume"))}]}
    write_json_atomic(run_dir / JOB_FILE, data)
    return data

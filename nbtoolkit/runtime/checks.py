"""The checks before a launch, shared by every runtime: each returns a Check, a launch gathers them in a
DryRunReport, and a failed one stops the launch with LaunchError (what `launch(spec, dry_run=True)` shows)."""

from __future__ import annotations

import html
import importlib.util
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from nbtoolkit.data import Problem, load_table, read_jsonl, validate_records
from nbtoolkit.errors import ModelError
from nbtoolkit.estimate.local import estimate_text
from nbtoolkit.models import DEFAULT_MODEL, embedded_cache_dir, embedded_gguf_path, model_path, resolve_model
from nbtoolkit.runtime.spec import BUILTIN_KINDS, JobSpec
from nbtoolkit.runtime.status import JobError
from nbtoolkit.runtime.worker import load_job_function
from nbtoolkit.theme import COLOURS
from nbtoolkit.training.config import MethodConfig, RFTLoraConfig

# Record formats each built-in kind reads; the format of a file is told from its first record.
KIND_FORMATS = {"sft_lora": ("chat",), "sft_full": ("chat",), "rft_lora": ("rft", "chat"),
                "eval": ("gen_qa", "chat", "rft", "converse")}
# Modules behind the built-in kinds, checked without importing them (importing torch takes seconds).
KIND_MODULES = {"sft_lora": "nbtoolkit.training.sft", "sft_full": "nbtoolkit.training.sft",
                "rft_lora": "nbtoolkit.training.rft", "eval": "nbtoolkit.evaluation"}
DISK_MARGIN_BYTES = 200 * 1024**2


class Check(NamedTuple):
    """One pre-launch check: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass
class DryRunReport:
    """Every check a launch runs, the exact command, and the job.json it would write. Nothing was launched."""

    ok: bool
    checks: list[Check]
    command: list[str]
    job_json: dict[str, Any]
    run_dir: str = ""
    estimate: Any = None  # nbtoolkit.estimate.local.JobEstimate of a built-in job whose checks passed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    def __str__(self) -> str:
        head = ("dry run: all checks passed (nothing launched)" if self.ok else
                f"dry run: {len(self.failed)} of {len(self.checks)} checks failed (nothing launched)")
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [head] + [f"  {'ok  ' if c.ok else 'FAIL'} {c.name.ljust(width)}  {c.detail}" for c in self.checks]
        if self.ok:
            lines.append(f"estimate: {estimate_text(self.estimate)}")
        lines += [f"run dir: {self.run_dir}", f"command: {self.command_line}",
                  "job.json:", json.dumps(self.job_json, indent=2)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f'<tr><td style="color:{COLOURS["ok"] if c.ok else COLOURS["error"]}">{"✓" if c.ok else "✗"}</td>'
            f"<td>{html.escape(c.name)}</td><td style='text-align:left'>{html.escape(c.detail)}</td></tr>"
            for c in self.checks)
        head = ("all checks passed" if self.ok else f"{len(self.failed)} of {len(self.checks)} checks failed")
        estimate = (f"<div class='nbt-estimate'>estimate: {html.escape(estimate_text(self.estimate))}</div>"
                    if self.ok else "")
        return (f'<div class="nbt-dry-run"><b>Dry run: {head}</b> (nothing launched)<table>{rows}</table>'
                f"{estimate}run dir: <code>{html.escape(self.run_dir)}</code><br>command:"
                f"<pre>{html.escape(self.command_line)}</pre><details><summary>job.json</summary>"
                f"<pre>{html.escape(json.dumps(self.job_json, indent=2))}</pre></details></div>")


class LaunchError(JobError, ValueError):
    """The checks before a launch failed; `.report` holds every check (what launch(..., dry_run=True) shows)."""

    def __init__(self, report: DryRunReport) -> None:
        self.report = report
        failed = "\n".join(f"  - {c.name}: {c.detail}" for c in report.failed)
        super().__init__(f"not launched; {len(report.failed)} check(s) failed:\n{failed}")


def detect_format(record: Any) -> str | None:
    """The record format (converse, rft, gen_qa, cpt, chat) told from one record's keys."""
    if not isinstance(record, dict):
        return None
    if "schemaVersion" in record:
        return "converse"
    if "reference_answer" in record:
        return "rft"
    if "query" in record and "response" in record:
        return "gen_qa"
    if "messages" in record:
        return "chat"
    if set(record) == {"text"}:
        return "cpt"
    return None


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_job_function(spec: JobSpec, python_paths: list[str]) -> Check:
    if spec.kind in BUILTIN_KINDS:
        module = KIND_MODULES[spec.kind]
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            return Check("job function", False, f"{spec.kind} needs {', '.join(missing)}: pip install -e '.[local]'")
        if importlib.util.find_spec(module) is None:
            return Check("job function", False, f"{module} is not in this nbtoolkit version")
        return Check("job function", True, f"{spec.kind} runs {module}")
    added = [p for p in python_paths if p not in sys.path]
    sys.path[:0] = added
    try:
        function = load_job_function(spec.kind)
    except Exception as error:  # noqa: BLE001 - any import problem is the user's to see
        return Check("job function", False, f"cannot load {spec.kind}: {type(error).__name__}: {error}")
    finally:
        for p in added:
            sys.path.remove(p)
    return Check("job function", True, f"{spec.kind} ({function.__module__}.{function.__qualname__})")


def check_config(config: MethodConfig | None, platform: str, why: str) -> Check:
    """The config's bounds hold and it was made for `platform` (the local trainer or a Nova recipe); `why` says
    why another platform's config does not fit here."""
    if config is None:
        return Check("config", True, "no config (custom job)")
    try:
        type(config).from_dict(config.to_dict())  # re-runs the bounds
    except ValueError as error:
        return Check("config", False, str(error))
    if config.platform != platform:
        return Check("config", False, f"platform={config.platform!r}: {why}; use "
                     f"{type(config).__name__}.for_platform({platform!r}, ...)")
    changed = ", ".join(f"{k}={v}" for k, v in config.changed().items()) or f"{platform} defaults"
    return Check("config", True, f"{config.METHOD} ({changed})")


def check_labels(spec: JobSpec) -> Check | None:
    """The binary_label reward of an RFT job needs the label set."""
    if spec.kind == "rft_lora" and not spec.labels and getattr(spec.config, "reward", "") == "binary_label":
        return Check("labels", False, "the binary_label reward extracts a label from each reply: give labels, "
                     "e.g. labels=('HQ', 'LQ_EDIT', 'LQ_CLOSE')")
    return None


def check_disk(run_dir: Path, model_bytes: int) -> Check:
    need = 3 * model_bytes + DISK_MARGIN_BYTES
    free = shutil.disk_usage(existing_ancestor(run_dir)).free
    return Check("disk", free >= need, f"{free / 1e9:.1f} GB free, about {need / 1e9:.2f} GB needed "
                 "(3x the model + 200 MB)")


def check_model(spec: JobSpec) -> tuple[Check, int, str | None]:
    """(check, model size in bytes, the model as the worker gets it: a name or an absolute directory)."""
    if spec.model is None:
        ok = spec.kind not in BUILTIN_KINDS
        return Check("model", ok, "none (the job function needs none)" if ok else "a model is required"), 0, None
    try:
        model = resolve_model(spec.model)
    except ModelError as error:
        return Check("model", False, str(error)), 0, spec.model
    if model.kind == "nova":
        return Check("model", False, f"{model.name!r} is an Amazon Nova model: Nova runs on SageMaker only, not on "
                     f"this machine. Launch it with the SageMaker runtime, or pick a local model such as "
                     f"{DEFAULT_MODEL!r}"), 0, spec.model
    handed = str(Path(model.source).resolve()) if model.kind == "local" else spec.model
    if model.kind == "embedded":
        cache = embedded_cache_dir()
        if (cache / "config.json").is_file() and any(cache.glob("*.safetensors")):
            path = cache
        else:
            try:
                gguf = embedded_gguf_path()
            except ModelError as error:
                return Check("model", False, str(error)), 0, handed
            size = 4 * (model.parameters or 0)
            return Check("model", True, f"{model.name} (embedded; converted once from {gguf.name} at "
                         "the job's start, about 20 s)"), size, handed
    else:
        try:
            path = model_path(model)
        except ModelError as error:
            return Check("model", False, str(error)), 0, handed
    if not (path / "config.json").is_file():
        return Check("model", False, f"{path} has no config.json: not a model directory"), 0, handed
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        return Check("model", False, f"{path} holds no weights (*.safetensors or pytorch_model*.bin)"), 0, handed
    size = directory_bytes(path)
    return Check("model", True, f"{model.name} ({model.kind}, {size / 1e6:.0f} MB at {path})"), size, handed


def check_data(what: str, path_text: str, spec: JobSpec, *, platform: str = "local") -> tuple[Check, int]:
    """(check, rows) of a local data file: it exists, every record parses, its format suits the kind, and it
    validates for `platform` (errors name the rows)."""

    path = Path(path_text).expanduser()
    if not path.exists():
        return Check(what, False, f"no file at {path.absolute()}"), 0
    if not path.is_file():
        return Check(what, False, f"{path} is a directory; pass a JSONL file"), 0
    records: list[Any] = []
    try:
        if spec.kind == "eval" and path.suffix.lower() not in (".jsonl", ".ndjson"):
            records = load_table(path).to_dict(orient="records")  # evaluate() also reads CSV, JSON, Parquet
        else:
            for record in read_jsonl(path):
                records.append(record)
    except json.JSONDecodeError as error:
        return Check(what, False, f"{path.name}: record {len(records) + 1} is not valid JSON ({error.msg})"), 0
    except UnicodeDecodeError:
        return Check(what, False, f"{path.name} is not UTF-8 text (a JSONL file is expected)"), 0
    except (ValueError, OSError) as error:
        return Check(what, False, f"{path.name}: {error}"), 0
    if not records:
        return Check(what, False, f"{path.name} holds no records"), 0
    fmt = detect_format(records[0])
    if fmt is None:
        keys = sorted(records[0]) if isinstance(records[0], dict) else type(records[0]).__name__
        return Check(what, False, f"{path.name}: cannot tell the record format from the first record ({keys})"), 0
    allowed = KIND_FORMATS.get(spec.kind)
    if allowed and fmt not in allowed:
        return Check(what, False, f"{path.name} holds {fmt} records; {spec.kind} reads {' or '.join(allowed)}"), 0
    report = validate_records(records, fmt, labels=spec.labels, platform=platform)
    if fmt == "chat" and spec.kind in BUILTIN_KINDS:
        # Trainers and the evaluator take the last message as the answer: it must be the assistant's.
        flagged = {p.row for p in report.errors if p.rule == "role_order"}
        for row, record in enumerate(records, 1):
            messages = record.get("messages") if isinstance(record, dict) else None
            if row not in flagged and isinstance(messages, list) and messages and \
                    isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
                report.problems.append(Problem("role_order", "the last message must be the assistant's answer",
                                               row, "messages"))
        report.problems.sort(key=lambda p: (p.row is None, p.row or 0))
    if not report.ok:
        errors = report.errors
        rows = sorted({p.row for p in errors if p.row is not None})
        where = f" in rows {', '.join(map(str, rows[:10]))}{', ...' if len(rows) > 10 else ''}" if rows else ""
        detail = (f"{path.name} ({fmt}): {len(errors)} errors{where}; "
                  + "; ".join(str(p) for p in errors[:3]) + ("; ..." if len(errors) > 3 else ""))
        return Check(what, False, detail), len(records)
    warnings = f", {len(report.warnings)} warnings" if report.warnings else ""
    return Check(what, True, f"{path.name}: {len(records):,} {fmt} rows{warnings}"), len(records)


def check_rows(spec: JobSpec, rows: int) -> Check | None:
    """One optimizer step must fit in the data: global_batch_size rows (RFT: prompts = batch / number_generation)."""
    batch = getattr(spec.config, "global_batch_size", None)
    if batch is None:
        return None
    if isinstance(spec.config, RFTLoraConfig):
        need = batch // spec.config.number_generation
        detail = (f"{rows:,} prompts; a step takes {need} (global_batch_size {batch} / number_generation "
                  f"{spec.config.number_generation})")
    else:
        need, detail = batch, f"{rows:,} training rows, global_batch_size {batch}"
    return Check("rows", rows >= need, detail + ("" if rows >= need else ": lower global_batch_size or add rows"))

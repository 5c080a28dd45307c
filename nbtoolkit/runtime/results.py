"""What a finished job leaves behind, as one object that dumps to JSON and loads again in a fresh kernel."""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nbtoolkit.runtime.events import (
    FAILED,
    IN_PROGRESS,
    JOB_FILE,
    RESULT_FILE,
    STATUS_FILE,
    read_json,
    read_metrics,
    write_json_atomic,
)
from nbtoolkit.runtime.status import JobError, read_status
from nbtoolkit.theme import COLOURS

DUMP_FORMAT = "nbtoolkit.TrainingResult/1"
# Where a job's outputs land when its returned dict does not say: path name -> candidates inside the run dir.
_DEFAULT_PATHS = {
    "model_dir": ("model", "final_model", "merged"),
    "adapter_dir": ("adapter", "final_adapter"),
    "predictions": ("eval/predictions.jsonl", "predictions.jsonl"),
}
_PATH_ALIASES = {"model": "model_dir", "output_dir": "model_dir", "merged_dir": "model_dir", "adapter": "adapter_dir",
                 "predictions_file": "predictions", "predictions_path": "predictions"}


@dataclass
class TrainingResult:
    """A job's outcome: status, a metrics summary, where its outputs are, and the config it ran with.

    `metrics` merges the last metrics.jsonl row (e.g. loss at the final step) with the numbers the job function
    returned (which win); `output` is the job function's dict as returned. Load it back with
    `TrainingResult.load(run_dir_or_dump_file)`.
    """

    run_dir: str
    kind: str
    status: str
    reason: str | None = None
    stopped: bool = False
    name: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str | None] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    model: str | None = None
    started: str | None = None
    ended: str | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def model_dir(self) -> Path | None:
        return _path_or_none(self.paths.get("model_dir"))

    @property
    def adapter_dir(self) -> Path | None:
        return _path_or_none(self.paths.get("adapter_dir"))

    @property
    def predictions(self) -> Path | None:
        return _path_or_none(self.paths.get("predictions"))

    def history(self):
        """metrics.jsonl of the run as a DataFrame (one row per logged step)."""
        import pandas as pd

        return pd.DataFrame(read_metrics(self.run_dir))

    # -- JSON round trip ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": DUMP_FORMAT, **asdict(self)}

    def dump(self, path: str | os.PathLike) -> Path:
        """Write this result as JSON (atomically); `TrainingResult.load(path)` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(path, _clean(self.to_dict()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path_or_run_dir: str | os.PathLike) -> TrainingResult:
        """A result dumped with `.dump(path)`, or the result of a run directory (its result.json and status)."""
        path = Path(path_or_run_dir)
        if path.is_dir():
            return cls.from_run_dir(path)
        if not path.exists():
            raise FileNotFoundError(f"no result at {path}: pass a run directory or a file written by .dump()")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") == DUMP_FORMAT:
            return cls.from_dict(data)
        if path.name == RESULT_FILE:
            return cls.from_run_dir(path.parent)
        raise ValueError(f"{path} is neither a TrainingResult dump nor a run directory's {RESULT_FILE}")

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike) -> TrainingResult:
        """Build the result from what the worker wrote; a run without result.json reports its status."""
        run_dir = Path(run_dir)
        job = read_json(run_dir / JOB_FILE)
        if job is None:
            raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {JOB_FILE}")
        result = read_json(run_dir / RESULT_FILE)
        status = read_json(run_dir / STATUS_FILE, {})
        if status.get("state") == IN_PROGRESS:
            live = read_status(run_dir)  # FAILED when the worker died without a word (even if unrecorded)
            status = {**status, "state": live.state, "reason": live.reason, "stopped": live.stopped,
                      "ended": live.ended}
        if result is None or result.get("attempt", 0) < status.get("attempt", 0):
            # No result (yet), or only an older attempt's: the status file is the truth.
            result = {"status": status.get("state", IN_PROGRESS), "reason": status.get("reason"),
                      "stopped": status.get("stopped", False), "started": status.get("started"),
                      "ended": status.get("ended"), "output": {}}
        output = result.get("output") or {}
        spec = job.get("spec", {})
        rows = read_metrics(run_dir)
        summary = {k: v for k, v in (rows[-1] if rows else {}).items() if k != "time" and _is_number(v)}
        summary.update({k: v for k, v in output.items() if _is_number(v)})
        if isinstance(output.get("metrics"), dict):
            summary.update(output["metrics"])
        return cls(run_dir=str(run_dir.resolve()), kind=job.get("kind", spec.get("kind", "")),
                   status=result.get("status", FAILED), reason=result.get("reason"),
                   stopped=bool(result.get("stopped", False)), name=spec.get("name"), metrics=summary,
                   paths=_find_paths(run_dir, output), config=job.get("config"), model=job.get("model"),
                   started=result.get("started"), ended=result.get("ended"), seconds=result.get("seconds"),
                   peak_rss_mb=result.get("peak_rss_mb"), output=output)

    # -- display --------------------------------------------------------------------------------------------------

    def __str__(self) -> str:
        head = f"{self.name or self.kind} ({self.kind}): {self.status}"
        if self.reason:
            head += f" - {self.reason}"
        if self.seconds is not None:
            head += f" after {self.seconds:.1f} s"
        if self.peak_rss_mb is not None:
            head += f", peak memory {self.peak_rss_mb / 1024:.1f} GB"
        lines = [head, f"  run dir: {self.run_dir}"]
        if self.metrics:
            lines.append("  metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items()))
        lines += [f"  {k}: {v}" for k, v in self.paths.items() if v]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"COMPLETED": COLOURS["ok"], "FAILED": COLOURS["error"]}.get(self.status, COLOURS["warning"])
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in self.metrics.items())
        paths = "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>"
                        for k, v in self.paths.items() if v)
        reason = f" - {html.escape(self.reason)}" if self.reason else ""
        return (f'<div class="nbt-result"><b>{html.escape(self.name or self.kind)}</b> ({html.escape(self.kind)}): '
                f'<span style="color:{colour};font-weight:bold">{self.status}</span>{reason}'
                f"<br><code>{html.escape(self.run_dir)}</code>"
                + (f"<table>{rows}</table>" if rows else "") + (f"<ul>{paths}</ul>" if paths else "") + "</div>")


def _find_paths(run_dir: Path, output: dict[str, Any]) -> dict[str, str | None]:
    """Output locations the job returned (a "paths" dict, or keys ending in _dir/_file/_path, or predictions),
    else the usual places inside the run directory."""
    found = {k: v for k, v in output.items() if k.endswith(("_dir", "_file", "_path")) or k == "predictions"}
    if isinstance(output.get("paths"), dict):
        found.update(output["paths"])
    paths: dict[str, str | None] = {}
    for key, value in found.items():
        if isinstance(value, str | os.PathLike) or value is None:
            key = _PATH_ALIASES.get(key, key)
            if value is not None or key not in paths:
                paths[key] = None if value is None else str(value)
    for key, candidates in _DEFAULT_PATHS.items():
        if paths.get(key) is None:
            found = next((run_dir / c for c in candidates if (run_dir / c).exists()), None)
            paths[key] = str(found.resolve()) if found else None
    return paths


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clean(value: Any) -> Any:
    """NaN and infinity become null so the dump is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class JobFailed(JobError):
    """Job.wait() saw the job end FAILED; `.result` holds the TrainingResult, `.logs` the log tail."""

    def __init__(self, result: TrainingResult, logs: str) -> None:
        self.result = result
        self.logs = logs
        super().__init__(f"job {result.name!r} FAILED: {result.reason} (run dir {result.run_dir})\n{logs}")

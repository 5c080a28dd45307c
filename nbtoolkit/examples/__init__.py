"""A bundled example run: the stage summary and per-row predictions of a finished run, shipped as package data so
the results views open on real results before the user has trained anything.

    from nbtoolkit.examples import example_available, example_results
    if example_available():
        results = example_results()          # {"baseline (example)": EvalResult, ...}

The files live in `nbtoolkit/examples/run/` (stages.json plus one eval directory per stage, paths relative to it);
`pack_example_run(run_dir)` writes them from a pipeline output or notebook workdir. Stage names carry " (example)"
so every table, figure and filter that shows them says it is not the user's run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtoolkit.errors import NbtoolkitError
from nbtoolkit.stages import STAGES_FILE, eval_job_name

if TYPE_CHECKING:
    from nbtoolkit.evaluation import EvalResult

EXAMPLE_DIR = Path(__file__).resolve().parent / "run"
# Points the loaders at another packed run (a test's, or one you packed yourself) instead of the bundled one.
EXAMPLE_DIR_ENV = "NBTOOLKIT_EXAMPLE_DIR"
EXAMPLE_SUFFIX = " (example)"
# Keeps the wheel small: the example is read in seconds on 2 cores (the bundled one, 3 stages x 600 rows: 741 kB).
MAX_EXAMPLE_BYTES = 1_000_000


def example_available(directory: str | os.PathLike | None = None) -> bool:
    """True when an example run is bundled (or present in `directory`)."""
    return _root(directory).joinpath(STAGES_FILE).is_file()


def example_description(directory: str | os.PathLike | None = None) -> str:
    """What the example run is (the "example" entry of its stages.json), for the banner the views show."""
    summary = _summary(_root(directory))
    info = summary.get("example", {})
    return str(info.get("description") or "a finished run bundled with nbtoolkit")


def example_results(directory: str | os.PathLike | None = None) -> dict[str, EvalResult]:
    """{"<stage> (example)": EvalResult} of the bundled example run (or the packed run in `directory`)."""
    from nbtoolkit.evaluation import EvalResult

    root = _root(directory)
    summary = _summary(root)
    jobs = summary.get("jobs", {})
    results = {}
    for stage in summary.get("stages", {}):
        relative = jobs.get(eval_job_name(stage))
        if relative and (root / relative / "eval.json").is_file():
            results[f"{stage}{EXAMPLE_SUFFIX}"] = EvalResult.load(root / relative)
    if not results:
        raise NbtoolkitError(f"{root / STAGES_FILE} lists no evaluated stage")
    return results


def pack_example_run(source: str | os.PathLike, target: str | os.PathLike = EXAMPLE_DIR, *,
                     description: str, max_bytes: int = MAX_EXAMPLE_BYTES) -> Path:
    """Write a finished run (a directory with stages.json whose "jobs" name each stage's eval run) as an example:
    stages.json (stage metrics, an "example" entry with `description`) and eval-<stage>/ per evaluated stage.

    Raises NbtoolkitError when it would exceed `max_bytes` (evaluate fewer rows, or pass a larger bound)."""
    from nbtoolkit.runtime.events import read_json

    source, target = Path(source), Path(target)
    summary = read_json(source / STAGES_FILE)
    if summary is None:
        raise NbtoolkitError(f"no {STAGES_FILE} in {source}: pass a pipeline output directory or notebook workdir")
    staging = target.with_name(target.name + ".packing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _pack(source, summary, staging, description, max_bytes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _pack(source: Path, summary: dict[str, Any], staging: Path, description: str, max_bytes: int) -> None:
    from nbtoolkit.evaluation import EvalResult
    from nbtoolkit.runtime.events import write_json_atomic

    jobs = {}
    for stage in summary.get("stages", {}):
        run_dir = summary.get("jobs", {}).get(eval_job_name(stage))
        if not run_dir:
            continue
        run_dir = Path(run_dir) if Path(run_dir).is_absolute() else source / run_dir
        eval_dir = run_dir if (run_dir / "eval.json").is_file() else run_dir / "eval"
        result = EvalResult.load(eval_dir)
        if Path(result.model).is_absolute():  # a directory on the machine that ran it: name it, not its path
            result.model = f"the {stage} model of this run ({summary.get('model', 'base model')} fine-tuned)"
        result.save(staging / eval_job_name(stage))
        jobs[eval_job_name(stage)] = eval_job_name(stage)
    if not jobs:
        raise NbtoolkitError(f"{source / STAGES_FILE} lists no evaluated stage to pack")
    packed: dict[str, Any] = {key: summary[key] for key in ("profile", "model", "labels", "notes") if key in summary}
    packed.update(stages={s: m for s, m in summary["stages"].items() if eval_job_name(s) in jobs}, jobs=jobs,
                  example={"description": description})
    write_json_atomic(staging / STAGES_FILE, packed)
    size = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
    if size > max_bytes:
        raise NbtoolkitError(f"the example would take {size:,} bytes, above {max_bytes:,}: evaluate fewer rows")


def _root(directory: str | os.PathLike | None) -> Path:
    if directory is not None:
        return Path(directory)
    return Path(os.environ[EXAMPLE_DIR_ENV]) if os.environ.get(EXAMPLE_DIR_ENV) else EXAMPLE_DIR


def _summary(root: Path) -> dict[str, Any]:
    path = root / STAGES_FILE
    if not path.is_file():
        raise NbtoolkitError(f"no example run bundled ({path} is missing): run the notebooks or a pipeline to "
                             "have results of your own")
    return json.loads(path.read_text())


__all__ = ["EXAMPLE_DIR", "EXAMPLE_DIR_ENV", "EXAMPLE_SUFFIX", "example_available", "example_description",
           "example_results",
           "pack_example_run"]

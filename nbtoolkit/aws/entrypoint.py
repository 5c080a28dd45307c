"""Inside a SageMaker training container: run the same worker as the local runtime and make its progress visible.

The entry script (nbt_entry.py, see packaging.py) calls `main()`, which:
1. reads job.json from the code channel, maps its /opt/ml/input/data/<channel>/ paths to the channels SageMaker
   mounted, and applies the training job's hyperparameters over the saved config (so a job cloned in the console
   with other hyperparameters trains with them);
2. makes SM_MODEL_DIR the run directory (SageMaker uploads it as model.tar.gz) with run_dir/checkpoints pointing at
   the checkpoint directory SageMaker syncs to S3 (a relaunch finds them there and resumes);
3. runs `python -m nbtoolkit.runtime.worker RUN_DIR`, forwarding SIGTERM (StopTrainingJob) so the job checkpoints;
4. echoes what the worker writes as lines CloudWatch keeps: `NBT_LOG <line>`, `NBT_METRIC <metrics.jsonl row>`,
   `NBT_PROGRESS <progress.json>`, `NBT_STATUS <status.json>` (SageMakerJob reads them back);
5. on failure writes the worker's reason to /opt/ml/output/failure, which SageMaker reports as FailureReason.

Only the standard library and nbtoolkit.runtime are imported here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

CHANNEL_ROOT = "/opt/ml/input/data/"
METRIC_PREFIX = "NBT_METRIC "
LOG_PREFIX = "NBT_LOG "
PROGRESS_PREFIX = "NBT_PROGRESS "
STATUS_PREFIX = "NBT_STATUS "
HYPERPARAMETER_META = "nbt_"  # hyperparameters that describe the job rather than the config
FAILURE_LIMIT = 1024  # SageMaker keeps the first 1024 characters of FailureReason


def container_path(channel: str, name: str = "") -> str:
    """Where SageMaker mounts a file of an input channel: /opt/ml/input/data/<channel>/<name>."""
    return CHANNEL_ROOT + channel + (f"/{name}" if name else "")


def localize(path: Any, environ: dict[str, str] | None = None) -> Any:
    """A /opt/ml/input/data/<channel>/... path under the directory SM_CHANNEL_<CHANNEL> names (if set)."""
    environ = os.environ if environ is None else environ
    if not isinstance(path, str) or not path.startswith(CHANNEL_ROOT):
        return path
    channel, _, rest = path[len(CHANNEL_ROOT):].partition("/")
    base = environ.get(f"SM_CHANNEL_{channel.upper().replace('-', '_')}")
    if not base:
        return path
    return str(Path(base) / rest) if rest else base


def _coerce(value: Any, default: Any) -> Any:
    """A hyperparameter (SageMaker passes strings, or JSON-decoded values) as the config field's type."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    if isinstance(default, int) and isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    return value


def _same(value: Any, current: Any) -> bool:
    """A hyperparameter (string or JSON-decoded) equals the value saved in job.json."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return value == current or (isinstance(value, str) and value == str(current))


def apply_hyperparameters(job: dict[str, Any], hyperparameters: dict[str, Any]) -> list[str]:
    """Put hyperparameters that name config fields into job["config"] (validated); returns what changed."""
    config = job.get("config")
    if not config or not hyperparameters:
        return []
    if all(key.startswith(HYPERPARAMETER_META) or _same(value, config.get(key))
           for key, value in hyperparameters.items()):
        return []  # as launched (the usual case): no need to load the config classes
    from nbtoolkit.training.config import CONFIGS

    cls = CONFIGS[config["method"]]
    defaults = {f.name: getattr(cls.for_platform(config.get("platform", "local")), f.name) for f in fields(cls)}
    changed = []
    for key, value in hyperparameters.items():
        if key.startswith(HYPERPARAMETER_META):
            continue
        if key not in defaults:
            print(f"nbtoolkit: hyperparameter {key!r} is not a {config['method']} field; ignored", flush=True)
            continue
        coerced = _coerce(value, defaults[key])
        if config.get(key) != (list(coerced) if isinstance(coerced, tuple) else coerced):
            changed.append(f"{key}={coerced!r}")
        config[key] = list(coerced) if isinstance(coerced, tuple) else coerced
    cls.from_dict({k: v for k, v in config.items() if k != "method"})  # bounds and cross-field checks
    return changed


def _hyperparameters(environ: dict[str, str]) -> dict[str, Any]:
    if environ.get("SM_HPS"):
        return json.loads(environ["SM_HPS"])
    path = Path(environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _rank(environ: dict[str, str]) -> int:
    hosts = json.loads(environ.get("SM_HOSTS") or "[]")
    current = environ.get("SM_CURRENT_HOST")
    return hosts.index(current) if current in hosts else 0


class _Echo:
    """Prints what the worker appends to log.txt and metrics.jsonl, and progress/status when they change."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.offsets: dict[str, int] = {}
        self.last: dict[str, str] = {}

    def _new_lines(self, name: str) -> list[str]:
        path = self.run_dir / name
        if not path.exists():
            return []
        with open(path, "rb") as handle:
            handle.seek(self.offsets.get(name, 0))
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offsets[name] = self.offsets.get(name, 0) + len(complete)
        return complete.decode("utf-8", errors="replace").splitlines()

    def _changed(self, name: str) -> str | None:
        path = self.run_dir / name
        try:
            text = json.dumps(json.loads(path.read_text()), separators=(",", ":"))
        except (OSError, ValueError):
            return None
        if self.last.get(name) == text:
            return None
        self.last[name] = text
        return text

    def flush(self) -> None:
        out = []
        out += [LOG_PREFIX + line for line in self._new_lines("log.txt")]
        out += [METRIC_PREFIX + line for line in self._new_lines("metrics.jsonl") if line.strip()]
        progress = self._changed("progress.json")
        if progress:
            out.append(PROGRESS_PREFIX + progress)
        status = self._changed("status.json")
        if status:
            out.append(STATUS_PREFIX + status)
        if out:
            print("\n".join(out), flush=True)


def main(job_file: str | Path, code_dir: str | Path, environ: dict[str, str] | None = None,
         poll: float = 1.0) -> int:
    """Run the job of `job_file` as the container's training process; returns the exit code."""
    environ = dict(os.environ if environ is None else environ)
    job = json.loads(Path(job_file).read_text())
    rank = _rank(environ)
    run_dir = Path(environ.get("SM_MODEL_DIR", "/opt/ml/model")) if rank == 0 else Path(f"/tmp/nbtoolkit-rank{rank}")
    run_dir.mkdir(parents=True, exist_ok=True)

    changed = apply_hyperparameters(job, _hyperparameters(environ))
    for key in ("train_file", "eval_file", "model"):
        job[key] = localize(job.get(key), environ)
    spec = job["spec"]
    extra = spec.get("extra") or {}
    if isinstance(extra.get("general_data"), dict):
        extra["general_data"] = {k: localize(v, environ) for k, v in extra["general_data"].items()}
    checkpoints = Path(environ.get("NBT_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    link = run_dir / "checkpoints"
    if rank == 0 and checkpoints.is_dir() and not link.exists():
        link.symlink_to(checkpoints, target_is_directory=True)
    restored = link.is_dir() and any(link.iterdir())
    job["resume"] = bool(job.get("resume") or restored)
    job["container"] = {"training_job": environ.get("TRAINING_JOB_NAME"), "host": environ.get("SM_CURRENT_HOST"),
                        "run_dir": str(run_dir),
                        "rank": rank, "hyperparameters_applied": changed, "checkpoints_restored": restored}
    (run_dir / "job.json").write_text(json.dumps(job, indent=2))
    print(f"nbtoolkit: {job['kind']} job {spec.get('name')!r} in {run_dir}"
          + (f"; hyperparameters {', '.join(changed)}" if changed else "")
          + ("; resuming from restored checkpoints" if restored else ""), flush=True)

    python_path = os.pathsep.join(p for p in (str(code_dir), environ.get("PYTHONPATH", "")) if p)
    env = {**environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-m", "nbtoolkit.runtime.worker", str(run_dir)], env=env)

    def forward(signum: int, frame: Any) -> None:
        print(f"nbtoolkit: {signal.Signals(signum).name} received; asking the job to checkpoint and stop",
              flush=True)
        process.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
    echo = _Echo(run_dir) if rank == 0 else None
    while process.poll() is None:
        if echo is not None:
            echo.flush()
        time.sleep(poll)
    if echo is not None:
        echo.flush()
    if link.is_symlink():
        link.unlink()  # the checkpoints are in S3 already; keep them out of model.tar.gz
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    if status.get("state") == "COMPLETED":
        return 0
    reason = status.get("reason") or f"the worker exited with code {process.returncode}"
    output = Path(environ.get("NBT_OUTPUT_DIR", "/opt/ml/output"))
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "failure").write_text(f"nbtoolkit {job['kind']} job failed: {reason}"[:FAILURE_LIMIT])
    except OSError:
        pass
    return 1

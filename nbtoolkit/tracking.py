"""Experiment tracking: every local job logs its parameters, per-step metrics and artifacts to MLflow.

By default runs go to one SQLite store shared by every run directory on this machine, so all runs are comparable
in one MLflow UI (`mlflow ui --backend-store-uri <tracking_uri()>`, see `ui_command()`):
<nbtoolkit cache>/mlflow/mlflow.db, artifacts beside it. Set in the environment (or LocalRuntime(env=...)):

    NBTOOLKIT_TRACKING=off          no tracking
    NBTOOLKIT_TRACKING_URI=URI      any MLflow tracking URI: sqlite:///path.db, http://host:5000, or a SageMaker
                                    managed MLflow tracking server ARN (arn:aws:sagemaker:REGION:ACCOUNT:
                                    mlflow-tracking-server/NAME, through the sagemaker-mlflow plugin);
                                    MLFLOW_TRACKING_URI is used when this is not set
    NBTOOLKIT_EXPERIMENT=NAME       experiment name (default "nbtoolkit")

The job never waits for MLflow: rows go on a queue that a background thread writes in batches, and a failing or
missing MLflow only leaves a warning in log.txt and RUN_DIR/tracking.json. Parameters and artifacts are scrubbed
of anything that looks like a credential.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.runtime.events import read_json, utc_now, write_json_atomic

TRACKING_FILE = "tracking.json"
ENABLED_ENV = "NBTOOLKIT_TRACKING"
URI_ENV = "NBTOOLKIT_TRACKING_URI"
EXPERIMENT_ENV = "NBTOOLKIT_EXPERIMENT"
DEFAULT_EXPERIMENT = "nbtoolkit"
FINISH_TIMEOUT_SECONDS = 60.0
REDACTED = "[REDACTED]"
_OFF = {"0", "off", "false", "no", "none", "disabled"}
# A parameter named like a credential (api_key, hf_token, aws_secret_access_key), not max_prompt_tokens.
_SECRET_NAME = re.compile(r"(?i)(^|[._-])(api[_-]?key|access[_-]?key|secret([_-]access)?([_-]key)?|token|password|"
                          r"passwd|credentials?)$")
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]+):([^/@\s]+)@")
_BATCH = 500
# Run-directory files worth keeping with the run (small); figures are drawn from them at the end.
_ARTIFACT_FILES = ("job.json", "result.json", "log.txt", "metrics.jsonl")
_EVAL_FILES = ("metrics.json", "predictions.jsonl", "confusion.csv", "per_class.csv", "eval.json")


def default_store() -> Path:
    """Where the default SQLite store and its artifacts live: <nbtoolkit cache>/mlflow."""
    from nbtoolkit.models.registry import cache_root

    return cache_root() / "mlflow"


@dataclass(frozen=True)
class TrackingConfig:
    """Where and whether jobs are tracked. `from_env()` reads the NBTOOLKIT_TRACKING* variables."""

    enabled: bool = field(default=True, metadata={"help": "False: jobs log nothing to MLflow"})
    tracking_uri: str | None = field(default=None, metadata={
        "help": "MLflow tracking URI or SageMaker MLflow tracking server ARN; None: the local SQLite store"})
    experiment: str = field(default=DEFAULT_EXPERIMENT, metadata={"help": "MLflow experiment the runs go to"})

    def __post_init__(self) -> None:
        if not str(self.experiment).strip():
            raise ValueError("experiment name is empty")
        if self.tracking_uri is not None and not str(self.tracking_uri).strip():
            raise ValueError("tracking_uri is empty: pass a URI or None for the local SQLite store")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TrackingConfig:
        env = os.environ if environ is None else environ
        enabled = env.get(ENABLED_ENV, "on").strip().lower() not in _OFF
        uri = env.get(URI_ENV) or env.get("MLFLOW_TRACKING_URI") or None
        return cls(enabled=enabled, tracking_uri=uri, experiment=env.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT)

    @property
    def uri(self) -> str:
        """The tracking URI used: the configured one, else sqlite:///<cache>/mlflow/mlflow.db."""
        return self.tracking_uri or f"sqlite:///{default_store() / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Artifact root for a new experiment: beside a SQLite store's file (not the worker's working directory,
        MLflow's default); None lets a tracking server decide."""
        uri = self.uri
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        return None


def tracking_uri() -> str:
    """The tracking URI jobs launched from this process use."""
    return TrackingConfig.from_env().uri


def ui_command(uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on a tracking store (http://127.0.0.1:5000)."""
    uri = uri or tracking_uri()
    if uri.startswith("arn:"):
        return "open the tracking server from SageMaker Studio (MLflow), or: aws sagemaker " \
               f"create-presigned-mlflow-tracking-server-url --tracking-server-name {uri.rsplit('/', 1)[-1]}"
    if uri.startswith(("http://", "https://")):
        return f"open {redact_uri(uri)} in a browser"
    return f"mlflow ui --backend-store-uri '{uri}' --host 127.0.0.1 --port 5000"


def redact_uri(uri: str) -> str:
    """A URI without the password of user:password@host."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", uri)


def scrub_value(text: str) -> str:
    """Text without credentials (AWS keys and secrets, URL passwords)."""
    try:
        from nbtoolkit.aws.session import scrub
    except ImportError:  # the aws extra is not installed
        return redact_uri(text)
    return redact_uri(scrub(text))


def scrub_json(value: Any) -> Any:
    """A JSON value with credential-named fields redacted and credential-shaped strings scrubbed."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_NAME.search(str(k)) and not isinstance(v, (dict, list)) else scrub_json(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(item) for item in value]
    return scrub_value(value) if isinstance(value, str) else value


def _scrubbed_text(path: Path) -> str:
    """A run-directory file's text for an artifact: JSON and JSON lines get credential fields redacted."""
    text = path.read_text(errors="replace")
    try:
        if path.suffix == ".json":
            return json.dumps(scrub_json(json.loads(text)), indent=2)
        if path.suffix == ".jsonl":
            return "".join(json.dumps(scrub_json(json.loads(line))) + "\n" for line in text.splitlines() if line)
    except ValueError:
        pass
    return scrub_value(text)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
        return
    name = prefix
    if _SECRET_NAME.search(name):
        out[name] = REDACTED
        return
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    out[name] = scrub_value(text)[:6000]


def job_params(job: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a job.json: kind, model, data files, labels, every config field, extras (scrubbed)."""
    spec = job.get("spec") or {}
    out: dict[str, str] = {}
    config = dict(spec.get("config") or job.get("config") or {})
    for key in ("kind", "model", "train_file", "eval_file", "labels"):
        value = spec.get(key) if spec.get(key) is not None else job.get(key)
        if value is not None:
            _flatten(key, value, out)
    _flatten("", config, out)
    _flatten("extra", spec.get("extra") or {}, out)
    return {_metric_key(k): v for k, v in out.items()}


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . space / only."""
    return re.sub(r"[^\w\-. /]", "_", str(name))[:250]


def metric_values(row: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite values of a metrics.jsonl row (not its clock time, step or text fields)."""
    values = {}
    for key, value in row.items():
        if key in ("time", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            values[_metric_key(key)] = float(value)
    return values


class NullTracker:
    """What runs when tracking is off or MLflow is missing: nothing."""

    enabled = False

    def log_metrics(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, state: str, result: dict[str, Any] | None = None, timeout: float = 0.0) -> None:
        pass


class JobTracker:
    """One MLflow run for one job (a resumed job continues its run). Work happens on a daemon thread."""

    enabled = True

    def __init__(self, run_dir: str | os.PathLike, job: dict[str, Any], config: TrackingConfig,
                 warn: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.job = job
        self.config = config
        self.warn = warn or (lambda message: None)
        self.queue: queue.Queue = queue.Queue()
        self.run_id: str | None = None
        self.failed: str | None = None
        self._steps = 0
        try:
            self._previous = read_json(self.run_dir / TRACKING_FILE, {}) or {}  # a resumed job's earlier run
        except ValueError:
            self._previous = {}
        self._thread = threading.Thread(target=self._work, name="nbtoolkit-mlflow", daemon=True)

    def start(self) -> JobTracker:
        self._write_state("starting")
        self._thread.start()
        return self

    # -- called from the job ------------------------------------------------------------------------------------

    def log_metrics(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row (RunLog listener): queued, written by the thread."""
        if self.failed is None:
            self.queue.put(("metrics", dict(row), int(time.time() * 1000)))

    def finish(self, state: str, result: dict[str, Any] | None = None,
               timeout: float = FINISH_TIMEOUT_SECONDS) -> None:
        """Log final metrics and artifacts, close the run as FINISHED/FAILED/KILLED; waits up to `timeout` s."""
        self.queue.put(("finish", state, result or {}))
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.warn(f"MLflow tracking did not finish within {timeout:g} s; the run may be incomplete")

    # -- the thread ---------------------------------------------------------------------------------------------

    def _write_state(self, status: str, **more: Any) -> None:
        data = {"status": status, "tracking_uri": redact_uri(self.config.uri), "experiment": self.config.experiment,
                "run_id": self.run_id, "updated": utc_now(), **more}
        try:
            write_json_atomic(self.run_dir / TRACKING_FILE, data)
        except OSError:
            pass  # the run directory went away (a test's tmp dir): nothing left to record

    def _fail(self, where: str, error: BaseException) -> None:
        self.failed = f"{where}: {type(error).__name__}: {scrub_value(str(error))[:500]}"
        self._write_state("failed", error=self.failed)
        self.warn(f"MLflow tracking stopped ({self.failed}); the job itself is not affected")

    def _work(self) -> None:
        try:
            client = self._open()
        except Exception as error:  # noqa: BLE001 - tracking must never break the job
            self._fail("connecting to the tracking store", error)
            client = None
        pending: list[Any] = []
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            if item is not None and item[0] == "metrics":
                pending.append(item)
                if len(pending) < _BATCH:
                    continue
            if client is not None and pending:
                try:
                    self._log_rows(client, pending)
                except Exception as error:  # noqa: BLE001
                    self._fail("logging metrics", error)
                    client = None
            pending = []
            if item is not None and item[0] == "finish":
                if client is not None:
                    try:
                        self._close(client, item[1], item[2])
                    except Exception as error:  # noqa: BLE001
                        self._fail("closing the run", error)
                return

    def _open(self):
        from mlflow import MlflowClient

        if self.config.uri.startswith("sqlite:///"):
            Path(self.config.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=self.config.uri)
        experiment = None
        for attempt in range(3):  # two new jobs may create the store or the experiment at the same moment
            try:
                found = client.get_experiment_by_name(self.config.experiment)
                experiment = found.experiment_id if found else client.create_experiment(
                    self.config.experiment, artifact_location=self.config.artifact_location)
                break
            except Exception:  # noqa: BLE001
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        previous = self._previous
        spec = self.job.get("spec") or {}
        resumed = None
        if previous.get("run_id") and previous.get("tracking_uri") == redact_uri(self.config.uri):
            try:
                resumed = client.get_run(previous["run_id"])
            except Exception:  # noqa: BLE001 - deleted, or another store: start a new run
                resumed = None
        params = job_params(self.job)
        if resumed is not None:
            self.run_id = resumed.info.run_id
            client.update_run(self.run_id, status="RUNNING")
            logged = resumed.data.params
            new = {k: v for k, v in params.items() if k not in logged}
            changed = {f"changed.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
            self._log_params(client, new, changed)
        else:
            tags = {"nbtoolkit.kind": str(spec.get("kind")), "nbtoolkit.run_dir": str(self.run_dir),
                    "nbtoolkit.model": str(spec.get("model")), "mlflow.source.name": "nbtoolkit.runtime.worker",
                    "mlflow.source.type": "LOCAL"}
            run = client.create_run(experiment, run_name=spec.get("name") or self.run_dir.name,
                                    tags={k: scrub_value(v) for k, v in tags.items()})
            self.run_id = run.info.run_id
            self._log_params(client, params, {})
        client.set_tag(self.run_id, "nbtoolkit.attempt", str(self.job.get("attempt", 1)))
        self._write_state("logging", experiment_id=experiment)
        return client

    def _log_params(self, client, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        items = list(params.items())
        for start in range(0, len(items), 100):
            client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
        if tags:
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _log_rows(self, client, rows: list[Any]) -> None:
        from mlflow.entities import Metric

        metrics = []
        for _, row, stamp in rows:
            step = row.get("step")
            if not isinstance(step, int) or isinstance(step, bool):
                step = self._steps
            self._steps = max(self._steps, step)
            metrics += [Metric(key, value, stamp, step) for key, value in metric_values(row).items()]
        for start in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def _close(self, client, state: str, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        output = result.get("output") or {}
        finals = {**{k: v for k, v in output.items() if k != "metrics"}, **(output.get("metrics") or {})}
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, self._steps) for key, value in metric_values(finals).items()]
        if result.get("seconds") is not None:
            metrics.append(Metric("job_seconds", float(result["seconds"]), stamp, self._steps))
        if metrics:
            client.log_batch(self.run_id, metrics=metrics)
        self._log_artifacts(client)
        status = "FINISHED" if state == "COMPLETED" else ("KILLED" if result.get("stopped") else "FAILED")
        client.set_terminated(self.run_id, status=status)
        self._write_state("done", run_status=status)

    def _log_artifacts(self, client) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="nbtoolkit-mlflow-") as tmp:
            staged = Path(tmp)
            for name in _ARTIFACT_FILES:
                source = self.run_dir / name
                if source.is_file():
                    (staged / "run").mkdir(exist_ok=True)
                    (staged / "run" / name).write_text(_scrubbed_text(source))
            eval_dir = self.run_dir / "eval"
            for name in _EVAL_FILES:
                if (eval_dir / name).is_file():
                    (staged / "eval").mkdir(exist_ok=True)
                    (staged / "eval" / name).write_text(_scrubbed_text(eval_dir / name))
            figures = staged / "figures"
            figures.mkdir()
            for name, draw in _figures(self.run_dir).items():
                try:
                    figure = draw()
                except Exception as error:  # noqa: BLE001 - a figure that cannot be drawn is skipped
                    self.warn(f"MLflow: figure {name} not drawn ({type(error).__name__}: {error})")
                    continue
                figure.savefig(figures / name, dpi=100, bbox_inches="tight")
                import matplotlib.pyplot as plt

                plt.close(figure)
            client.log_artifacts(self.run_id, str(staged))


def _figures(run_dir: Path) -> dict[str, Callable[[], Any]]:
    """Figures worth seeing in the MLflow UI, drawn with nbtoolkit.plots: training curves and the confusion matrix."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a headless worker: no GUI backend
        matplotlib.use("Agg")
    figures: dict[str, Callable[[], Any]] = {}
    from nbtoolkit.runtime.events import read_metrics

    rows = read_metrics(run_dir)
    if rows:
        import pandas as pd

        frame = pd.DataFrame(rows)
        for column in ("loss", "reward_mean"):
            if column in frame and "step" in frame and frame[column].notna().sum() >= 2:
                def draw(column=column, frame=frame):
                    from nbtoolkit.plots import training_curve_figure

                    return training_curve_figure(frame, y=column)

                figures[f"{column}.png"] = draw
    confusion = run_dir / "eval" / "confusion.csv"
    if confusion.is_file():
        def draw_confusion():
            import pandas as pd

            from nbtoolkit.plots import confusion_matrix_figure

            return confusion_matrix_figure(pd.read_csv(confusion, index_col=0), title=run_dir.name)

        figures["confusion_matrix.png"] = draw_confusion
    return figures


def start_tracking(run_dir: str | os.PathLike, job: dict[str, Any], log=None) -> JobTracker | NullTracker:
    """The tracker for a worker: a started JobTracker hooked to `log` (a RunLog), or a NullTracker when tracking
    is off or MLflow is not installed. Never raises: a job runs the same without tracking."""
    try:
        return _start_tracking(run_dir, job, log)
    except Exception as error:  # noqa: BLE001
        if log is not None:
            log.warning(f"MLflow tracking off: {type(error).__name__}: {scrub_value(str(error))}")
        return NullTracker()


def _start_tracking(run_dir: str | os.PathLike, job: dict[str, Any], log) -> JobTracker | NullTracker:
    config = TrackingConfig.from_env()
    if not config.enabled:
        return NullTracker()
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        write_json_atomic(Path(run_dir) / TRACKING_FILE, {"status": "unavailable",
                                                          "reason": "mlflow is not installed (pip install mlflow)"})
        return NullTracker()
    tracker = JobTracker(run_dir, job, config, warn=log.warning if log is not None else None)
    if log is not None:
        log.listeners.append(tracker.log_metrics)
    return tracker.start()


def wait_for_tracking(run_dir: str | os.PathLike, timeout: float = 60.0) -> dict[str, Any]:
    """RUN_DIR/tracking.json once its run is closed (status done, failed or unavailable); TimeoutError otherwise."""
    path = Path(run_dir) / TRACKING_FILE
    deadline = time.monotonic() + timeout
    while True:
        state = read_json(path) or {}
        if state.get("status") in ("done", "failed", "unavailable"):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: tracking still {state.get('status', 'not started')} after {timeout:g} s")
        time.sleep(0.1)


def recent_runs(uri: str | None = None, experiment: str | None = None, limit: int = 20):
    """The latest tracked runs as a DataFrame (name, status, kind, start, main metrics, run directory); empty when
    tracking is off, MLflow is missing, or the store has no runs yet."""
    import pandas as pd

    config = TrackingConfig.from_env()
    columns = ["run", "status", "kind", "started", "loss", "final_loss", "exact_match", "run_dir", "run_id"]
    if not config.enabled and uri is None:
        return pd.DataFrame(columns=columns)
    uri = uri or config.uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return pd.DataFrame(columns=columns)
    try:
        from mlflow import MlflowClient
    except ImportError:
        return pd.DataFrame(columns=columns)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment or config.experiment)
    if found is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"]):
        metrics, tags = run.data.metrics, run.data.tags
        rows.append({"run": run.info.run_name, "status": run.info.status, "kind": tags.get("nbtoolkit.kind"),
                     "started": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                     "loss": metrics.get("loss"), "final_loss": metrics.get("final_loss"),
                     "exact_match": metrics.get("exact_match"), "run_dir": tags.get("nbtoolkit.run_dir"),
                     "run_id": run.info.run_id})
    return pd.DataFrame(rows, columns=columns)

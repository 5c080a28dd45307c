"""MLflow tracking: what a job logs (params, per-step metrics, artifacts), where (SQLite by default, any URI by
configuration), and that tracking never breaks or slows a job, even when MLflow fails or is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nbtoolkit import tracking
from nbtoolkit.runtime import JobSpec, LocalRuntime
from nbtoolkit.runtime.events import RunLog
from nbtoolkit.tracking import (
    JobTracker,
    NullTracker,
    TrackingConfig,
    job_params,
    metric_values,
    start_tracking,
    ui_command,
    wait_for_tracking,
)
from nbtoolkit.training.config import SFTLoraConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")
SECRET = "sk-live-9f8e7d6c5b4a3210"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"

FLAKY_JOB = '''
from pathlib import Path


def flaky(config, *, run_dir, log, **_):
    """Fails on its first attempt after two steps; the resumed attempt logs two more and finishes."""
    marker = Path(run_dir) / "attempted"
    first = not marker.exists()
    marker.write_text("1")
    for step in ((1, 2) if first else (3, 4)):
        log.metric(step=step, loss=1.0 / step, lr=0.001, phase="train")
    if first:
        raise RuntimeError("transient failure")
    return {"final_loss": 0.25, "metrics": {"exact_match": 0.5}}
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one runs MLflow's migrations, which takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_texts(mlflow, run_id: str) -> dict[str, str]:
    """Every artifact of a run: path -> text (binary files as their size)."""
    local = Path(mlflow.download_artifacts(run_id, ""))
    return {str(p.relative_to(local)): (p.read_text(errors="replace") if p.suffix != ".png" else f"{p.stat().st_size}")
            for p in local.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- what gets logged


def test_params_are_flattened_and_scrubbed():
    job = {"kind": "sft_lora", "attempt": 1, "spec": {
        "kind": "sft_lora", "model": "smollm2", "train_file": "prepared/sft/chat.jsonl", "labels": ["HQ", "LQ_EDIT"],
        "config": {"method": "sft_lora", "lr": 2e-4, "max_prompt_tokens": 192},
        "extra": {"api_key": SECRET, "note": f"key {AWS_KEY_ID}", "nested": {"hf_token": "hf_x"}}}}
    params = job_params(job)
    assert params["lr"] == "0.0002" and params["max_prompt_tokens"] == "192" and params["labels"] == "HQ,LQ_EDIT"
    assert params["kind"] == "sft_lora" and params["train_file"] == "prepared/sft/chat.jsonl"
    assert params["extra.api_key"] == "[REDACTED]" and params["extra.nested.hf_token"] == "[REDACTED]"
    assert AWS_KEY_ID not in params["extra.note"] and "[REDACTED]" in params["extra.note"]


def test_metric_values_keep_finite_numbers_only():
    row = {"time": 1.5, "step": 3, "loss": 0.5, "lr": 1e-4, "phase": "train", "stopped": True, "kl": float("nan"),
           "reward/mean": 0.25}
    assert metric_values(row) == {"loss": 0.5, "lr": 1e-4, "reward/mean": 0.25}


def test_configuration_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NBTOOLKIT_CACHE", str(tmp_path / "cache"))
    for name in ("NBTOOLKIT_TRACKING", "NBTOOLKIT_TRACKING_URI", "MLFLOW_TRACKING_URI", "NBTOOLKIT_EXPERIMENT"):
        monkeypatch.delenv(name, raising=False)
    config = TrackingConfig.from_env()
    assert config.enabled and config.uri == f"sqlite:///{tmp_path / 'cache' / 'mlflow' / 'mlflow.db'}"
    assert config.artifact_location == (tmp_path / "cache" / "mlflow" / "artifacts").as_uri()
    assert ui_command() == f"mlflow ui --backend-store-uri '{config.uri}' --host 127.0.0.1 --port 5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert TrackingConfig.from_env().uri == "http://tracker:5000"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    monkeypatch.setenv("NBTOOLKIT_TRACKING_URI", arn)
    monkeypatch.setenv("NBTOOLKIT_EXPERIMENT", "stack-overflow")
    config = TrackingConfig.from_env()
    assert config.uri == arn and config.experiment == "stack-overflow" and config.artifact_location is None
    monkeypatch.setenv("NBTOOLKIT_TRACKING_URI", f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}")
    assert TrackingConfig.from_env().artifact_location == (tmp_path / "team" / "artifacts").as_uri()
    assert "--tracking-server-name team" in ui_command(arn)
    assert ui_command("https://bob:hunter22@mlflow.example.com") == \
        "open https://bob:[REDACTED]@mlflow.example.com in a browser"
    for off in ("off", "0", "false", "OFF"):
        monkeypatch.setenv("NBTOOLKIT_TRACKING", off)
        assert not TrackingConfig.from_env().enabled


# ---------------------------------------------------------------- a real job, through the worker


def test_a_job_logs_params_per_step_metrics_and_artifacts(tmp_path, store):
    (tmp_path / "flaky_job.py").write_text(FLAKY_JOB)
    (tmp_path / "runs").mkdir()
    runtime = LocalRuntime(tmp_path / "runs", env={"NBTOOLKIT_TRACKING": "on", "NBTOOLKIT_TRACKING_URI": store,
                                                   "NBTOOLKIT_EXPERIMENT": "tracking-tests"})
    config = SFTLoraConfig.for_platform("local", max_steps=4, warmup_steps=1, save_steps=2)
    spec = JobSpec(f"{tmp_path / 'flaky_job.py'}:flaky", config=config, name="flaky",
                   model="smollm2-135m-instruct", extra={"api_key": SECRET})
    job = runtime.launch(spec)
    (job.run_dir / "attempted").write_text("seen")  # this run succeeds at once
    result = job.wait(progress=False, poll=0.1, timeout=120)
    assert result.ok
    state = wait_for_tracking(job.run_dir, timeout=120)
    assert state["status"] == "done", state
    mlflow = client(store)
    run = mlflow.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "flaky"
    assert mlflow.get_experiment(run.info.experiment_id).name == "tracking-tests"
    assert run.data.params["max_steps"] == "4" and run.data.params["lr"] == str(config.lr)
    assert run.data.params["model"] == "smollm2-135m-instruct" and run.data.params["extra.api_key"] == "[REDACTED]"
    assert run.data.tags["nbtoolkit.run_dir"] == str(job.run_dir)
    history = mlflow.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(3, 1 / 3), (4, 0.25)]
    assert run.data.metrics["exact_match"] == 0.5 and run.data.metrics["final_loss"] == 0.25
    assert "job_seconds" in run.data.metrics
    assert run.info.artifact_uri.startswith((Path(store[len("sqlite:///"):]).parent / "artifacts").as_uri())
    texts = artifact_texts(mlflow, run.info.run_id)
    assert {"run/job.json", "run/result.json", "run/log.txt", "run/metrics.jsonl", "figures/loss.png"} <= set(texts)
    assert int(texts["figures/loss.png"]) > 1000
    assert all(SECRET not in text for text in texts.values()), "no credential reaches the artifacts"


def test_a_resumed_job_continues_its_run(tmp_path, store):
    run_dir = tmp_path / "run"
    config = TrackingConfig(tracking_uri=store, experiment="resume")
    job = {"attempt": 1, "spec": {"name": "resumable", "kind": "sft_lora", "config": {"lr": 0.001}}}
    log = RunLog(run_dir, echo=None)
    first = JobTracker(run_dir, job, config, warn=log.warning).start()
    first.log_metrics({"step": 1, "loss": 1.0})
    first.finish("FAILED", {"stopped": True, "output": {}}, timeout=120)
    mlflow = client(store)
    assert mlflow.get_run(first.run_id).info.status == "KILLED"
    second = JobTracker(run_dir, {**job, "attempt": 2, "spec": {**job["spec"], "config": {"lr": 0.002}}}, config,
                        warn=log.warning).start()
    second.log_metrics({"step": 2, "loss": 0.5})
    second.finish("COMPLETED", {"output": {}}, timeout=120)
    assert second.run_id == first.run_id
    run = mlflow.get_run(second.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["nbtoolkit.attempt"] == "2"
    assert run.data.params["lr"] == "0.001" and run.data.tags["changed.lr"] == "0.002"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "loss")] == [1, 2]


# ---------------------------------------------------------------- never in the job's way


def test_off_or_missing_mlflow_means_no_tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("NBTOOLKIT_TRACKING", "off")
    assert isinstance(start_tracking(tmp_path, {"spec": {}}, RunLog(tmp_path, echo=None)), NullTracker)
    assert not (tmp_path / tracking.TRACKING_FILE).exists()
    monkeypatch.setenv("NBTOOLKIT_TRACKING", "on")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    tracker = start_tracking(tmp_path, {"spec": {}}, RunLog(tmp_path, echo=None))
    assert isinstance(tracker, NullTracker)
    assert json.loads((tmp_path / tracking.TRACKING_FILE).read_text())["status"] == "unavailable"


def test_a_broken_store_leaves_a_warning_and_the_job_runs_on(tmp_path):
    (tmp_path / "not-a-dir").write_text("x")
    log = RunLog(tmp_path / "run", echo=None)
    config = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}")
    tracker = JobTracker(log.run_dir, {"spec": {"name": "j"}}, config, warn=log.warning).start()
    log.listeners.append(tracker.log_metrics)
    started = time.perf_counter()
    for step in range(1, 200):
        log.metric(step=step, loss=1.0 / step)
    assert time.perf_counter() - started < 2.0, "logging a metric only queues it"
    tracker.finish("COMPLETED", {"output": {}}, timeout=60)
    state = json.loads((log.run_dir / tracking.TRACKING_FILE).read_text())
    assert state["status"] == "failed" and "connecting to the tracking store" in state["error"]
    assert "MLflow tracking stopped" in (log.run_dir / "log.txt").read_text()
    assert len((log.run_dir / "metrics.jsonl").read_text().splitlines()) == 199


def test_metrics_are_written_in_batches_with_their_steps(tmp_path, store):
    log = RunLog(tmp_path / "run", echo=None)
    config = TrackingConfig(tracking_uri=store, experiment="batches")
    tracker = JobTracker(log.run_dir, {"spec": {"name": "batch", "kind": "eval"}}, config, warn=log.warning).start()
    log.listeners.append(tracker.log_metrics)
    for step in range(1, 1201):
        log.metric(step=step, loss=1.0 / step, tokens_per_second=100.0)
    log.metric(phase="precheck", positive_share=0.2)  # no step: logged at the latest step
    tracker.finish("COMPLETED", {"output": {"metrics": {"accuracy": 0.75}}, "seconds": 1.0}, timeout=120)
    mlflow = client(store)
    history = mlflow.get_metric_history(tracker.run_id, "loss")
    assert len(history) == 1200 and [m.step for m in history[:3]] == [1, 2, 3]
    assert [m.step for m in mlflow.get_metric_history(tracker.run_id, "positive_share")] == [1200]
    run = mlflow.get_run(tracker.run_id)
    assert run.data.metrics["accuracy"] == 0.75 and run.info.status == "FINISHED"

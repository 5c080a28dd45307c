"""LocalRuntime: jobs run as subprocesses writing into run directories; the notebook only reads files.

The lifecycle tests run the model-free job functions of tests/jobs_for_tests.py (they sleep, so they cost no CPU);
one test trains a real tiny model once nbtoolkit.training.sft exists.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbtoolkit.runtime import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    DryRunReport,
    Job,
    JobError,
    JobFailed,
    JobSpec,
    LaunchError,
    LocalRuntime,
    TrainingResult,
)
from nbtoolkit.runtime.events import JOB_FILE, RESULT_FILE, STATUS_FILE
from nbtoolkit.training.config import EvalConfig, RFTLoraConfig, SFTFullConfig, SFTLoraConfig

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _config(steps: int) -> SFTLoraConfig:
    return SFTLoraConfig.for_platform("local", max_steps=steps, warmup_steps=1, save_steps=1)


def count_spec(steps: int = 20, *, sleep: float = 0.05, name: str = "count") -> JobSpec:
    return JobSpec("jobs_for_tests:count", config=_config(steps), name=name, extra={"sleep": sleep})


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def runtime(tmp_path) -> LocalRuntime:
    return LocalRuntime(tmp_path / "runs", env={"PYTHONPATH": str(TESTS)})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One completed count job shared by the read-only tests; the launch time is measured on the way."""
    runtime = LocalRuntime(tmp_path_factory.mktemp("shared") / "runs", env={"PYTHONPATH": str(TESTS)})
    started = time.perf_counter()
    job = runtime.launch(count_spec(20))
    launch_seconds = time.perf_counter() - started
    first = job.status()
    seen = {first.state}
    running = wait_for(lambda: (s := job.status()).pid and s.started and s, what="the worker's IN_PROGRESS status")
    seen.add(running.state)
    result = job.wait(progress=False, poll=0.1, timeout=60)
    return {"job": job, "result": result, "launch_seconds": launch_seconds, "first": first, "running": running,
            "seen": seen, "runtime": runtime}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat_rows(n: int) -> list[dict]:
    labels = ("HQ", "LQ_EDIT", "LQ_CLOSE")
    return [{"messages": [{"role": "system", "content": "Answer with the label only."},
                          {"role": "user", "content": f"How do I sort list number {i} in Python?"},
                          {"role": "assistant", "content": labels[i % 3]}]} for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# JobSpec


def test_job_spec_round_trips_through_json_and_fills_defaults():
    spec = JobSpec("sft_lora", model="smollm2-135m-instruct", train_file=Path("data/train.jsonl"),
                   labels=["HQ", "LQ_EDIT"], name="so-sft", extra={"note": 1})
    assert spec.config == SFTLoraConfig.for_platform("local")
    assert spec.train_file == "data/train.jsonl" and spec.labels == ("HQ", "LQ_EDIT")
    again = JobSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.config, SFTLoraConfig)
    custom = count_spec(7)
    assert JobSpec.from_dict(json.loads(custom.to_json())) == custom
    assert JobSpec("eval", model="m", eval_file="e.jsonl").name == "eval"
    assert JobSpec("sft_full", model="m", train_file="t").name == "sft-full"
    assert JobSpec("my_pkg.jobs:train_fast").name == "train-fast"


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "sft-lora", "model": "m", "train_file": "t"}, "did you mean 'sft_lora'"),
    ({"kind": "sft_lora", "model": "m", "train_file": "t", "name": "bad_name"}, "job name 'bad_name'"),
    ({"kind": "sft_lora", "model": "m", "train_file": "t", "name": "-x"}, "not allowed"),
    ({"kind": "sft_lora", "model": "m", "train_file": "t", "name": "a" * 64}, "not allowed"),
    ({"kind": "sft_lora", "model": "m", "train_file": "t", "config": SFTFullConfig()}, "needs a SFTLoraConfig"),
    ({"kind": "sft_lora", "train_file": "t"}, "needs a model"),
    ({"kind": "rft_lora", "model": "m"}, "needs train_file"),
    ({"kind": "eval", "model": "m"}, "needs eval_file"),
    ({"kind": "pkg.mod:", "name": "x"}, "package.module:function"),
    ({"kind": "jobs_for_tests:count", "extra": {"f": print}}, "JSON values"),
])
def test_job_spec_rejects_what_a_launch_could_not_run(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JobSpec(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle


def test_launch_returns_at_once_and_the_status_moves_to_completed(finished):
    job, result = finished["job"], finished["result"]
    assert finished["launch_seconds"] < 1.0
    assert finished["first"].state == IN_PROGRESS  # the job was still running when launch returned
    running = finished["running"]
    assert running.state == IN_PROGRESS and running.pid and running.started
    status = job.status()
    assert status.state == COMPLETED and status.ok and status.ended and status.reason is None
    assert isinstance(result, TrainingResult) and result.status == COMPLETED and result.ok
    assert result.output["steps_done"] == 20 and result.metrics["final_loss"] == pytest.approx(0.05)
    assert result.model_dir is not None and (result.model_dir / "weights.txt").read_text() == "20"
    job_json = json.loads((job.run_dir / JOB_FILE).read_text())
    assert job_json["spec"] == count_spec(20).to_dict()
    assert job_json["config"]["max_steps"] == 20 and job_json["config"]["method"] == "sft_lora"
    assert {"nbtoolkit", "torch", "transformers"} <= set(job_json["versions"])
    assert job_json["command"] == [sys.executable, "-m", "nbtoolkit.runtime.worker", str(job.run_dir)]
    saved = json.loads((job.run_dir / RESULT_FILE).read_text())
    assert saved["status"] == COMPLETED and saved["seconds"] > 0 and saved["output"]["steps_done"] == 20
    assert saved["peak_rss_mb"] > 10 and result.peak_rss_mb == saved["peak_rss_mb"]  # the worker's own peak
    assert f"peak memory {saved['peak_rss_mb'] / 1024:.1f} GB" in str(result)


def test_metrics_progress_logs_and_status_card(finished):
    job = finished["job"]
    frame = job.metrics()
    assert list(frame["step"]) == list(range(1, 21))
    assert frame["loss"].iloc[-1] == pytest.approx(0.05)
    progress = job.progress()
    assert (progress["step"], progress["total"], progress["phase"]) == (20, 20, "train")
    tail = job.logs(tail=2)
    assert len(tail.splitlines()) == 2 and "COMPLETED after" in tail.splitlines()[-1]
    assert "counting from 0 to 20" in job.logs(tail=50)
    card = job._repr_html_()
    assert "COMPLETED" in card and "count" in card and str(job.run_dir) in card and "<progress" in card


def test_wait_shows_a_bar_or_json_lines_in_a_training_container(runtime, capsys, monkeypatch):
    job = runtime.launch(count_spec(6))
    job.wait(poll=0.1, timeout=60)
    bar = capsys.readouterr().err
    assert "6/6" in bar and "loss=" in bar

    monkeypatch.setenv("TRAINING_JOB_NAME", "nbt-test")
    job = runtime.launch(count_spec(6, name="container"))
    job.wait(poll=0.1, timeout=60)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines[-1]["state"] == COMPLETED and lines[-1]["job"] == "container"
    assert any(line.get("total") == 6 and "loss" in line for line in lines)
    assert "it/s" not in captured.err and "step/s" not in captured.err


def test_a_failing_job_reports_the_exception_and_its_traceback(runtime):
    job = runtime.launch(JobSpec("jobs_for_tests:crash", name="crash"))
    with pytest.raises(JobFailed, match="ValueError: boom at step 2") as raised:
        job.wait(progress=False, poll=0.1, timeout=60)
    status = job.status()
    assert status.state == FAILED and status.reason == "ValueError: boom at step 2" and not status.stopped
    assert raised.value.result.status == FAILED
    log = (job.run_dir / "log.txt").read_text()
    assert 'in crash' in log and "raise ValueError" in log  # the last traceback lines went into the log
    assert "Traceback" in job.logs()  # the full traceback is in stdout.log
    result = job.wait(progress=False, raise_on_failure=False)
    assert result.reason == "ValueError: boom at step 2" and len(job.metrics()) == 2


def test_cancel_checkpoints_then_resume_finishes_in_the_same_run_dir(runtime):
    job = runtime.launch(count_spec(40))
    wait_for(lambda: (job.progress() or {}).get("step", 0) >= 3, what="step 3")
    with pytest.raises(LaunchError, match="still running"):
        runtime.launch(job.spec, resume_from=job.run_dir)
    status = job.cancel(grace=15)
    assert status.state == FAILED and status.reason == "cancelled" and status.stopped
    checkpoint = json.loads((job.run_dir / "checkpoints" / "state.json").read_text())["step"]
    assert 3 <= checkpoint < 40
    assert "stop requested" in job.logs()
    stopped = job.result()
    assert stopped.stopped and stopped.output["steps_done"] == checkpoint

    assert job.resume() is job
    result = job.wait(progress=False, poll=0.1, timeout=60)
    assert result.ok and result.output["resumed_from"] == checkpoint
    assert result.run_dir == str(job.run_dir) and [p.name for p in runtime.runs_dir.iterdir()] == [job.run_dir.name]
    steps = list(job.metrics()["step"])
    assert steps[-1] == 40 and steps.count(checkpoint + 1) == 1  # continued, did not start over
    assert json.loads((job.run_dir / JOB_FILE).read_text())["attempt"] == 2


def test_sigkill_is_detected_and_launch_resume_from_continues_then_completed_dir_is_refused(runtime):
    job = runtime.launch(count_spec(40))
    state_file = job.run_dir / "checkpoints" / "state.json"
    # The checkpoint, not the progress bar: under load the kill can land between a step's progress and its save.
    wait_for(lambda: state_file.exists() and json.loads(state_file.read_text() or "{}").get("step", 0) >= 3,
             what="checkpoint of step 3")
    pid = job.status().pid
    os.killpg(pid, signal.SIGKILL)
    # A handle without the Popen (a fresh kernel) sees the dead (zombie) pid too.
    attached = Job.attach(job.run_dir)
    died = wait_for(lambda: (s := attached.status()).state == FAILED and s, timeout=10, what="FAILED")
    assert died.reason == "process died (killed?)"
    assert job.status().reason == "process died (killed?)"
    assert json.loads((job.run_dir / STATUS_FILE).read_text())["state"] == FAILED  # recorded for later readers
    checkpoint = json.loads(state_file.read_text())["step"]

    resumed = runtime.launch(count_spec(40), resume_from=job.run_dir)
    assert resumed.run_dir == job.run_dir
    result = resumed.wait(progress=False, poll=0.1, timeout=60)
    assert result.ok and result.output["resumed_from"] == checkpoint >= 3

    before = (job.run_dir / JOB_FILE).read_text()
    with pytest.raises(JobError, match="COMPLETED"):
        runtime.launch(count_spec(40), resume_from=job.run_dir)
    with pytest.raises(JobError, match="never written again"):
        resumed.resume()
    assert (job.run_dir / JOB_FILE).read_text() == before
    assert Job.attach(job.run_dir).status().state == COMPLETED


def test_cancel_kills_a_job_that_ignores_the_stop_request_and_interrupts_one_without_stop_event(runtime):
    stubborn = runtime.launch(JobSpec("jobs_for_tests:stubborn", name="stubborn"))
    plain = runtime.launch(JobSpec("jobs_for_tests:no_stop_event", name="plain"))
    wait_for(lambda: "ignoring" in stubborn.logs() and "sleeping" in plain.logs(), what="both jobs to start")
    status = stubborn.cancel(grace=0.5)
    assert status.state == FAILED and status.reason.startswith("cancelled (killed") and status.stopped
    status = plain.cancel(grace=10)
    assert status.state == FAILED and status.reason == "cancelled" and status.stopped


def test_two_jobs_at_once_get_separate_run_dirs(runtime):
    first = runtime.launch(count_spec(8, sleep=0.05))
    second = runtime.launch(count_spec(8, sleep=0.05))
    assert first.run_dir != second.run_dir and first.run_dir.parent == second.run_dir.parent
    for job in (first, second):
        assert job.wait(progress=False, poll=0.1, timeout=60).ok
        assert list(job.metrics()["step"]) == list(range(1, 9))
    assert sorted(j.run_dir for j in runtime.jobs()) == sorted([first.run_dir, second.run_dir])


def test_training_result_dump_and_load_in_a_fresh_process(finished, tmp_path):
    result = finished["result"]
    dumped = result.dump(tmp_path / "result.json")
    assert TrainingResult.load(dumped) == result
    script = (
        "import json, sys\n"
        "from nbtoolkit.runtime import Job, TrainingResult\n"
        "a = TrainingResult.load(sys.argv[1]); b = TrainingResult.load(sys.argv[2])\n"
        "job = Job.attach(sys.argv[2])\n"
        "print(json.dumps({'dump': a.to_dict(), 'run_dir': b.to_dict(), 'state': job.status().state,\n"
        "                  'rows': len(job.metrics()), 'model_dir': str(a.model_dir)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(dumped), str(result.run_dir)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path, check=True).stdout
    loaded = json.loads(out)
    assert TrainingResult.from_dict(loaded["dump"]) == result
    assert TrainingResult.from_dict(loaded["run_dir"]) == result
    assert loaded["state"] == COMPLETED and loaded["rows"] == 20 and Path(loaded["model_dir"]).is_dir()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        TrainingResult.load(tmp_path)


def test_attach_from_run_dir_sees_the_same_job(finished, tmp_path):
    job = finished["job"]
    again = Job.attach(str(job.run_dir))
    assert again.spec == job.spec and again.status() == job.status()
    assert again.result() == finished["result"]
    assert again.metrics().equals(job.metrics())
    assert "COMPLETED" in repr(again)
    with pytest.raises(FileNotFoundError, match="no job.json"):
        Job.attach(tmp_path)


def test_result_of_a_running_job_is_refused(runtime):
    job = runtime.launch(count_spec(40))
    try:
        with pytest.raises(JobError, match="still running"):
            job.result()
        with pytest.raises(TimeoutError, match="still running"):
            job.wait(progress=False, poll=0.05, timeout=0.2)
    finally:
        assert job.cancel(grace=10).stopped


# ---------------------------------------------------------------------------------------------------------------
# Dry run


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A directory that passes the model checks (a dry run never loads the weights)."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"0" * 1000)
    return path


def checks_of(report: DryRunReport) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.ok, c.detail) for c in report.checks}


def test_dry_run_passes_shows_the_command_and_job_json_and_creates_nothing(runtime):
    report = runtime.launch(count_spec(5), dry_run=True)
    assert isinstance(report, DryRunReport) and report.ok, str(report)
    assert report.command[:3] == [sys.executable, "-m", "nbtoolkit.runtime.worker"]
    assert report.command[3] == report.run_dir and Path(report.run_dir).parent == runtime.runs_dir.absolute()
    assert report.job_json["spec"] == count_spec(5).to_dict() and report.job_json["attempt"] == 1
    text = str(report)
    assert "all checks passed" in text and report.command_line in text and '"versions"' in text
    assert "✓" in report._repr_html_() and not runtime.runs_dir.exists()


def test_dry_run_catches_missing_files_bad_rows_and_small_data(runtime, fake_model, tmp_path):
    bad = chat_rows(10)
    bad[1]["messages"][2]["content"] = "   "
    bad[4]["messages"] = bad[4]["messages"][:2] + [{"role": "user", "content": "again?"}]
    bad[7]["messages"] = bad[7]["messages"][:2]  # no answer to train on
    spec = JobSpec("sft_lora", model=str(fake_model), train_file=str(write_jsonl(tmp_path / "bad.jsonl", bad)),
                   eval_file=str(tmp_path / "missing.jsonl"), labels=("HQ", "LQ_EDIT", "LQ_CLOSE"))
    checks = checks_of(runtime.launch(spec, dry_run=True))
    assert checks["model"][0], checks["model"]
    detail = checks["train_file"][1]
    assert not checks["train_file"][0] and all(f"row {n}" in detail for n in (2, 5, 8)), detail
    assert not checks["eval_file"][0] and "no file at" in checks["eval_file"][1]
    assert not runtime.runs_dir.exists()

    small = write_jsonl(tmp_path / "small.jsonl", chat_rows(4))
    report = runtime.launch(JobSpec("sft_lora", model=str(fake_model), train_file=str(small)), dry_run=True)
    checks = checks_of(report)
    assert checks["train_file"][0] and not checks["rows"][0] and "global_batch_size 8" in checks["rows"][1]
    with pytest.raises(LaunchError, match="global_batch_size") as raised:
        runtime.launch(JobSpec("sft_lora", model=str(fake_model), train_file=str(small)))
    assert not raised.value.report.ok and not runtime.runs_dir.exists()

    rft = write_jsonl(tmp_path / "rft.jsonl", [{"messages": [{"role": "user", "content": "q"}],
                                                  "reference_answer": "HQ"}] * 8)
    checks = checks_of(runtime.launch(JobSpec("sft_lora", model=str(fake_model), train_file=str(rft)),
                                      dry_run=True))
    assert not checks["train_file"][0] and "rft records" in checks["train_file"][1]
    (tmp_path / "broken.jsonl").write_text(json.dumps(chat_rows(1)[0]) + "\n{not json\n")
    checks = checks_of(runtime.launch(JobSpec("eval", model=str(fake_model), eval_file=str(tmp_path / "broken.jsonl"),
                                              config=EvalConfig()), dry_run=True))
    assert not checks["eval_file"][0] and "record 2 is not valid JSON" in checks["eval_file"][1]
    checks = checks_of(runtime.launch(JobSpec("rft_lora", model=str(fake_model), train_file=str(rft),
                                              config=RFTLoraConfig.for_platform("local")), dry_run=True))
    assert checks["train_file"][0] and not checks["labels"][0]


def test_dry_run_refuses_nova_models_unknown_names_and_nova_settings(runtime, tmp_path, fake_model):
    train = str(write_jsonl(tmp_path / "train.jsonl", chat_rows(10)))
    checks = checks_of(runtime.launch(JobSpec("sft_lora", model="nova-lite-2", train_file=train), dry_run=True))
    assert not checks["model"][0] and "SageMaker" in checks["model"][1]
    checks = checks_of(runtime.launch(JobSpec("sft_lora", model="smollm3-135m", train_file=train), dry_run=True))
    assert not checks["model"][0] and "did you mean" in checks["model"][1]
    nova_config = SFTLoraConfig.for_platform("nova")
    checks = checks_of(runtime.launch(JobSpec("sft_lora", model=str(fake_model), train_file=train,
                                              config=nova_config), dry_run=True))
    assert not checks["config"][0] and "for_platform('local'" in checks["config"][1]


def test_dry_run_checks_the_job_function_runs_dir_and_disk(runtime, tmp_path, monkeypatch):
    checks = checks_of(runtime.launch(JobSpec("jobs_for_tests:missing", name="x"), dry_run=True))
    assert not checks["job function"][0] and "no function 'missing'" in checks["job function"][1]
    checks = checks_of(runtime.launch(JobSpec("no_such_module_xyz:run"), dry_run=True))
    assert not checks["job function"][0] and "ModuleNotFoundError" in checks["job function"][1]
    blocked = tmp_path / "file"
    blocked.write_text("")
    checks = checks_of(LocalRuntime(blocked, env=runtime.env).launch(count_spec(3), dry_run=True))
    assert not checks["runs_dir"][0] and "not a directory" in checks["runs_dir"][1]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    checks = checks_of(runtime.launch(count_spec(3), dry_run=True))
    assert not checks["disk"][0] and "GB needed" in checks["disk"][1]


# ---------------------------------------------------------------------------------------------------------------
# A real training job (once nbtoolkit.training.sft exists)


def _run_sft_available() -> bool:
    try:
        return hasattr(importlib.import_module("nbtoolkit.training.sft"), "run_sft")
    except ImportError:
        return False


@pytest.mark.slow
def test_a_real_sft_lora_job_trains_a_tiny_model(runtime, tmp_path):
    if not _run_sft_available():
        pytest.skip("nbtoolkit.training.sft.run_sft is not written yet")
    from nbtoolkit.models import tiny_model

    model_dir = tiny_model(seed=0, vocab_from=None).save(tmp_path / "tiny")
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(4))
    config = SFTLoraConfig.for_platform("local", max_steps=2, warmup_steps=1, save_steps=2, global_batch_size=2,
                                        micro_batch_size=2, max_length=48, max_prompt_tokens=24, lora_r=4, alpha=8,
                                        lr=1e-3)
    spec = JobSpec("sft_lora", config=config, model=str(model_dir), train_file=str(train),
                   labels=("HQ", "LQ_EDIT", "LQ_CLOSE"), name="tiny-sft")
    report = runtime.launch(spec, dry_run=True)
    assert report.ok, str(report)
    job = runtime.launch(spec)
    result = job.wait(progress=False, poll=0.5, timeout=600)
    assert result.ok and result.kind == "sft_lora" and result.run_dir == str(job.run_dir)
    assert result.model_dir == job.run_dir / "model" and (result.model_dir / "config.json").is_file(), result.paths
    assert result.adapter_dir is not None and any(result.adapter_dir.glob("adapter_*")), result.paths
    assert result.metrics["steps"] == 2 and result.metrics["final_loss"] > 0
    assert list(job.metrics().dropna(subset=["loss"])["step"]) == [1, 2]
    assert TrainingResult.load(job.run_dir) == result


def test_job_cards_show_a_stop_as_cancelled_and_a_starting_job_as_loading():
    from nbtoolkit.runtime.progress import WAITING_TEXT, JobSnapshot, progress_html, state_html

    stopped = JobSnapshot("FAILED", "cancelled (killed: did not stop within 10 s)", done=True)
    card = state_html("sft", stopped, "sft_lora")
    assert "CANCELLED" in card and "FAILED" not in card and "sft_lora" in card and "did not stop" in card
    failed = state_html("sft", JobSnapshot("FAILED", "RuntimeError: boom", done=True))
    assert "FAILED" in failed and "boom" in failed
    assert WAITING_TEXT in progress_html(JobSnapshot("IN_PROGRESS"))
    assert progress_html(JobSnapshot("COMPLETED", done=True)) == ""
    assert "<progress value=\"3\" max=\"10\">" in progress_html(JobSnapshot("IN_PROGRESS", step=3, total=10))

"""JobMonitor: a scripted fake job, real LocalRuntime jobs (a model-free counter and a tiny-model SFT), Stop,
and the HTML fallback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from nbtoolkit.runtime import JobSpec, LocalRuntime  # noqa: E402
from nbtoolkit.training.config import SFTLoraConfig  # noqa: E402
from nbtoolkit.ui import HyperparameterForm, JobMonitor  # noqa: E402
from nbtoolkit.runtime.progress import EtaClock, format_seconds  # noqa: E402
from nbtoolkit.ui.monitor import WAITING_TEXT, clean_log  # noqa: E402

TESTS = Path(__file__).resolve().parent


class ScriptedJob:
    """A job double: each poll moves one RFT step further; cancel() ends it FAILED (stopped)."""

    name = "scripted"

    def __init__(self, total: int = 10) -> None:
        self.total, self.step, self.cancelled = total, 0, False

    def status(self):
        if self.cancelled:
            return {"state": "FAILED", "reason": "cancelled", "done": True}
        return "COMPLETED" if self.step >= self.total else "IN_PROGRESS"

    def progress(self):
        self.step = min(self.total, self.step + 1) if not self.cancelled else self.step
        return {"phase": "train", "step": self.step, "total": self.total, "elapsed": 2.0 * self.step}

    def metrics(self):
        return [{"step": s, "phase": "train", "reward_mean": -1 + 0.2 * s, "kl": 0.01 * s,
                 "completion_length": 10 - s / 2, "loss": 0.1} for s in range(1, self.step + 1)]

    def logs(self, tail=20):
        return "\n".join(f"step {s}" for s in range(1, self.step + 1))[-2000:]

    def cancel(self):
        time.sleep(0.2)  # a real cancel waits for the checkpoint: never on the kernel's thread
        self.cancelled = True


class RecordingHandle:
    def __init__(self) -> None:
        self.updates: list[str] = []

    def update(self, obj) -> None:
        self.updates.append(obj.data)


def test_eta_uses_observed_steps_then_the_jobs_elapsed_time():
    clock = EtaClock()
    assert clock.update("train", 5, 10, elapsed=10.0, now=100.0) == pytest.approx(10.0)  # 2 s/step from elapsed
    assert clock.update("train", 7, 10, now=106.0) == pytest.approx(9.0)  # 3 s/step seen by the monitor
    assert clock.update("eval", 1, 4, now=107.0) is None  # a new phase starts over
    assert clock.update("train", 10, 10, now=110.0) == 0.0
    assert format_seconds(3725) == "1:02:05" and format_seconds(65) == "1:05" and format_seconds(None) == "–"


def test_a_fake_rft_job_shows_progress_curves_and_logs():
    job = ScriptedJob(total=10)
    monitor = JobMonitor(job, start=False, poll=0.05)
    monitor.refresh()
    snapshot = monitor.refresh()
    assert (snapshot.state, snapshot.step, snapshot.total) == ("IN_PROGRESS", 3, 10)
    assert monitor.bar.value == pytest.approx(0.3) and "train 3/10" in monitor.progress_text.value
    assert "ETA" in monitor.progress_text.value
    assert "reward_mean -0.6" in monitor.numbers.value  # metrics were read before the third progress poll
    assert "kl 0.02" in monitor.numbers.value and monitor.curves.value[:4] == b"\x89PNG"
    assert "step 2" in monitor.log.value and not monitor.stop_button.disabled
    from nbtoolkit.plots import curve_names

    assert curve_names(snapshot.metrics) == ("reward_mean", "kl", "completion_length")
    monitor.start()
    assert monitor.join(10).state == "COMPLETED"
    assert monitor.bar.value == 1.0 and monitor.bar.bar_style == "success" and monitor.stop_button.disabled


def test_stop_cancels_from_a_thread_and_the_view_shows_it():
    job = ScriptedJob(total=1000)
    monitor = JobMonitor(job, poll=0.05)
    started = time.perf_counter()
    monitor.stop_button.click()
    assert time.perf_counter() - started < 0.15  # the click returns at once; cancel runs in a thread
    assert monitor.stop_button.disabled and monitor.stop_button.description == "Stopping…"
    snapshot = monitor.join(10)
    assert job.cancelled and snapshot.state == "FAILED" and snapshot.reason == "cancelled"
    # A user's Stop reads CANCELLED, in a neutral colour, the bar where the job stopped (not a full red bar).
    assert "CANCELLED" in monitor.status.value and "FAILED" not in monitor.status.value
    assert monitor.bar.bar_style == "warning" and monitor.bar.value < 1.0
    assert "CANCELLED" in monitor.fallback_html() and "FAILED" not in monitor.fallback_html()


def test_html_fallback_is_kept_current_through_a_display_handle():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    job = ScriptedJob(total=4)
    monitor = JobMonitor(job, start=False)
    with capture_output() as captured:
        monitor._ipython_display_()
    widget_output, card_output = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in widget_output.data
    assert "needs ipywidgets" in widget_output.data["text/plain"]
    card = card_output.data["text/html"]
    assert "<progress" in card and f"nbt-fallback-{monitor.uid}" in card and f".nbt-monitor-{monitor.uid}" in card
    assert f"nbt-monitor-{monitor.uid}" in monitor.widget._dom_classes  # the :has() rule hides the card then
    monitor._handle = RecordingHandle()
    monitor.refresh()
    monitor.refresh()
    assert len(monitor._handle.updates) == 2 and 'value="3" max="4"' in monitor._handle.updates[-1]


def test_a_real_local_job_is_followed_to_the_end(tmp_path):
    runtime = LocalRuntime(tmp_path / "runs", env={"PYTHONPATH": str(TESTS)})
    config = SFTLoraConfig.for_platform("local", max_steps=12, warmup_steps=1, save_steps=1)
    job = runtime.launch(JobSpec("jobs_for_tests:count", config=config, name="count", extra={"sleep": 0.05}))
    started = time.perf_counter()
    monitor = JobMonitor(job, poll=0.2)
    assert time.perf_counter() - started < 2 and monitor.thread.daemon  # polling never holds the caller
    snapshot = monitor.join(60)
    assert snapshot.state == "COMPLETED" and (snapshot.step, snapshot.total) == (12, 12)
    assert snapshot.numbers["loss"] == pytest.approx(1 / 12) and monitor.curves.value[:4] == b"\x89PNG"
    assert "COMPLETED" in monitor.log.value and monitor.stop_button.disabled


def test_stop_button_cancels_a_real_local_job(tmp_path):
    runtime = LocalRuntime(tmp_path / "runs", env={"PYTHONPATH": str(TESTS)})
    config = SFTLoraConfig.for_platform("local", max_steps=400, warmup_steps=1, save_steps=1)
    job = runtime.launch(JobSpec("jobs_for_tests:count", config=config, name="long", extra={"sleep": 0.05}))
    monitor = JobMonitor(job, poll=0.2)
    deadline = time.monotonic() + 30
    while (monitor.snapshot.step or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    monitor.stop().join(30)
    snapshot = monitor.join(30)
    assert snapshot.state == "FAILED" and job.status().stopped and snapshot.step < 400


@pytest.mark.slow
def test_a_tiny_model_sft_job_launched_from_the_form_shows_loss_and_lr(tmp_path):
    from nbtoolkit.models import tiny_model

    model = tiny_model(seed=0, vocab_from=None).save(tmp_path / "tiny")
    rows = [{"messages": [{"role": "system", "content": "Answer with the label only."},
                          {"role": "user", "content": f"How do I sort list number {i} in Python?"},
                          {"role": "assistant", "content": ("HQ", "LQ_EDIT", "LQ_CLOSE")[i % 3]}]} for i in range(8)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JobSpec("sft_lora", model=str(model), train_file=str(train), labels=("HQ", "LQ_EDIT", "LQ_CLOSE"),
                   name="tiny-sft")
    form = HyperparameterForm("sft_lora", runtime=LocalRuntime(tmp_path / "runs"), spec=spec, max_steps=3,
                              warmup_steps=1, save_steps=3, global_batch_size=2, micro_batch_size=2, max_length=48,
                              max_prompt_tokens=24, lora_r=4, alpha=8, lr=1e-3)
    job = form.launch_job(monitor=True)
    snapshot = form.monitor.join(300)
    assert snapshot.state == "COMPLETED", job.logs(30)
    assert list(snapshot.metrics.dropna(subset=["loss"])["step"]) == [1, 2, 3]
    assert {"loss", "lr"} <= set(snapshot.numbers) and form.monitor.curves.value[:4] == b"\x89PNG"
    assert job.result().ok


class SpikingJob(ScriptedJob):
    """A job double whose loss jumps tenfold at step 8."""

    def metrics(self):
        return [{"step": s, "phase": "train", "lr": 1e-4, "loss": 5.0 if s == 8 else 0.5}
                for s in range(1, self.step + 1)]


def test_the_monitor_shows_advice_when_the_loss_spikes():
    monitor = JobMonitor(SpikingJob(total=10), start=False, poll=0.05)
    for _ in range(6):
        monitor.refresh()
    assert monitor.advice.value == ""  # a steady loss: nothing to say
    for _ in range(3):
        monitor.refresh()
    assert "loss spike at step 8" in monitor.advice.value and "nbt-advice-warning" in monitor.advice.value


class LoadingJob(ScriptedJob):
    """A job still loading its model: running, no progress reported yet."""

    def progress(self):
        return None

    def status(self):
        return "IN_PROGRESS"


def test_while_the_model_loads_the_monitor_says_so_instead_of_an_empty_bar():
    monitor = JobMonitor(LoadingJob(), start=False)
    assert monitor.bar.layout.display == "none" and monitor.progress_text.value.startswith(WAITING_TEXT)
    assert WAITING_TEXT in monitor.fallback_html()
    steps = JobMonitor(ScriptedJob(), start=False)
    assert steps.bar.layout.display == "" and "train 1/10" in steps.progress_text.value


def test_the_log_tail_leaves_out_progress_bars_and_library_warnings():
    log = ("[12:00:01] loading model\n"
           "/venv/lib/python3.11/site-packages/transformers/x.py:12: FutureWarning: `foo` is deprecated\n"
           "  warnings.warn(\n"
           "Map:  40%|████      | 4/10 [00:01<00:02,  3.1 examples/s]\rMap: 100%|██████████| 10/10 [00:02<00:00]\n"
           "[12:00:05] step 1/10 loss 2.1\n"
           "generating:  50%|█████     | 13/26 [00:10<00:10]\n"
           "[12:00:09] step 2/10 loss 1.9")
    assert clean_log(log, tail=10) == ("[12:00:01] loading model\n[12:00:05] step 1/10 loss 2.1\n"
                                       "[12:00:09] step 2/10 loss 1.9")
    assert clean_log(log, tail=1) == "[12:00:09] step 2/10 loss 1.9"

"""HyperparameterForm without a browser: fields from the config dataclass, inline problems, dry run, launch."""

from __future__ import annotations

import dataclasses
import html
import json

import pytest

pytest.importorskip("ipywidgets")

from nbtoolkit.runtime import JobSpec, LocalRuntime  # noqa: E402
from nbtoolkit.training.config import RFTLoraConfig, SFTLoraConfig  # noqa: E402
from nbtoolkit.ui import HyperparameterForm  # noqa: E402


def _texts(output) -> str:
    return html.unescape(json.dumps(output.outputs, ensure_ascii=False))


def _grid_text(form) -> str:
    return " | ".join(getattr(c, "value", "") if isinstance(getattr(c, "value", ""), str) else ""
                      for c in form.grid.children)


@pytest.fixture
def data(tmp_path) -> dict[str, str]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 1000)  # a dry run never loads the weights
    rows = [{"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": ("HQ", "LQ_EDIT")[i % 2]}]} for i in range(16)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": str(model), "train_file": str(train)}


class FakeRuntime:
    """Anything with launch(spec, dry_run=...) can sit behind the form (a SageMaker runtime, for one)."""

    def __init__(self) -> None:
        self.launched: list[JobSpec] = []

    def launch(self, spec, *, dry_run=False):
        if dry_run:
            return f"would submit {spec.name} with lr={spec.config.lr:g}"
        self.launched.append(spec)
        return FakeJob(spec)


class FakeJob:
    def __init__(self, spec) -> None:
        self.spec, self.name = spec, spec.name

    def status(self):
        return "COMPLETED"

    def metrics(self):
        return [{"step": 1, "loss": 2.0, "lr": 1e-4}, {"step": 2, "loss": 1.0, "lr": 2e-4}]

    def logs(self, tail=20):
        return "done"

    def progress(self):
        return {"phase": "train", "step": 2, "total": 2}

    def cancel(self):
        return "COMPLETED"


def test_fields_follow_the_config_dataclass_with_both_default_sets():
    form = HyperparameterForm("sft_lora")
    assert set(form.fields) == {f.name for f in dataclasses.fields(SFTLoraConfig) if f.name != "platform"}
    assert form.lr.tooltip == SFTLoraConfig.help("lr") and form.lr.value == pytest.approx(2e-4)
    grid = _grid_text(form)
    assert "0.0002" in grid and "1e-05" in grid  # local and Nova defaults side by side
    assert "1e-07 .. 0.01" in grid  # the active platform's bounds
    assert form.value == SFTLoraConfig.for_platform("local")
    assert "local defaults" in form.messages.value and not form.launch.disabled
    form.platform.value = "nova"
    assert form.value == SFTLoraConfig.for_platform("nova")
    assert type(form.global_batch_size).__name__ == "Dropdown" and list(form.global_batch_size.options) == [32, 64, 128]
    assert "{32, 64, 128}" in _grid_text(form)
    assert "Nova: Amazon Nova on SageMaker" in form.platform_info.value


def test_out_of_bounds_values_show_inline_and_never_raise():
    form = HyperparameterForm("sft_lora")
    form.lr.value = 0.5
    assert "lr" in form.errors and "out of bounds for local" in form.messages.value
    assert "nbt-invalid" in form.lr._dom_classes and form.launch.disabled and form.dry_run_button.disabled
    with pytest.raises(ValueError, match="lr=0.5 is out of bounds"):
        form.value
    form.platform.value = "nova"
    form.set(global_batch_size=48, alpha=50)  # both shown at once
    assert set(form.errors) == {"global_batch_size", "alpha"}
    form.set(global_batch_size=64, alpha=64)
    assert form.errors == {} and "nbt-invalid" not in form.alpha._dom_classes


def test_cross_field_errors_mark_every_named_field():
    form = HyperparameterForm("rft_lora", number_generation=3)
    assert set(form.errors) == {"global_batch_size", "number_generation"}
    assert "multiple of number_generation" in form.messages.value
    form.number_generation.value = 4
    assert form.errors == {} and form.value == RFTLoraConfig.for_platform("local")


def test_launch_advice_shows_as_an_inline_warning():
    form = HyperparameterForm("sft_lora")
    form.lr.value = 5e-3
    assert form.errors == {} and any("10x away" in m for m in form.warnings)
    assert "nbt-warned" in form.lr._dom_classes and "⚠" in form.messages.value
    form.set(lr=2e-4, mixing=True)
    assert form.warnings == []
    form.lr.value = 3e-4
    assert any("while mixing data" in m for m in form.warnings)
    assert form.value.lr == pytest.approx(3e-4)  # a warning never blocks the config


def test_the_advisor_checks_show_before_launch():
    form = HyperparameterForm("sft_lora")
    form.set(max_steps=200, warmup_steps=15, save_steps=50)
    assert not any("warmup" in m for m in form.warnings)
    form.warmup_steps.value = 90
    assert any("about 15% is advised" in m for m in form.warnings) and "warmup_steps=30" in form.messages.value


def test_tuple_and_optional_fields_parse_from_text():
    form = HyperparameterForm("sft_lora", target_modules=("q_proj", "v_proj"))
    assert form.target_modules.value == "q_proj, v_proj" and form.value.target_modules == ("q_proj", "v_proj")
    assert "nbt-changed" in form.target_modules._dom_classes
    rft = HyperparameterForm("rft_lora")
    assert rft.reasoning_effort.value == "" and rft.value.reasoning_effort is None
    rft.reward.value = "format_aware"
    assert rft.value.reward == "format_aware"
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        rft.set(lrr=1)


def test_dry_run_shows_the_report_and_the_resolved_config(data, tmp_path):
    spec = JobSpec("sft_lora", model=data["model"], train_file=data["train_file"], name="form-sft")
    form = HyperparameterForm("sft_lora", runtime=LocalRuntime(tmp_path / "runs"), spec=spec, max_steps=100)
    assert form.spec.name == "form-sft" and form.spec.config.max_steps == 100
    form.dry_run_button.click()
    shown = _texts(form.output)
    assert "Dry run: all checks passed" in shown and "nothing launched" in shown
    assert "resolved config (1 changed from the local defaults: max_steps)" in shown
    assert "nbtoolkit.runtime.worker" in shown  # the exact command
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing
    form.platform.value = "nova"
    form.dry_run_button.click()
    assert "checks failed" in _texts(form.output) and "platform=&#x27;nova&#x27;" in json.dumps(form.output.outputs)


def test_launch_returns_the_runtime_job_and_shows_a_monitor(data):
    runtime = FakeRuntime()
    spec = JobSpec("sft_lora", model=data["model"], train_file=data["train_file"], name="fake", labels=("HQ",))
    form = HyperparameterForm("sft_lora", runtime=runtime, spec=spec)
    form.lr.value = 1e-4
    form.launch.click()
    assert runtime.launched[-1].config.lr == pytest.approx(1e-4) and runtime.launched[-1].labels == ("HQ",)
    assert form.job.name == "fake" and form.monitor is not None
    assert "application/vnd.jupyter.widget-view+json" in json.dumps(form.output.outputs)
    form.monitor.join(5)
    assert form.monitor.snapshot.state == "COMPLETED" and form.monitor.bar.value == 1.0
    job = form.launch_job()  # headless, the same launch
    assert job.spec == runtime.launched[-1] and len(runtime.launched) == 2
    assert form.dry_run() == "would submit fake with lr=0.0001"


def test_a_failed_launch_check_is_shown_not_raised(data, tmp_path):
    spec = JobSpec("sft_lora", model=data["model"], train_file=str(tmp_path / "missing.jsonl"), name="broken")
    form = HyperparameterForm("sft_lora", runtime=LocalRuntime(tmp_path / "runs"), spec=spec)
    form.launch.click()
    shown = _texts(form.output)
    assert "not launched" in shown and "no file at" in shown and form.job is None
    form.model.value = ""
    form.launch.click()
    assert "needs a model" in _texts(form.output)


def test_display_bundle_carries_an_html_fallback():
    bundle = HyperparameterForm("eval")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "did not render" in bundle["text/html"] and "max_new_tokens" in bundle["text/html"]


def test_reset_returns_to_the_opening_values_and_platform_defaults_are_a_separate_choice():
    profile = dataclasses.replace(SFTLoraConfig.for_platform("local"), max_steps=60)  # a profile's size
    spec = JobSpec("sft_lora", profile, model="m", train_file="t.jsonl")
    form = HyperparameterForm("sft_lora", spec=spec, lr=3e-4)
    opened = form.value
    form.set(max_steps=300, lr=1e-4)
    form.reset.click()
    assert form.value == opened and form.max_steps.value == 60 and form.lr.value == pytest.approx(3e-4)
    form.platform_defaults.click()
    assert form.value == SFTLoraConfig.for_platform("local")
    form.reset.click()
    assert form.value == opened


def test_a_changed_field_is_marked_without_overriding_the_theme_colours():
    form = HyperparameterForm("sft_lora", max_steps=40)
    assert "nbt-changed" in form.max_steps._dom_classes and "nbt-changed" not in form.lr._dom_classes
    style = form.widget.children[0].value
    assert "var(--jp-warn-color1" in style and "background:" not in style and "#fff8c5" not in style

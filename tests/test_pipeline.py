import pytest

from nbtoolkit.cli import main
from nbtoolkit.data.formats import read_jsonl
from nbtoolkit.generation import generate_replies
from nbtoolkit.models import tiny_model
from nbtoolkit.pipeline import PipelineConfig, load_stages, run_pipeline
from nbtoolkit.runtime.events import new_run_dir


def test_tiny_pipeline_runs_every_stage_and_writes_stages_and_report(tmp_path):
    lines = []
    out = tmp_path / "run"
    summary = run_pipeline(PipelineConfig(profile="tiny", out=str(out)), progress=False, log=lines.append)
    assert list(summary["stages"]) == ["baseline", "sft", "rft"]
    assert set(summary["deltas"]) == {"sft", "rft"}
    stages = load_stages(out)
    assert stages["stages"]["sft"]["n"] == 8
    assert stages["deltas"]["sft"]["exact_match"] == pytest.approx(
        stages["stages"]["sft"]["exact_match"] - stages["stages"]["baseline"]["exact_match"])
    for stage in ("baseline", "sft", "rft"):
        predictions = list(read_jsonl(f"{summary['jobs'][f'eval-{stage}']}/eval/predictions.jsonl"))
        assert len(predictions) == 8
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 5  # 3 confusion matrices, lengths, curves
    assert "Δ rft" in report
    assert (out / "data" / "manifest.json").exists()
    assert any("label accuracy" in line for line in lines)


def test_rft_without_sft_is_refused():
    with pytest.raises(ValueError, match="starts from the SFT checkpoint"):
        PipelineConfig(stages=("baseline", "rft"))


def test_train_and_eval_go_together():
    with pytest.raises(ValueError, match="both train and eval"):
        PipelineConfig(train="a.csv")


def test_run_directories_are_never_reused(tmp_path):
    first, second = new_run_dir(tmp_path, "job"), new_run_dir(tmp_path, "job")
    assert first != second and first.exists() and second.exists()


def test_generation_keeps_input_order_and_stops_at_the_template_terminator():
    loaded = tiny_model(seed=0, vocab_from=None)
    conversations = [[{"role": "user", "content": "a " * n}] for n in (30, 2, 11)]
    replies = generate_replies(loaded, conversations, max_new_tokens=5, batch_size=2, progress=False)
    singles = [generate_replies(loaded, [c], max_new_tokens=5, progress=False)[0] for c in conversations]
    assert [r.text for r in replies] == [s.text for s in singles]
    assert all(r.n_tokens <= 5 and r.truncated == (r.n_tokens == 5) for r in replies)


def test_pipeline_config_checks_values():
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        PipelineConfig(profile="tin")


def test_cli_pipeline_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert main(["pipeline", "--profile", "tiny", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep me"


def test_cli_model_info_for_a_nova_name_needs_no_download(capsys):
    assert main(["model", "info", "nova-lite-2"]) == 0
    out = capsys.readouterr().out
    assert "nova" in out.lower() and "SageMaker" in out


def test_cli_model_list(capsys):
    assert main(["model", "list"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out

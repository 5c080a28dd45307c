import json

import pytest

from nbtoolkit.cli import main
from nbtoolkit.data.formats import read_jsonl
from nbtoolkit.generation import generate_replies
from nbtoolkit.models import tiny_model
from nbtoolkit.pipeline import PipelineConfig, new_run_dir, run_pipeline


def test_tiny_pipeline_writes_data_baseline_and_summary(tmp_path):
    lines = []
    summary = run_pipeline(PipelineConfig(profile="tiny", baseline_samples=8, runs_dir=str(tmp_path)),
                           progress=False, log=lines.append)
    run_dir = tmp_path / summary["run_dir"].split("/")[-1]
    assert (run_dir / "data" / "manifest.json").exists()
    predictions = list(read_jsonl(run_dir / "baseline" / "predictions.jsonl"))
    assert len(predictions) == 8
    assert set(predictions[0]) == {"row", "reference", "reply", "predicted_label", "reply_tokens",
                                   "hit_max_new_tokens"}
    metrics = json.loads((run_dir / "baseline" / "metrics.json").read_text())
    assert metrics["n"] == 8 and 0 <= metrics["label_accuracy"] <= 1
    assert json.loads((run_dir / "summary.json").read_text())["stages"]["baseline"]["n"] == 8
    assert any("confusion matrix" in line for line in lines)


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
    with pytest.raises(ValueError, match="batch_size"):
        PipelineConfig(batch_size=0)


def test_cli_model_info_for_a_nova_name_needs_no_download(capsys):
    assert main(["model", "info", "nova-lite-2"]) == 0
    out = capsys.readouterr().out
    assert "nova" in out.lower() and "SageMaker" in out


def test_cli_model_list(capsys):
    assert main(["model", "list"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out

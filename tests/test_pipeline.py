import pytest

from nbtoolkit.cli import main
from nbtoolkit.data.formats import read_jsonl, write_jsonl
from nbtoolkit.errors import DataError, NbtoolkitError
from nbtoolkit.generation import generate_replies
from nbtoolkit.models import tiny_model
from nbtoolkit.pipeline import PipelineConfig, load_stages, run_pipeline
from nbtoolkit.runtime.events import new_run_dir
from nbtoolkit.ui import ResultsView


def test_tiny_pipeline_runs_every_stage_and_writes_stages_and_report(tmp_path):
    lines = []
    out = tmp_path / "run"
    benchmark = tmp_path / "colours.jsonl"
    write_jsonl([{"query": f"Question {i}: the sky is", "choices": ["blue", "green"], "gold": 0} for i in range(6)],
                benchmark)
    varied = tiny_model(seed=5, vocab_from=None, weight_std=0.3)  # replies with text: the retention probe works
    config = PipelineConfig(profile="tiny", model=str(varied.save(tmp_path / "model")), out=str(out),
                            general=("retention", str(benchmark)))
    summary = run_pipeline(config, progress=False, log=lines.append)
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
    first_job = next(i for i, line in enumerate(lines) if line.startswith("[baseline eval]"))
    assert any(line.startswith("estimate: pipeline, tiny profile (6 jobs)") for line in lines[:first_job])
    assert set(stages["resources"]) == set(stages["jobs"])  # every job's wall time and peak memory
    assert all(used["seconds"] > 0 and used["peak_rss_mb"] > 10 for used in stages["resources"].values())
    assert "jobs: eval-baseline " in lines[-1] and " GB, sft " in lines[-1]

    # choices on validation rows, numbers on the evaluation rows, each saying so
    assert stages["evaluation"]["split"] == "eval" and "no choice" in stages["evaluation"]["use"]
    assert {stages["stages"][s]["split"] for s in ("baseline", "sft", "rft")} == {"eval"}
    assert stages["stages"]["sft"]["rows"] == "8 of 12 rows, stratified sample (fixed seed)"
    selection = stages["selection"]
    assert selection["sft"]["split"] == "validation" and selection["sft"]["selected_step"] in (2, 4)
    assert set(selection["sft"]["by_step"]) == {"2", "4"}
    rft = selection["rft"]
    assert rft["validation_after"] == stages["validation"]["rft"]["exact_match"]
    assert rft["validation_before"] == selection["sft"]["selected_score"]
    assert rft["kept"] == (rft["validation_after"] >= rft["validation_before"])
    assert stages["final_stage"] == ("rft" if rft["kept"] else "sft")
    assert "exact_match_paired_stderr" in stages["deltas"]["rft"]
    sft_data = {line.split("\t")[0] for line in (out / "data" / "sft" / "chat.jsonl").read_text().splitlines()}
    rft_data = {line for line in (out / "data" / "rft" / "chat.jsonl").read_text().splitlines()}
    assert not sft_data & rft_data  # RFT prompts are rows SFT never trains on

    # general ability beside the domain metric: the benchmark after every stage, the retention probe after training
    general = stages["general"]
    assert list(general) == ["baseline", "sft", "rft"]
    assert general["baseline"]["colours_accuracy"] in {k / 6 for k in range(7)}
    assert "retention_mean_kl" not in general["baseline"]
    assert general["sft"]["retention_mean_kl"] > 0 and 0 <= general["rft"]["retention_top1_agreement"] <= 1
    assert "Domain and general ability" in report
    view = ResultsView(out)
    table = view.general_table()
    assert table.loc["colours_accuracy", "Δ sft"] == pytest.approx(
        general["sft"]["colours_accuracy"] - general["baseline"]["colours_accuracy"])
    assert table.loc["label_accuracy", "sft"] == pytest.approx(stages["stages"]["sft"]["label_accuracy"])
    assert "Domain and general ability" in view.fallback_html()


def test_a_failed_general_check_leaves_the_domain_results(tmp_path):
    out = tmp_path / "run"
    lines = []
    # the default tiny model answers rehearsal prompts with special tokens only: the retention probe fails
    summary = run_pipeline(PipelineConfig(profile="tiny", out=str(out), stages=("baseline", "sft"),
                                          general=("retention",)), progress=False, log=lines.append)
    assert summary["stages"]["sft"]["n"] == 8 and summary["general"] == {}
    assert "no usable reply" in load_stages(out)["general_errors"]["sft"]
    assert any("the pipeline goes on without it" in line for line in lines)
    assert (out / "report.html").is_file()


def test_an_unknown_or_broken_general_check_fails_before_any_work(tmp_path):
    with pytest.raises(NbtoolkitError, match="did you mean 'arc-easy'"):
        run_pipeline(PipelineConfig(profile="tiny", out=str(tmp_path / "run"), general=("arc-esy",)),
                     progress=False, log=lambda line: None)
    broken = tmp_path / "broken.jsonl"
    write_jsonl([{"query": "2 + 2 =", "choices": ["4", "5"], "gold": 0}, {"query": "1 + 1 =", "choices": ["2", "3"],
                                                                         "gold": 3}], broken)
    with pytest.raises(DataError, match="gold 3 is not an index") as caught:
        run_pipeline(PipelineConfig(profile="tiny", out=str(tmp_path / "run"), general=(str(broken),)),
                     progress=False, log=lambda line: None)
    assert "broken.jsonl" in str(caught.value) and "row" in str(caught.value)
    assert not (tmp_path / "run").exists()


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


def test_cli_pipeline_general_checks_are_named(tmp_path, capsys):
    assert main(["pipeline", "--profile", "tiny", "--general", "retention,arc-esy", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'arc-easy'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_the_standard_profile_fine_tunes_every_weight_in_the_pipeline_and_the_notebooks(tmp_path):
    from nbtoolkit.pipeline import PROFILES
    from nbtoolkit.training.config import SFTFullConfig
    from nbtoolkit.workspace import Workspace

    assert PROFILES["standard"].sft_method == "sft_full" and PROFILES["quick"].sft_method == "sft_lora"
    spec = Workspace(tmp_path / "nb", profile="standard", log=lambda message: None).spec("sft")
    assert spec.kind == "sft_full" and isinstance(spec.config, SFTFullConfig)
    assert (spec.config.lr, spec.config.max_steps) == (5e-5, 360)

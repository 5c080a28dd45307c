"""ResultsView and SampleExplorer over hand-made EvalResults, and the notebooks' Workspace records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ipywidgets")

from nbtoolkit.evaluation import EvalResult  # noqa: E402
from nbtoolkit.metrics import (  # noqa: E402
    confusion_matrix,
    gen_qa_metrics,
    label_metrics,
    label_predictions,
    per_class_metrics,
    response_length_metrics,
)
from nbtoolkit.stages import eval_job_name  # noqa: E402
from nbtoolkit.training.config import EvalConfig  # noqa: E402
from nbtoolkit.ui import ResultsView, SampleExplorer, filter_predictions, load_stage_results  # noqa: E402
from nbtoolkit.workspace import Workspace  # noqa: E402

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]
REFERENCES = ["HQ", "LQ_EDIT", "LQ_CLOSE", "HQ", "LQ_CLOSE", "LQ_EDIT"]


def fake_result(replies: list[str], references: list[str] = REFERENCES) -> EvalResult:
    """What evaluate() returns, computed from given replies (no model)."""
    predicted = label_predictions(replies, LABELS)
    tokens = [len(r.split()) for r in replies]
    metrics = {"n": len(replies), **gen_qa_metrics(replies, references, bleu_resamples=20),
               **label_metrics(replies, references, LABELS), **response_length_metrics(replies, tokens)}
    predictions = pd.DataFrame({
        "row": range(len(replies)), "query": [f"How do I parse date {i} in Python?" for i in range(len(replies))],
        "reference": references, "reply": replies, "predicted_label": predicted,
        "correct": [p == r for p, r in zip(predicted, references)], "reply_tokens": tokens,
        "reply_chars": [len(r) for r in replies], "hit_max_new_tokens": [t >= 8 for t in tokens]})
    return EvalResult(metrics, predictions, confusion_matrix(references, predicted, LABELS),
                      per_class_metrics(references, predicted, LABELS), EvalConfig(max_new_tokens=8), LABELS, "m")


def record_evals(ws: Workspace, jobs_dir: Path, results: dict[str, EvalResult]) -> None:
    """Record finished evaluations in a Workspace as its eval jobs would (each saved in jobs_dir/eval-<stage>)."""

    class FinishedEval:
        def __init__(self, run_dir: Path, result: EvalResult) -> None:
            self.run_dir = run_dir
            result.save(run_dir / "eval")

    for stage, result in results.items():
        ws.record_eval(stage, FinishedEval(jobs_dir / f"eval-{stage}", result))


@pytest.fixture(scope="module")
def stages() -> dict[str, EvalResult]:
    verbose = "I think this question is HQ because it shows research and code"
    return {"baseline": fake_result([verbose] * 6),
            "sft": fake_result(["HQ", "LQ_EDIT", "HQ", "HQ", "LQ_CLOSE", "LQ_CLOSE"]),
            "rft": fake_result(["HQ", "LQ_EDIT", "LQ_CLOSE", "HQ", "LQ_CLOSE", "LQ_CLOSE"])}


def test_stage_table_has_deltas_overall_change_and_stderr(stages):
    view = ResultsView(stages)
    table = view.table()
    assert list(table.columns) == ["baseline", "sft", "rft", "Δ sft", "Δ rft", "Δ rft − baseline"]
    assert table.loc["label_accuracy", "rft"] == pytest.approx(5 / 6)
    assert table.loc["label_accuracy", "Δ rft − baseline"] == pytest.approx(5 / 6 - 2 / 6)
    stderr = stages["rft"].metrics["label_accuracy_stderr"]
    assert f"0.833 ± {stderr:.3f}" in view.styler().to_html()
    final = view.final_table().to_html()
    assert "rouge2" in final and "bleu_lighteval_legacy" in final and "Final result analysis" in final
    assert "case study" in final


def test_figures_show_every_stage(stages):
    view = ResultsView(stages)
    confusion = view.confusion_figure()
    assert [ax.get_title() for ax in confusion.axes] == ["baseline", "sft", "rft"]
    lengths = view.lengths_figure().axes[0]
    assert {t.get_text() for t in lengths.get_legend().get_texts()} == {"baseline", "sft", "rft"}
    assert any(line.get_linestyle() == "--" for line in lengths.get_lines())  # max_new_tokens = 8
    per_class = view.per_class()
    assert per_class.loc["LQ_CLOSE", ("rft", "recall")] == 1.0 and per_class.loc["LQ_CLOSE", ("sft", "recall")] == 0.5
    assert view.per_class_figure().axes[0].get_title() == "Per-class f1"


def test_results_widget_has_tabs_with_table_images_and_explorer(stages):
    view = ResultsView(stages)
    tabs = view.widget
    assert tabs.titles == ("Metrics", "Confusion", "Lengths", "Per class", "Samples")
    assert len(tabs.children[0].children) == 1  # no general-ability table when none was measured
    assert "Δ rft − baseline" in tabs.children[0].children[0].value
    for image in tabs.children[1:3]:  # vector figures at their own size, never wider than the tab
        assert image.format == "svg+xml" and b"<svg" in bytes(image.value)
        assert int(image.layout.width.removesuffix("px")) <= 720 and image.layout.max_width.startswith("calc(100%")
    assert view.explorer.stage.options == ("baseline", "sft", "rft")
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "<img" in bundle["text/html"]


def test_results_view_puts_general_ability_beside_the_domain_metric(stages):
    from nbtoolkit.forgetting import GeneralEvalResult

    def general(accuracy, kl):
        metrics = {"arc-easy": {"accuracy": accuracy, "accuracy_stderr": 0.02, "accuracy_norm": accuracy, "n": 200,
                                "chance": 0.25}}
        retention = None if kl is None else {"mean_kl": kl, "logprob_drop": kl / 2, "top1_agreement": 1 - kl}
        return GeneralEvalResult("m", metrics, retention=retention)

    view = ResultsView(stages, general={"baseline": general(0.62, None), "sft": general(0.55, 0.2),
                                        "rft": general(0.56, 0.25)})
    table = view.general_table()
    assert list(table.index[:2]) == ["label_accuracy", "exact_match"]
    assert table.loc["arc-easy_accuracy", "Δ sft"] == pytest.approx(-0.07)
    assert table.loc["retention_mean_kl", "Δ rft"] == pytest.approx(0.05)
    assert table.loc["label_accuracy", "sft"] == pytest.approx(stages["sft"].metrics["label_accuracy"])
    metrics_tab = view.widget.children[0]
    assert "nbt-general-table" in metrics_tab.children[1]._dom_classes
    assert "retention_mean_kl" in metrics_tab.children[1].value
    assert "arc-easy_accuracy" in view.fallback_html()
    assert ResultsView(stages).general_table() is None


def test_filter_predictions_combines_filters(stages):
    frame = stages["sft"].predictions
    assert list(filter_predictions(frame, correct=False)["row"]) == [2, 5]
    assert list(filter_predictions(frame, true_label="LQ_CLOSE", predicted_label="HQ")["row"]) == [2]
    assert list(filter_predictions(frame, search="date 4")["row"]) == [4]
    long = filter_predictions(stages["baseline"].predictions, min_tokens=10)
    assert len(long) == 6 and filter_predictions(stages["baseline"].predictions, max_tokens=5).empty


def test_sample_explorer_filters_pages_and_shows_prompt_reply_reference(stages):
    explorer = SampleExplorer(stages, page_size=2, prompts={0: "FULL PROMPT of row 0"})
    assert explorer.stage.value == "baseline" and "<b>6</b> of 6" in explorer.summary.value
    assert "FULL PROMPT of row 0" in explorer.samples.value and "reference" in explorer.samples.value
    assert "page 1 of 3" in explorer.page.value and explorer.previous.disabled
    explorer.next.click()
    assert "page 2 of 3" in explorer.page.value and not explorer.previous.disabled
    explorer.stage.value = "sft"
    explorer.outcome.value = "wrong"
    assert list(explorer.matches["row"]) == [2, 5] and "<b>2</b> of 6" in explorer.summary.value
    explorer.true_label.value = "LQ_EDIT"
    assert list(explorer.matches["row"]) == [5]
    card = explorer.samples.value
    assert "wrong" in card and "LQ_CLOSE" in card and "date 5" in card
    explorer.outcome.value = "all"
    explorer.true_label.value = "(all)"
    explorer.predicted_label.value = "LQ_CLOSE"
    assert list(explorer.matches["row"]) == [4, 5]
    explorer.stage.value = "baseline"
    explorer.length.value = (0, 5)
    assert explorer.matches.empty and "no sample matches" in explorer.samples.value
    with pytest.raises(ValueError, match="lacks columns"):
        SampleExplorer(pd.DataFrame({"reply": ["x"]}))


def test_workspace_records_feed_the_results_view(tmp_path, stages):
    ws = Workspace(tmp_path / "nb", profile="tiny", log=lambda message: None)
    files = ws.data_files()  # notebook 01 did not run: synthetic data is prepared
    assert files.sft.is_file() and files.eval.is_file() and files.rft.is_file()
    assert files.labels == ("HQ", "LQ_EDIT", "LQ_CLOSE")
    spec = ws.spec("sft", name="my-sft")
    assert spec.kind == "sft_lora" and spec.name == "my-sft" and spec.config.max_steps == 4
    assert spec.train_file == str(files.sft) and Path(spec.model).name == "tiny"

    record_evals(ws, tmp_path / "jobs", {stage: stages[stage] for stage in ("sft", "baseline")})
    summary = json.loads((tmp_path / "nb" / "stages.json").read_text())
    assert list(summary["stages"]) == ["baseline", "sft"]  # kept in stage order
    loaded = load_stage_results(tmp_path / "nb")
    assert list(loaded) == ["baseline", "sft"]
    assert loaded["sft"].metrics["label_accuracy"] == pytest.approx(stages["sft"].metrics["label_accuracy"])
    assert list(ws.results(build=False)) == ["baseline", "sft"]
    assert ResultsView(tmp_path / "nb").table().loc["label_accuracy", "Δ sft"] == pytest.approx(2 / 6)


def test_plot_helpers_for_curves_and_label_shares():
    from nbtoolkit.data import label_distribution
    from nbtoolkit.plots import label_distribution_figure, training_curves_figure

    sft = pd.DataFrame({"step": [1, 2, 3], "loss": [2.0, 1.5, 1.0], "lr": [1e-4, 2e-4, 2e-4],
                        "eval_loss": [None, None, 1.2]})
    figure = training_curves_figure(sft, title="SFT")
    assert [ax.get_title() for ax in figure.axes] == ["loss", "lr"]
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["loss", "eval_loss"]
    rft = pd.DataFrame({"step": [0, 1, 2], "reward_mean": [-1.0, 0.0, 0.5], "eval_reward_mean": [None, None, 0.4],
                        "kl": [None, 0.1, 0.2], "completion_length": [None, 3.0, 4.0]})
    axes = training_curves_figure(rft).axes
    assert [ax.get_title() for ax in axes] == ["reward_mean", "kl", "completion_length"]
    assert [line.get_label() for line in axes[0].get_lines()] == ["reward_mean", "eval_reward_mean"]
    assert training_curves_figure(pd.DataFrame()).axes[0].texts[0].get_text() == "no metrics yet"
    splits = {"sft": pd.DataFrame({"answer": ["HQ", "HQ", "LQ_EDIT", "LQ_EDIT"]}),
              "eval": pd.DataFrame({"answer": ["HQ", "LQ_EDIT"]})}
    ax = label_distribution_figure(label_distribution(splits, "answer")).axes[0]
    assert sorted(round(bar.get_height(), 2) for bar in ax.patches if bar.get_height()) == [0.5, 0.5, 0.5, 0.5]


def test_counts_are_whole_numbers_and_blank_text_says_blank(stages):
    view = ResultsView(stages)
    per_class = view.per_class()
    assert str(per_class[("rft", "support")].dtype) == "Int64"
    html_table = view.widget.children[3].children[0].value
    assert ">2<" in html_table and ">2.000<" not in html_table
    blank = stages["rft"].predictions.copy()
    blank.loc[0, "query"] = float("nan")
    explorer = SampleExplorer(blank)
    assert "NaN" not in explorer.samples.value and "nan" not in explorer.samples.value.split("(blank)")[0][-20:]
    assert "(blank)" in explorer.samples.value


def test_the_max_new_tokens_marker_stays_inside_the_length_histogram(stages):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nbtoolkit.plots import response_length_figure

    lengths = {s: r.predictions["reply_tokens"].tolist() for s, r in stages.items()}
    for figure in (ResultsView(stages).lengths_figure(), Figure(figsize=(5, 1.8))):
        ax = figure.axes[0] if figure.axes else figure.add_subplot()
        if not ax.texts:  # a short panel: the label has little room above the bars
            response_length_figure(lengths, ax=ax, limit=8)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        marker = next(t for t in ax.texts if "max_new_tokens" in t.get_text())
        box, frame = marker.get_window_extent(canvas.get_renderer()), ax.get_window_extent(canvas.get_renderer())
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1 + 0.5


def test_the_label_filters_show_all_rather_than_nothing(stages):
    explorer = SampleExplorer(stages)
    for dropdown in (explorer.true_label, explorer.predicted_label):
        assert dropdown.value == "(all)" and dropdown.index == 0
    explorer.true_label.value = "HQ"
    explorer.stage.value = "sft"  # new options: the filter returns to "(all)", visibly
    assert explorer.true_label.index == 0


def test_building_missing_stages_shows_a_progress_bar_per_job(tmp_path, monkeypatch):
    """Workspace.build waits on each job it launched with its progress bar (not one silent line for minutes)."""
    from types import SimpleNamespace

    waited = []

    class RecordingJob:
        def __init__(self, name):
            self.name, self.run_dir = name, tmp_path / name

        def wait(self, progress=True, **kwargs):
            waited.append((self.name, progress))

    ws = Workspace(tmp_path / "nb", profile="tiny", log=lambda message: None)
    monkeypatch.setattr(Workspace, "runtime", property(lambda self: SimpleNamespace(launch=lambda spec: RecordingJob(
        spec.name))))
    monkeypatch.setattr(ws, "data_files", lambda: None)
    monkeypatch.setattr(ws, "spec", lambda name: SimpleNamespace(name=name))

    def record(kind):
        def recorder(stage, job):
            summary = ws.summary()
            Path(job.run_dir, "eval").mkdir(parents=True, exist_ok=True)
            getattr(summary, "models" if kind == "model" else "jobs")[
                stage if kind == "model" else eval_job_name(stage)] = str(job.run_dir)
            summary.save(ws.workdir)
        return recorder

    monkeypatch.setattr(ws, "record_training", record("model"))
    monkeypatch.setattr(ws, "record_eval", record("eval"))
    ws.build(("baseline", "sft"))
    assert [name for name, _ in waited] == ["eval-baseline", "sft", "eval-sft"]
    assert all(progress for _, progress in waited)


def test_a_packed_example_run_opens_labelled_as_an_example(tmp_path, stages, monkeypatch):
    import nbtoolkit.examples as examples
    from nbtoolkit.errors import NbtoolkitError

    ws = Workspace(tmp_path / "nb", profile="tiny", log=lambda message: None)
    record_evals(ws, tmp_path / "jobs", stages)
    target = tmp_path / "package" / "run"
    assert not examples.example_available(target)
    examples.pack_example_run(tmp_path / "nb", target, description="3 stages of a tiny test run")
    with pytest.raises(NbtoolkitError, match="above 1,000"):
        examples.pack_example_run(tmp_path / "nb", tmp_path / "small", description="x", max_bytes=1000)
    assert not (tmp_path / "small").exists() and not (tmp_path / "small.packing").exists()
    shutil.rmtree(tmp_path / "jobs")  # the packed copy stands alone (relative paths)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert examples.example_available(target) and size < 100_000

    loaded = examples.example_results(target)
    assert list(loaded) == ["baseline (example)", "sft (example)", "rft (example)"]
    pd.testing.assert_frame_equal(loaded["sft (example)"].predictions, stages["sft"].predictions,
                                  check_dtype=False)
    monkeypatch.setenv(examples.EXAMPLE_DIR_ENV, str(target))
    view = ResultsView.example()
    tabs = view.widget
    assert "Example run, not yours: 3 stages of a tiny test run" in tabs.children[0].children[0].value
    assert "rft (example)" in view.styler().to_html() and "Example run" in view.fallback_html()
    assert view.explorer.stage.options == tuple(loaded) == SampleExplorer.example().stage.options
    with pytest.raises(NbtoolkitError, match="no example run bundled"):
        examples.example_results(tmp_path / "nothing")


def test_the_bundled_example_is_a_finished_held_out_run(monkeypatch):
    import nbtoolkit.examples as examples

    monkeypatch.delenv(examples.EXAMPLE_DIR_ENV, raising=False)
    assert examples.example_available()
    loaded = examples.example_results()
    assert list(loaded) == ["baseline (example)", "sft (example)", "rft (example)"]
    assert all(len(result.predictions) == 600 for result in loaded.values())
    summary = json.loads((examples.EXAMPLE_DIR / "stages.json").read_text())
    for stage, result in loaded.items():
        assert summary["stages"][stage.removesuffix(examples.EXAMPLE_SUFFIX)]["exact_match"] == \
            pytest.approx(result.metrics["exact_match"])
    assert loaded["sft (example)"].metrics["exact_match"] > 0.8  # a trained model, not a placeholder
    description = examples.example_description()
    assert "held-out" in description and "CC BY-SA" in description

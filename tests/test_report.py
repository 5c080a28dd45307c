import pandas as pd

from nbtoolkit.metrics import confusion_matrix
from nbtoolkit.report import write_report


def test_report_is_self_contained_html_with_every_section(tmp_path):
    confusion = confusion_matrix(["HQ", "LQ_EDIT"], ["HQ", "HQ"], ["HQ", "LQ_EDIT"])
    curve = pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})
    path = write_report(tmp_path / "report.html", "Run <1>",
                        {"baseline": {"exact_match": 0.0}, "sft": {"exact_match": 0.5}},
                        confusions={"baseline": confusion, "sft": confusion},
                        reply_lengths={"baseline": [20, 24], "sft": [2, 2]}, max_new_tokens=24,
                        curves={"SFT loss": (curve, "loss")}, notes=["synthetic data"])
    text = path.read_text()
    assert text.startswith("<!doctype html>") and "Run &lt;1&gt;" in text
    assert text.count("data:image/png;base64,") == 4
    for heading in ("Metrics by stage", "Confusion matrices", "Response lengths", "Training curves"):
        assert heading in text
    assert "0.500" in text and "synthetic data" in text and "src=\"http" not in text


def test_report_tables_curves_and_scoring_say_what_they_show(tmp_path):
    import numpy as np

    sampled = {"n": 500, "rows_total": 600, "split": "eval", "rows": "500 of 600 rows, stratified sample (fixed seed)"}
    stages = {"baseline": {"label_accuracy": 0.3, "no_valid_prediction": 500, "reply_tokens_mean": 40.0, **sampled},
              "sft": {"label_accuracy": 0.8, "no_valid_prediction": 10, "reply_tokens_mean": 3.0, "n": 500,
                      "rows_total": 600, "split": "eval"},
              "rft": {"label_accuracy": 0.85, "no_valid_prediction": 10, "reply_tokens_mean": 3.0, "n": 600}}
    general = {"baseline": {"general_accuracy": 0.4}, "sft": {"general_accuracy": 0.38}}
    rng = np.random.default_rng(0)
    reward = pd.DataFrame({"step": range(1, 61), "reward_mean": rng.choice([-1.0, 1.0], 60),
                           "eval_reward_mean": [np.nan] * 60})
    text = write_report(tmp_path / "report.html", "run", stages, general=general,
                        curves={"RFT reward": (reward, "reward_mean")}).read_text()
    captions = [line.split("<caption>")[1].split("</caption>")[0] for line in text.split("\n") if "<caption>" in line]
    assert len(captions) == 2 and len(set(captions)) == 2
    # Fewer invalid replies and shorter replies are gains: green (RdYlGn's high end), never red.
    from nbtoolkit.plots import stage_table, stage_table_styler

    styled = stage_table_styler(stage_table(stages))
    styled._compute()
    table = stage_table(stages)
    cell = {(table.index[r], table.columns[c]): dict(css) for (r, c), css in
            ((k, v) for k, v in styled.ctx.items())}
    green = cell[("no_valid_prediction", "Δ sft")]["background-color"]
    assert int(green[1:3], 16) < int(green[3:5], 16), f"fewer invalid replies coloured {green}"
    shorter = cell[("reply_tokens_mean", "Δ sft")]["background-color"]
    assert int(shorter[1:3], 16) < int(shorter[3:5], 16), f"shorter replies coloured {shorter}"
    assert "490" in styled.to_html() and "490.000" not in styled.to_html()
    # A delta that cannot be computed is a plain cell, not a black one.
    missing = stage_table_styler(stage_table({"a": {"exact_match": 0.5}, "b": {"label_accuracy": 0.5}}))
    missing._compute()
    assert all(css.get("background-color", "transparent") == "transparent" for (r, c), css in
               ((k, dict(v)) for k, v in missing.ctx.items()))
    assert "Scored on: baseline: 500 of 600 rows, stratified sample (fixed seed), eval split; sft: 500 of 600 rows, " \
           "eval split" in text
    assert "rft: 600 rows (split not recorded)" in text
    from nbtoolkit.plots import training_curve_figure
    from nbtoolkit.report import curve_smoothing

    ax = training_curve_figure(reward, y="reward_mean", smooth=curve_smoothing(reward, "reward_mean")).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["reward_mean (raw)", "reward_mean (mean of 4 steps)"]  # no entry for the empty eval line
    assert ax.get_lines()[0].get_alpha() < 0.5

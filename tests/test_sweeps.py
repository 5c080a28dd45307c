"""Sweeps: grid expansion, Pareto front, best run, and a tiny sweep end to end with a random-init model."""

from __future__ import annotations

import json
import random
import warnings

import pandas as pd
import pytest
from matplotlib.figure import Figure

from conftest import shared_file
from nbtoolkit.mixing import MixConfig
from nbtoolkit.models import tiny_model
from nbtoolkit.runtime import JobSpec
from nbtoolkit.sweeps import Sweep, best_run, grid_points, job_threads_env, pareto_front
from nbtoolkit.training.config import EvalConfig, SFTLoraConfig

pytestmark = pytest.mark.filterwarnings("ignore::nbtoolkit.training.config.HyperparameterWarning")


def test_grid_points_cover_every_combination_in_order():
    points = grid_points({"lr": [1e-4, 2e-4], "alpha": [16, 32, 64]})
    assert len(points) == 6 and points[0] == {"lr": 1e-4, "alpha": 16} and points[-1] == {"lr": 2e-4, "alpha": 64}
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"lr": 1e-4})


def test_pareto_front_keeps_runs_no_other_beats_on_both():
    table = pd.DataFrame({"general": [0.6, 0.5, 0.55, 0.4, None], "domain": [0.5, 0.8, 0.6, 0.7, 0.9]})
    assert list(pareto_front(table, "general", "domain")) == [True, True, True, False, False]


def test_best_run_respects_the_general_floor():
    table = pd.DataFrame({"general_accuracy": [0.60, 0.595, 0.50, 0.58], "label_accuracy": [0.1, 0.6, 0.9, 0.7],
                          "pareto": [False, True, True, True]}, index=pd.Index(["base", 0, 1, 2], name="run"))
    assert best_run(table, "label_accuracy", "general_accuracy").name == 0        # within 1 point of base
    assert best_run(table, "label_accuracy", "general_accuracy", max_general_drop=0.05).name == 2
    assert best_run(table, "label_accuracy", "general_accuracy", max_general_drop=None).name == 1  # best sum


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    model = str(tiny_model(seed=0, vocab_from=None).save(root / "model"))
    rng = random.Random(0)

    def rows(n, answers):
        return "".join(json.dumps({"messages": [
            {"role": "user", "content": f"is {w} {rng.randint(0, 99)} good?"},
            {"role": "assistant", "content": answers[w]}]}) + "\n" for w in rng.choices(list(answers), k=n))

    (root / "train.jsonl").write_text(rows(24, {"apple": "A", "stone": "B"}))
    (root / "eval.jsonl").write_text(rows(6, {"apple": "A", "stone": "B"}))
    general = {}
    for category in ("reasoning-instruction-following", "rai"):
        (root / f"{category}.jsonl").write_text(rows(6, {"hi": "hello there", "yo": "hi friend"}))
        general[category] = str(root / f"{category}.jsonl")
    return {"root": root, "model": model, "general": general}


def base_spec(files, **config):
    values = {"max_steps": 2, "warmup_steps": 0, "save_steps": 2, "global_batch_size": 4, "micro_batch_size": 4,
              "max_length": 48, "max_prompt_tokens": 24, **config}
    return JobSpec("sft_lora", SFTLoraConfig.for_platform("local", **values), model=files["model"],
                   train_file=str(files["root"] / "train.jsonl"), labels=("A", "B"), name="sw")


def test_points_become_specs_with_mix_and_advice(files, tmp_path):
    mix = MixConfig(50, {"reasoning-instruction-following": 70, "rai": 30})
    sweep = Sweep(base_spec(files, max_steps=10, warmup_steps=2, save_steps=5),
                  {"customer_data_percent": [100, 50], "steps": [20], "lr": [2e-4, 5e-4]}, out_dir=tmp_path,
                  mix=mix, general_files=files["general"])
    assert len(sweep.specs) == 4
    first, last = sweep.specs[0], sweep.specs[-1]
    assert first.config.max_steps == 20 and first.config.warmup_steps == 4 and first.config.save_steps == 5
    assert first.extra["mix"] == MixConfig.customer_only().to_dict() and not first.config.mixing
    assert last.extra["mix"]["customer_data_percent"] == 50 and last.config.mixing and last.config.lr == 5e-4
    assert set(last.extra["general_data"]) == set(mix.category_weights)
    assert sweep.points[-1]["advice"] and not sweep.points[0]["advice"]   # lr changed while mixing
    with pytest.raises(ValueError, match="did you mean 'alpha'"):
        Sweep(base_spec(files), {"alpah": [16]}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="did you mean 'limit'"):
        Sweep(base_spec(files), {"lr": [1e-4]}, out_dir=tmp_path, general={"limt": 3})
    with pytest.raises(ValueError, match="needs category weights"):
        Sweep(base_spec(files), {"customer_data_percent": [50]}, out_dir=tmp_path)


def test_a_tiny_sweep_runs_end_to_end(files, tmp_path):
    data_dir = shared_file("arc-easy/arc_easy_test.jsonl").parents[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sweep = Sweep(base_spec(files), {"customer_data_percent": [100, 50]}, out_dir=tmp_path / "sweep",
                      general_files=files["general"], eval_file=files["root"] / "eval.jsonl",
                      validation_file=files["root"] / "eval.jsonl",
                      eval_config=EvalConfig.for_platform("local", limit=4, max_new_tokens=2, batch_size=4),
                      general={"benchmarks": ["arc-easy"], "limit": 3, "data_dir": str(data_dir)},
                      max_parallel=2, poll=0.2)
    assert sweep.choice_metric == "validation_label_accuracy"
    assert sweep.start() is sweep
    table = sweep.wait(timeout=600)
    assert not sweep.running
    assert list(table.index) == ["base", 0, 1]
    assert list(table["state"]) == ["done"] * 3, table["error"].tolist()
    assert list(table["realized_customer_percent"].iloc[1:]) == [100.0, 50.0]
    for column in ("label_accuracy", "validation_label_accuracy", "general_accuracy", "arc-easy_accuracy"):
        assert table[column].notna().all(), column
    assert table.loc[[0, 1], "final_loss"].notna().all()
    assert table.loc[[0, 1], "pareto"].any()
    assert sweep.best(max_general_drop=None).name in (0, 1)
    with pytest.warns(UserWarning, match="validation_file"):
        Sweep(base_spec(files), {"lr": [1e-4]}, out_dir=tmp_path / "s2", eval_file=files["root"] / "eval.jsonl")
    assert isinstance(sweep.pareto_figure(), Figure)
    pd.testing.assert_frame_equal(Sweep.load(tmp_path / "sweep"), table)
    mixed_run = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["points"][1]["jobs"]["train"]
    assert json.loads(open(f"{mixed_run}/mix.json").read())["realized"]["sources"]["customer"]["rows"] == 4
    threads = json.loads(open(f"{mixed_run}/job.json").read())["runtime"]["env"]["OMP_NUM_THREADS"]
    assert threads == job_threads_env(2)["OMP_NUM_THREADS"]  # two jobs at once share the cores


def test_jobs_side_by_side_share_the_cores():
    assert job_threads_env(1, cores=2) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert job_threads_env(2, cores=2)["OMP_NUM_THREADS"] == "1"
    assert job_threads_env(3, cores=8)["OMP_NUM_THREADS"] == "2"
    assert job_threads_env(4, cores=2)["OMP_NUM_THREADS"] == "1"  # never zero


def test_cancel_stops_the_running_jobs_and_the_rest(tmp_path):
    """Model-free jobs (tests/jobs_for_tests.py) that sleep: cancel() ends every point 'cancelled'."""
    import time
    from pathlib import Path

    from nbtoolkit.runtime import LocalRuntime

    tests = Path(__file__).resolve().parent
    config = SFTLoraConfig.for_platform("local", max_steps=400, warmup_steps=60, save_steps=100)
    base = JobSpec("jobs_for_tests:count", config, name="slow", extra={"sleep": 0.05})
    sweep = Sweep(base, {"lr": [1e-4, 2e-4]}, out_dir=tmp_path, baseline=False, poll=0.1,
                  runtime=LocalRuntime(tmp_path / "runs", env={"PYTHONPATH": str(tests)}))
    sweep.start()
    deadline = time.monotonic() + 60
    while sweep.results()["state"].iloc[0] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    sweep.cancel()
    table = sweep.wait(timeout=120)
    assert list(table["state"]) == ["cancelled", "cancelled"]

"""SFT settings compared on validation rows, with one finished pipeline run's data split.

    .venv/bin/python benchmarks/sft_recipe.py validate RUN_DIR --variant NAME '{"frozen_layers": 20}' [--variant ...]
    .venv/bin/python benchmarks/sft_recipe.py test RUN_DIR NAME

`validate` trains the standard profile's SFT (its settings plus each variant's overrides) from the base model on
RUN_DIR's SFT training rows, with the same checkpoint choice on RUN_DIR's validation rows as the pipeline, then
scores the chosen model on those validation rows, paired against RUN_DIR's own SFT model. Choose on that table
only. `test` then scores the chosen variant once on RUN_DIR's evaluation rows, paired against the SFT stage's
predictions already there. Results accumulate in RUN_DIR/sft-recipe/results.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.rft_recipe import command_line, eval_on, run_files, score_row  # noqa: E402
from nbtoolkit.evaluation import EvalResult  # noqa: E402
from nbtoolkit.runtime import JobSpec, LocalRuntime  # noqa: E402
from nbtoolkit.runtime.events import read_json, write_json_atomic  # noqa: E402
from nbtoolkit.stages import PROFILES  # noqa: E402
from nbtoolkit.training.config import config_from_dict  # noqa: E402


def validate(run: Path, variants: list[tuple[str, dict]]) -> dict:
    files = run_files(run)
    job_file = read_json(Path(files["sft_model"]) / "job.json")
    sft = job_file["spec"]
    here = Path(job_file["cwd"])  # the spec's paths are relative to the directory the pipeline ran in
    extra = {k: str(here / v) if k.endswith("_file") else v for k, v in sft["extra"].items()}
    out = run / "sft-recipe"
    runtime = LocalRuntime(out / "jobs")
    results_file = out / "results.json"
    results = read_json(results_file) if results_file.exists() else {"validation": {}, "test": {}, "jobs": {}}
    rows = PROFILES["standard"].validation["rows"]
    base = eval_on(runtime, files["sft_model"], files["validation_file"], files["labels"], "validate-sft", limit=rows)
    results["validation"]["sft"] = score_row(base, None)
    for name, overrides in variants:
        config = config_from_dict({**sft["config"], **overrides})
        job = runtime.launch(JobSpec(sft["kind"], config, model=sft["model"], train_file=str(here / sft["train_file"]),
                                     eval_file=str(here / sft["eval_file"]), labels=sft["labels"], name=f"sft-{name}",
                                     extra=extra))
        result = job.wait(progress=False)
        after = eval_on(runtime, str(job.run_dir), files["validation_file"], files["labels"], f"validate-{name}",
                        limit=rows)
        output = result.output or {}
        results["jobs"][name] = {"run_dir": str(job.run_dir), "settings": config.to_dict(), "seconds": result.seconds,
                                 "tokens_per_second": output.get("tokens_per_second"),
                                 "peak_rss_mb": output.get("peak_rss_mb"), "selection": output.get("selection")}
        results["validation"][name] = score_row(after, base)
        write_json_atomic(results_file, results)
        print(name, json.dumps(results["validation"][name]), f"{result.seconds:.0f} s", flush=True)
    return results


def test(run: Path, name: str) -> dict:
    files = run_files(run)
    out = run / "sft-recipe"
    results = read_json(out / "results.json")
    runtime = LocalRuntime(out / "jobs")
    after = eval_on(runtime, results["jobs"][name]["run_dir"], files["eval_file"], files["labels"], f"test-{name}",
                    limit=0)
    results["test"][name] = score_row(after, EvalResult.load(files["sft_eval"]))
    write_json_atomic(out / "results.json", results)
    return results


if __name__ == "__main__":
    command_line(__doc__, validate, test)

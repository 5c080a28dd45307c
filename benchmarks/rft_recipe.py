"""RFT settings compared on validation rows, from one finished pipeline run's SFT model.

    .venv/bin/python benchmarks/rft_recipe.py validate RUN_DIR --variant NAME '{"lr": 1e-4}' [--variant ...]
    .venv/bin/python benchmarks/rft_recipe.py test RUN_DIR NAME

`validate` trains RFT (the standard profile's settings plus each variant's overrides) from RUN_DIR's SFT model on
the RFT prompts the pipeline set aside, scores SFT and every variant on RUN_DIR's validation rows and prints
exact match with the paired difference to SFT. Choose on that table only. `test` then scores the chosen variant
once on RUN_DIR's evaluation rows, paired against the SFT stage's predictions already there. Results accumulate
in RUN_DIR/rft-recipe/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nbtoolkit.evaluation import EvalResult  # noqa: E402
from nbtoolkit.pipeline import paired_exact_match_delta  # noqa: E402
from nbtoolkit.runtime import JobSpec, LocalRuntime  # noqa: E402
from nbtoolkit.runtime.events import read_json, write_json_atomic  # noqa: E402
from nbtoolkit.stages import PROFILES  # noqa: E402
from nbtoolkit.training.config import EvalConfig, RFTLoraConfig  # noqa: E402


def run_files(run: Path) -> dict:
    """The files of a finished pipeline run; a run without an RFT stage uses the RFT prompts and validation rows
    its data split set aside all the same."""
    stages = read_json(run / "stages.json")
    evaluation = read_json(Path(stages["jobs"]["eval-sft"]) / "job.json")
    if "rft" in stages["jobs"]:
        rft = read_json(Path(stages["jobs"]["rft"]) / "job.json")
        rft_file, validation_file = Path(rft["train_file"]), Path(rft["eval_file"])
    else:
        rft_file, validation_file = run / "data/train/rft/rft.jsonl", run / "data/train/validation/chat.jsonl"
    return {"sft_model": stages["jobs"]["sft"], "rft_file": rft_file, "validation_file": validation_file,
            "eval_file": Path(evaluation["eval_file"]), "labels": stages["labels"],
            "sft_eval": Path(stages["jobs"]["eval-sft"]) / "eval"}


def eval_on(runtime: LocalRuntime, model: str, file: Path, labels: list[str], name: str, *, limit: int) -> EvalResult:
    profile = PROFILES["standard"]
    config = EvalConfig.for_platform("local", **{**profile.eval, "loglik": False, "limit": limit})
    job = runtime.launch(JobSpec("eval", config, model=model, eval_file=str(file), labels=labels, name=name))
    job.wait(progress=False)
    return EvalResult.load(job.run_dir / "eval")


def score_row(result: EvalResult, base: EvalResult | None) -> dict:
    row = {"exact_match": result.metrics["exact_match"], "stderr": result.metrics["exact_match_stderr"],
           "rows": result.metrics["n"]}
    if base is not None:
        row.update(paired_exact_match_delta(base, result))
    return row


def validate(run: Path, variants: list[tuple[str, dict]]) -> dict:
    files = run_files(run)
    out = run / "rft-recipe"
    runtime = LocalRuntime(out / "jobs")
    results_file = out / "results.json"
    results = read_json(results_file) if results_file.exists() else {"validation": {}, "test": {}, "jobs": {}}
    rows = PROFILES["standard"].validation["rows"]
    sft = eval_on(runtime, files["sft_model"], files["validation_file"], files["labels"], "validate-sft", limit=rows)
    results["validation"]["sft"] = score_row(sft, None)
    for name, overrides in variants:
        settings = {**PROFILES["standard"].rft, **overrides}
        config = RFTLoraConfig.for_platform("local", **settings)
        job = runtime.launch(JobSpec("rft_lora", config, model=files["sft_model"], train_file=str(files["rft_file"]),
                                     eval_file=str(files["validation_file"]), labels=files["labels"],
                                     name=f"rft-{name}"))
        result = job.wait(progress=False)
        after = eval_on(runtime, str(job.run_dir), files["validation_file"], files["labels"], f"validate-{name}",
                        limit=rows)
        results["jobs"][name] = {"run_dir": str(job.run_dir), "settings": settings, "seconds": result.seconds}
        results["validation"][name] = score_row(after, sft)
        write_json_atomic(results_file, results)
        print(name, json.dumps(results["validation"][name]), f"{result.seconds:.0f} s", flush=True)
    write_json_atomic(results_file, results)
    return results


def test(run: Path, name: str) -> dict:
    files = run_files(run)
    out = run / "rft-recipe"
    results = read_json(out / "results.json")
    model = results["jobs"][name]["run_dir"]
    runtime = LocalRuntime(out / "jobs")
    after = eval_on(runtime, model, files["eval_file"], files["labels"], f"test-{name}", limit=0)
    results["test"][name] = score_row(after, EvalResult.load(files["sft_eval"]))
    write_json_atomic(out / "results.json", results)
    return results


def command_line(doc: str, validate, test, argv: list[str] | None = None) -> None:
    """The validate/test command line of a recipe script (this one and sft_recipe.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate")
    v.add_argument("run", type=Path)
    v.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    t = sub.add_parser("test")
    t.add_argument("run", type=Path)
    t.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "validate":
        results = validate(args.run, [(name, json.loads(text)) for name, text in args.variant])
        print(json.dumps(results["validation"], indent=1))
    else:
        print(json.dumps(test(args.run, args.name)["test"], indent=1))


if __name__ == "__main__":
    command_line(__doc__, validate, test)

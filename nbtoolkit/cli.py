"""The `nbtoolkit` command line: the same configs and functions the notebooks use."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nbtoolkit.errors import NbtoolkitError, os_error_message
from nbtoolkit.stages import PROFILES


def _names(text: str) -> tuple[str, ...]:
    """A,B,C -> ("A", "B", "C")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _labels(text: str) -> tuple[str, ...]:
    labels = _names(text)
    if not labels:
        raise argparse.ArgumentTypeError("give labels as A,B,C")
    return labels


def _columns(values: list[str] | None) -> tuple[str, ...]:
    """--question Title --question Body, or --question Title,Body."""
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="load, map, sanitize, split, validate and write a dataset",
                       description="Write one JSONL per split and format plus validation.json into --out.")
    p.add_argument("--data", required=True, help="CSV, TSV, JSON, JSONL or Parquet file, or an s3:// URI")
    p.add_argument("--out", required=True, help="output directory (must be new or empty)")
    p.add_argument("--question", action="append", help="question column; repeat or comma-separate to combine")
    p.add_argument("--answer", help="answer / label column")
    system = p.add_mutually_exclusive_group()
    system.add_argument("--system-prompt", help="one system prompt for every row")
    system.add_argument("--system", help="column holding a per-row system prompt")
    p.add_argument("--id", help="row id column (RFT)")
    p.add_argument("--metadata", action="append", help="extra columns carried along (RFT, eval)")
    p.add_argument("--labels", type=_labels, help="declared label set, e.g. HQ,LQ_EDIT,LQ_CLOSE")
    p.add_argument("--split", default="holdout", help="split preset, or 'none' (default: holdout: sft, validation, "
                   "unseen rft prompts, eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-scale", action="store_true", help="fail instead of shrinking the preset to fit the data")
    p.add_argument("--reserved", default="rewrite", choices=["rewrite", "drop", "reject"],
                   help="what to do with reserved strings (default: rewrite)")
    p.add_argument("--html", action="append", help="columns to convert from HTML to text")
    p.add_argument("--platform", default="local", choices=["local", "sagemaker", "bedrock"])
    p.add_argument("--cpt", action="store_true", help="also write CPT text files")
    p.add_argument("--encoding", help="text encoding of --data, e.g. cp1252 for Excel on Windows (default: UTF-8)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a --out directory written before (never one that holds --data)")
    p.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from nbtoolkit.data.mapping import ColumnMapping
    from nbtoolkit.data.prepare import PrepareConfig, prepare_dataset

    mapping = None
    if args.question or args.answer or args.system or args.system_prompt or args.id or args.metadata:
        mapping = ColumnMapping(question=_columns(args.question), answer=args.answer or (),
                                system=args.system, system_prompt=args.system_prompt, id=args.id,
                                metadata=_columns(args.metadata))
    config = PrepareConfig(
        mapping=mapping, labels=args.labels, split=None if args.split == "none" else args.split, seed=args.seed,
        scale_to_fit=not args.no_scale, reserved=args.reserved,
        html_columns=_columns(args.html) if args.html else None, platform=args.platform, cpt=args.cpt,
        encoding=args.encoding)
    prepared = prepare_dataset(args.data, config, out_dir=args.out, overwrite=args.overwrite)
    print(prepared.summary())
    return 0 if prepared.ok else 1


def _add_synthetic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthetic", help="write the synthetic Stack Overflow-like demo dataset (Kaggle schema)")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--rows", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_synthetic)


def _run_synthetic(args: argparse.Namespace) -> int:
    from nbtoolkit.data.synthetic import write_stackoverflow_csv

    path = write_stackoverflow_csv(args.out, n_rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows:,} synthetic rows to {path}")
    return 0


def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect models")
    model_sub = p.add_subparsers(dest="model_command", required=True)
    info = model_sub.add_parser("info", help="where a model comes from, its size, dtype, device, chat template")
    info.add_argument("name", nargs="?", default="smollm2-135m-instruct",
                      help="registry name, Hugging Face id or local path (default: the embedded model)")
    info.set_defaults(run=_run_model_info)
    listing = model_sub.add_parser("list", help="models the registry knows")
    listing.set_defaults(run=_run_model_list)


def _run_model_info(args: argparse.Namespace) -> int:
    from nbtoolkit.models import format_model_info, model_info

    print(format_model_info(model_info(args.name)))
    return 0


def _run_model_list(args: argparse.Namespace) -> int:
    from nbtoolkit.models import list_models

    for spec in list_models():
        print(f"{spec.name:28s} {spec.kind:12s} {spec.description}")
    return 0


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="the main job: baseline eval -> SFT -> eval -> RFT -> eval",
                       description="Writes stages.json, per-stage predictions and report.html into --out.")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="one file, split sft/eval/rft (default: synthetic data)")
    data.add_argument("--train", help="training file (SFT and RFT rows); needs --eval")
    p.add_argument("--eval", help="evaluation file, rows never trained on")
    p.add_argument("--question", "--text-col", dest="question", action="append",
                   help="question column(s); repeat or comma-separate to combine")
    p.add_argument("--answer", "--label-col", dest="answer", help="answer / label column")
    p.add_argument("--system-prompt", help="one system prompt for every row")
    p.add_argument("--labels", type=_labels, help="label set, e.g. HQ,LQ_EDIT,LQ_CLOSE")
    p.add_argument("--profile", default="quick", choices=list(PROFILES),
                   help="tiny: random model, about a minute; quick: ~15 min; standard: calibrated full fine-tuning")
    p.add_argument("--model", help="model name, Hugging Face id or local path (default: the profile's)")
    p.add_argument("--stages", default="baseline,sft,rft", help="comma-separated subset of baseline,sft,rft")
    p.add_argument("--general",
                   help="general-ability checks after each stage, comma-separated: retention (no data needed) "
                        "and benchmark names or files, e.g. retention,arc-easy,piqa; 'none' skips them "
                        "(default: retention; none for the tiny profile)")
    p.add_argument("--out", help="output directory (default: a new one under runs/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimate-only", action="store_true",
                   help="print how long the run takes on this machine and stop (prepares the data in a temporary "
                        "directory; calibrates what no finished job covers, under 30 s per job kind)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="with --estimate-only: use cached rates and the shipped priors only")
    p.set_defaults(run=_run_pipeline)


def _run_pipeline(args: argparse.Namespace) -> int:
    from nbtoolkit.data.mapping import ColumnMapping
    from nbtoolkit.pipeline import PipelineConfig, run_pipeline

    mapping = None
    if args.question or args.answer or args.system_prompt:
        mapping = ColumnMapping(question=_columns(args.question), answer=args.answer or (),
                                system_prompt=args.system_prompt)
    config = PipelineConfig(data=args.data, train=args.train, eval=args.eval, mapping=mapping, labels=args.labels,
                            profile=args.profile, model=args.model, out=args.out, seed=args.seed,
                            stages=_names(args.stages),
                            general=_general(args.general))
    if args.estimate_only:
        from nbtoolkit.pipeline import estimate_pipeline

        print(estimate_pipeline(config, calibrate=not args.no_calibrate))
        return 0
    run_pipeline(config)
    return 0


def _general(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return () if text.strip().lower() == "none" else _names(text)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model on an eval file (GEN_QA metrics, labels, confusion matrix)",
                       description="Runs one eval job in a new directory under --out: eval/metrics.json, "
                                   "eval/predictions.jsonl, the confusion matrix and per-class metrics.")
    p.add_argument("--model", default="embedded",
                   help="'embedded' (default), a training run directory, a model directory or a Hugging Face id")
    p.add_argument("--data", required=True, help="eval file: gen_qa/chat/converse JSONL, or CSV/JSON/Parquet")
    p.add_argument("--out", default="runs", help="directory that gets the job's run directory (default: runs)")
    p.add_argument("--labels", type=_labels, help="label set, e.g. HQ,LQ_EDIT,LQ_CLOSE (default: inferred)")
    p.add_argument("--limit", type=int, help="score N rows, a stratified sample with a fixed seed (default: every row)")
    p.add_argument("--max-new-tokens", type=int, help="reply length limit")
    p.add_argument("--batch-size", type=int, help="generation batch size")
    p.add_argument("--max-prompt-tokens", type=int, help="user turn cut to this many tokens")
    p.add_argument("--no-loglik", action="store_true", help="skip the label log-likelihood accuracy")
    p.add_argument("--dry-run", action="store_true", help="run every check and show the job; launch nothing")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from nbtoolkit.evaluation import EvalResult
    from nbtoolkit.runtime import JobSpec, LocalRuntime
    from nbtoolkit.training.config import EvalConfig

    overrides = {name: value for name, value in (
        ("limit", args.limit), ("max_new_tokens", args.max_new_tokens), ("batch_size", args.batch_size),
        ("max_prompt_tokens", args.max_prompt_tokens)) if value is not None}
    if args.no_loglik:
        overrides["loglik"] = False
    spec = JobSpec("eval", EvalConfig.for_platform("local", **overrides), model=args.model, eval_file=args.data,
                   labels=args.labels, name="eval")
    runtime = LocalRuntime(args.out)
    if args.dry_run:
        report = runtime.launch(spec, dry_run=True)
        print(report)
        return 0 if report.ok else 1
    job = runtime.launch(spec)
    print(f"eval job in {job.run_dir}", flush=True)
    job.wait(progress=True)
    print(EvalResult.load(job.run_dir / "eval").summary())
    print(f"metrics and predictions: {job.run_dir / 'eval'}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible chat completions API",
                       description="POST /v1/chat/completions (streaming with \"stream\": true) and GET /v1/models "
                                   "for a training run directory (its merged model, or base model + LoRA adapter), "
                                   "a model directory, or 'embedded'. Ctrl-C stops.")
    p.add_argument("model", nargs="?", default="embedded", help="RUN_DIR, model or adapter directory, or 'embedded'")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $NBTOOLKIT_SERVE_API_KEY; "
                                     "prefer the variable, a command line is visible to other users)")
    p.add_argument("--name", help="model id clients use (default: the run directory's name)")
    p.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request sets none")
    p.add_argument("--device", help="cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, help="CPU threads for generation (default: torch's)")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from nbtoolkit.serve.server import ServeConfig, api_key_from_env, run_server

    config = ServeConfig(model=args.model, host=args.host, port=args.port,
                         api_key=args.api_key or api_key_from_env(), served_name=args.name,
                         default_max_tokens=args.max_tokens, device=args.device, threads=args.threads)
    try:
        run_server(config, echo=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbtoolkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_synthetic(sub)
    _add_model(sub)
    _add_pipeline(sub)
    _add_evaluate(sub)
    _add_serve(sub)
    from nbtoolkit.aws.cli import add_sagemaker_parser

    add_sagemaker_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (NbtoolkitError, ValueError) as error:
        print(f"nbtoolkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full or read-only disk met outside the data layer's own checks
        print(f"nbtoolkit {args.command}: error: {os_error_message(error, 'continue')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

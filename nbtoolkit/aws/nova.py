"""Amazon Nova jobs through the SageMaker Python SDK v3 customization trainers.

A JobSpec whose model is a Nova model (`nova-lite-2`, `nova-micro`, ...) becomes:

| kind | SDK class | data (prepare writes it) |
|---|---|---|
| sft_lora / sft_full | `sagemaker.train.SFTTrainer` (training_type LORA / FULL) | sft/converse.jsonl |
| rft_lora | `sagemaker.train.RLVRTrainer` with the reward Lambda | rft/rft.jsonl |
| eval | `sagemaker.train.evaluate.CustomScorerEvaluator` (gen_qa task, a scorer) | eval/gen_qa.jsonl |

Hyperparameters come from the config made with `for_platform("nova", ...)` (its bounds are the published Nova
bounds, checked offline) under the recipe's override names (lr, warmup_steps, max_steps, global_batch_size, ...);
the SDK re-validates them against the recipe spec it reads from SageMaker Hub when the trainer is built.
JobSpec.extra carries the rest: `mix` (a MixConfig or its dict: data mixing, SFT only, on serverless or HyperPod
compute), `reward_lambda_arn` (RFT), `scorer` (eval: an evaluator/Lambda ARN or prime_math/prime_code) and
`checkpoint` (an S3 checkpoint of an earlier Nova job to start from, e.g. RFT on the SFT result).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtoolkit.aws.validation import check_lambda_arn, check_s3_uri, launch_base_name, parse_s3_uri
from nbtoolkit.runtime.checks import Check, check_config, detect_format
from nbtoolkit.runtime.spec import JobSpec

if TYPE_CHECKING:
    from nbtoolkit.aws.runtime import SageMakerRuntime
    from nbtoolkit.aws.session import AwsSession
    from nbtoolkit.runtime.events import RunLog

COMPUTE_MODES = ("training_job", "serverless", "hyperpod")
# kind -> (SDK class, training type, record format of train_file)
NOVA_KINDS = {"sft_lora": ("SFTTrainer", "LORA", "converse"), "sft_full": ("SFTTrainer", "FULL", "converse"),
              "rft_lora": ("RLVRTrainer", "LORA", "rft"), "eval": ("CustomScorerEvaluator", None, "gen_qa")}
# Config fields sent as recipe overrides, per kind (names as in the Nova recipes; docs/hyperparameters.md).
NOVA_HYPERPARAMETERS = {
    "sft_lora": ("lr", "warmup_steps", "max_steps", "global_batch_size", "max_length", "save_steps", "alpha",
                 "lora_plus_lr_ratio"),
    "sft_full": ("lr", "warmup_steps", "max_steps", "global_batch_size", "max_length", "save_steps"),
    "rft_lora": ("lr", "max_steps", "save_steps", "global_batch_size", "max_length", "number_generation",
                 "kl_loss_coef", "temperature", "top_k", "ent_coeff", "max_new_tokens", "reasoning_effort", "alpha"),
    "eval": ("max_new_tokens",),
}
_P5 = ("ml.p5.48xlarge",)
_SMALL_LORA = ("ml.g5.12xlarge", "ml.g5.48xlarge", "ml.g6.12xlarge", "ml.g6.48xlarge", "ml.p4d.24xlarge",
               "ml.p5.48xlarge")
# Instance types of the published Nova recipes (aws/sagemaker-hyperpod-recipes: nova_<model>_<instances>_*), per
# model and kind. The SDK checks the live recipe's list again at launch.
NOVA_INSTANCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("nova-micro", "sft_lora"): _SMALL_LORA, ("nova-micro", "sft_full"): ("ml.g5.48xlarge", "ml.g6.48xlarge",
                                                                          "ml.p4d.24xlarge", "ml.p5.48xlarge"),
    ("nova-lite", "sft_lora"): _SMALL_LORA, ("nova-lite", "sft_full"): ("ml.p4d.24xlarge", "ml.p5.48xlarge"),
    ("nova-pro", "sft_lora"): ("ml.p4d.24xlarge", "ml.p5.48xlarge"), ("nova-pro", "sft_full"): _P5,
    ("nova-lite-2", "sft_lora"): ("ml.p5.48xlarge", "ml.p5en.48xlarge"),
    ("nova-lite-2", "sft_full"): ("ml.p5.48xlarge", "ml.p5en.48xlarge"),
    ("nova-lite-2", "rft_lora"): ("ml.p5.48xlarge", "ml.p5en.48xlarge"),
    **{(model, "eval"): _P5 for model in ("nova-micro", "nova-lite", "nova-pro", "nova-lite-2")},
}
# Nova 2 Lite SFT recipes allow these replica counts; other recipes take 1 or more instances.
NOVA_2_SFT_REPLICAS = (1, 4, 8, 16, 32)
BUILTIN_SCORERS = ("prime_math", "prime_code")


def bedrock_model_id(model: str) -> str:
    """'nova-lite-2' -> 'amazon.nova-2-lite-v1' (the SDK's model name; it maps it to the Hub content name)."""
    from nbtoolkit.models import resolve_model

    base = resolve_model(model).source.split(":", 1)[0]
    return base.split(".", 1)[1] if base.count(".") > 1 else base  # drop a cross-region prefix ("us.")


def nova_hyperparameters(spec: JobSpec) -> dict[str, Any]:
    """The config's fields the Nova recipe takes, under its override names (None values left out)."""
    config = spec.config
    names = NOVA_HYPERPARAMETERS.get(spec.kind, ())
    return {name: getattr(config, name) for name in names if getattr(config, name, None) is not None}


def mix_from(value: Any):
    """A MixConfig from JobSpec.extra["mix"] (a MixConfig, its to_dict(), or the service's flat dict)."""
    if value is None:
        return None
    from nbtoolkit.mixing import MixConfig

    return value if isinstance(value, MixConfig) else MixConfig.from_dict(value)


def data_mixing_kwargs(mix) -> dict[str, Any] | None:
    """DataMixingConfig arguments of a MixConfig (None when every batch is the user's data)."""
    if mix is None or not mix.mixing:
        return None
    return {"customer_data_percent": mix.customer_data_percent, "nova_data_percentages": mix.category_weights}


def _check_nova_data(what: str, path_text: str, fmt: str, spec: JobSpec) -> tuple[Check, int]:
    from nbtoolkit.data import read_jsonl, validate_records

    path = Path(path_text).expanduser()
    if not path.is_file():
        return Check(what, False, f"no file at {path.absolute()}"), 0
    try:
        records = list(read_jsonl(path))
    except (ValueError, OSError) as error:
        return Check(what, False, f"{path.name}: {error}"), 0
    if not records:
        return Check(what, False, f"{path.name} holds no records"), 0
    found = detect_format(records[0])
    if found != fmt:
        return Check(what, False, f"{path.name} holds {found} records; a Nova {spec.kind} job reads {fmt} records "
                     f"(prepare writes them, e.g. prepared/{'sft/converse' if fmt == 'converse' else fmt}.jsonl)"), 0
    report = validate_records(records, fmt, labels=spec.labels, platform="sagemaker")
    if not report.ok:
        errors = report.errors
        return Check(what, False, f"{path.name} ({fmt}): {len(errors)} errors; "
                     + "; ".join(str(p) for p in errors[:3])), len(records)
    return Check(what, True, f"{path.name}: {len(records):,} {fmt} rows"), len(records)


def plan_nova(runtime: SageMakerRuntime, spec: JobSpec, run_id: str) -> tuple[list[Check], dict[str, Any]]:
    """Offline checks of a Nova job and the SDK call it makes (trainer, compute, data, hyperparameters)."""
    from nbtoolkit.models import resolve_model

    model = resolve_model(spec.model)
    checks: list[Check] = []
    kind_info = NOVA_KINDS.get(spec.kind)
    if kind_info is None:
        checks.append(Check("job function", False, f"{spec.kind}: Nova models run {', '.join(NOVA_KINDS)} only"))
        return checks, {"backend": "nova", "run_id": run_id}
    trainer, training_type, fmt = kind_info
    checks.append(Check("job function", True, f"{spec.kind} -> sagemaker.train {trainer}"))
    if spec.kind == "rft_lora" and model.name != "nova-lite-2":
        checks.append(Check("model", False, f"RFT (RLVR) recipes exist for Nova 2 Lite only; use model='nova-lite-2' "
                            f"(got {model.name})"))
    else:
        checks.append(Check("model", True, f"{model.name} ({bedrock_model_id(model.name)})"))

    config = spec.config
    if config is not None:
        checks.append(check_config(config, "nova", "a Nova job needs Nova settings and bounds"))

    extra = spec.extra or {}
    mode = runtime.nova_compute
    compute: dict[str, Any] = {"mode": mode}
    if mode not in COMPUTE_MODES:
        checks.append(Check("compute", False, f"nova_compute={mode!r}: choose one of {COMPUTE_MODES}"))
    elif mode == "serverless":
        ok = bool(runtime.model_package_group)
        checks.append(Check("compute", ok, "serverless (SageMaker picks the hardware)" if ok else
                            "serverless Nova training registers the result in a model package group: pass "
                            "model_package_group='my-group' to SageMakerRuntime"))
        compute["model_package_group"] = runtime.model_package_group
    else:
        allowed = NOVA_INSTANCES.get((model.name, spec.kind), ())
        count = runtime.instance_count
        problem = None
        if runtime.instance_type not in allowed:
            problem = (f"{model.name} {spec.kind} does not run on {runtime.instance_type}; the Nova recipes support "
                       f"{', '.join(allowed) or 'no instance type for this combination'}")
        elif not isinstance(count, int) or count < 1:
            problem = f"instance_count must be a positive integer, got {count!r}"
        elif model.name == "nova-lite-2" and spec.kind.startswith("sft") and count not in NOVA_2_SFT_REPLICAS:
            problem = f"Nova 2 Lite SFT runs on {NOVA_2_SFT_REPLICAS} instances, not {count}"
        elif spec.kind == "eval" and count != 1:
            problem = "Nova evaluation runs on one instance"
        if mode == "hyperpod" and not runtime.hyperpod_cluster:
            problem = "nova_compute='hyperpod' needs hyperpod_cluster='<cluster name>'"
        checks.append(Check("compute", problem is None, problem or f"{mode}: {count} x {runtime.instance_type}"))
        compute.update(instance_type=runtime.instance_type, instance_count=count)
        if mode == "hyperpod":
            compute.update(cluster=runtime.hyperpod_cluster, namespace=runtime.hyperpod_namespace)

    uploads: dict[str, str] = {}
    datasets: dict[str, str] = {}
    rows = 0
    for what, channel, expected in (("train_file", "train", fmt), ("eval_file", "validation", fmt)):
        value = getattr(spec, what)
        if value is None:
            continue
        if spec.kind == "eval" and what == "eval_file":
            channel = "train"  # the evaluation dataset
        if value.startswith("s3://"):
            problem = check_s3_uri(value)
            checks.append(Check(what, problem is None, problem or f"{value} (read from S3)"))
            datasets[channel] = value
            continue
        data_check, count = _check_nova_data(what, value, expected, spec)
        checks.append(data_check)
        path = Path(value).expanduser().resolve()
        datasets[channel] = runtime.s3_uri(run_id, "data", channel, path.name)
        uploads[str(path)] = datasets[channel]
        if what == "train_file" or spec.kind == "eval":
            rows = count
    batch = getattr(config, "global_batch_size", None)
    if batch and rows and spec.kind != "eval":
        checks.append(Check("rows", rows >= batch, f"{rows:,} rows, global_batch_size {batch}"
                            + ("" if rows >= batch else ": add rows or lower global_batch_size")))

    plan: dict[str, Any] = {
        "backend": {"serverless": "nova_serverless", "hyperpod": "hyperpod"}.get(mode, "nova"),
        "trainer": trainer, "training_type": training_type, "model": bedrock_model_id(model.name),
        "model_name": model.name, "base_job_name": launch_base_name(spec.name), "run_id": run_id,
        "role": runtime.role, "region": runtime.region, "compute": compute,
        "hyperparameters": nova_hyperparameters(spec) if config else {},
        "datasets": datasets, "uploads": uploads, "output_s3": runtime.s3_uri(run_id, "output")}

    try:
        mix = mix_from(extra.get("mix"))
    except ValueError as error:
        checks.append(Check("data mixing", False, str(error)))
        mix = None
    mixing = data_mixing_kwargs(mix)
    if mix is not None:
        if mixing is None:
            checks.append(Check("data mixing", True, "customer data only (100%): no Nova data mixed in"))
        elif trainer != "SFTTrainer":
            checks.append(Check("data mixing", False, "the SDK mixes Nova data into SFT only"))
        elif mode == "training_job":
            checks.append(Check("data mixing", False, "the SDK mixes Nova data on serverless or HyperPod compute "
                                "only: use SageMakerRuntime(nova_compute='serverless', model_package_group=...) or "
                                "nova_compute='hyperpod'"))
        else:
            checks.append(Check("data mixing", True, str(mix)))
        plan["data_mixing"] = mixing

    if spec.kind == "rft_lora":
        arn = extra.get("reward_lambda_arn")
        problem = check_lambda_arn(arn)
        if problem is None and runtime.region and f":lambda:{runtime.region}:" not in arn:
            problem = f"the reward Lambda {arn} is not in {runtime.region}, where the job runs"
        checks.append(Check("reward lambda", problem is None, problem or f"{arn} (verified by invoking it before "
                            "launch when credentials exist)"))
        plan["reward_lambda_arn"] = arn
    if spec.kind == "eval":
        scorer = extra.get("scorer") or extra.get("reward_lambda_arn")
        ok = isinstance(scorer, str) and (scorer.startswith("arn:") or scorer in BUILTIN_SCORERS)
        checks.append(Check("scorer", ok, f"{scorer}" if ok else "a Nova evaluation of your own data scores replies "
                            "with a scorer: extra={'scorer': <Lambda or evaluator ARN>} (e.g. the reward Lambda) or "
                            f"one of {BUILTIN_SCORERS}"))
        plan["scorer"] = scorer
    checkpoint = extra.get("checkpoint")
    if checkpoint is not None:
        problem = check_s3_uri(checkpoint) or ("an S3 checkpoint needs training_job or hyperpod compute"
                                               if mode == "serverless" else None)
        checks.append(Check("checkpoint", problem is None, problem or f"starts from {checkpoint}"))
        plan["checkpoint"] = checkpoint
    return checks, plan


def _sdk_ready(region: str | None) -> None:
    # sagemaker.train's Nova trainers create a boto3 client at import time, which needs a default region.
    if region:
        os.environ.setdefault("AWS_DEFAULT_REGION", region)


def nova_compute(plan: dict[str, Any]) -> Any:
    """The SDK compute object of a plan: Compute (training job), HyperPodCompute, or None (serverless)."""
    compute = plan["compute"]
    if compute["mode"] == "serverless":
        return None
    if compute["mode"] == "hyperpod":
        from sagemaker.core.training.configs import HyperPodCompute

        return HyperPodCompute(cluster_name=compute["cluster"], instance_type=compute["instance_type"],
                               namespace=compute["namespace"], node_count=compute["instance_count"])
    from sagemaker.core.training.configs import Compute

    return Compute(instance_type=compute["instance_type"], instance_count=compute["instance_count"])


def nova_trainer(runtime: SageMakerRuntime, plan: dict[str, Any]) -> Any:
    """Build the SDK trainer or evaluator of a plan (reads the recipe spec from SageMaker Hub)."""
    _sdk_ready(runtime.region)
    session = runtime.sagemaker_session()
    compute = nova_compute(plan)
    model: Any = plan["model"]
    checkpoint = plan.get("checkpoint")
    common: dict[str, Any] = {"sagemaker_session": session, "role": plan["role"],
                              "base_job_name": plan["base_job_name"]}
    if plan["trainer"] == "CustomScorerEvaluator":
        from sagemaker.train.evaluate import CustomScorerEvaluator

        return CustomScorerEvaluator(
            evaluator=plan["scorer"], dataset=plan["datasets"]["train"], model=checkpoint or model,
            base_model_name=model if checkpoint else None, s3_output_path=plan["output_s3"], compute=compute,
            sagemaker_session=session, role=plan["role"], base_eval_name=plan["base_job_name"],
            region=runtime.region)
    from sagemaker.train.common import TrainingType

    kwargs: dict[str, Any] = {
        **common, "model": checkpoint or model, "training_type": TrainingType[plan["training_type"]],
        "compute": compute, "training_dataset": plan["datasets"].get("train"),
        "validation_dataset": plan["datasets"].get("validation"), "s3_output_path": plan["output_s3"],
        "hyperparameters": dict(plan["hyperparameters"]), "model_package_group": plan["compute"].get(
            "model_package_group")}
    if checkpoint:
        kwargs["base_model_name"] = model
    if plan["trainer"] == "SFTTrainer":
        from sagemaker.train import SFTTrainer

        if plan.get("data_mixing"):
            from sagemaker.train.data_mixing_config import DataMixingConfig

            kwargs["data_mixing_config"] = DataMixingConfig(**plan["data_mixing"])
        return SFTTrainer(**kwargs)
    from sagemaker.train import RLVRTrainer

    return RLVRTrainer(**kwargs, custom_reward_function=plan["reward_lambda_arn"])


def launch_nova(runtime: SageMakerRuntime, spec: JobSpec, plan: dict[str, Any], run_dir: Path,
                log: RunLog) -> dict[str, Any]:
    """Upload the data, verify the reward Lambda (RFT), build the SDK trainer and start it without waiting."""
    runtime._upload(plan["uploads"], log)
    if plan.get("reward_lambda_arn"):
        from nbtoolkit.aws.lambda_rewards import verify_reward_lambda

        sample = spec.train_file if spec.train_file and not spec.train_file.startswith("s3://") else None
        check = verify_reward_lambda(plan["reward_lambda_arn"], sample, aws=runtime.aws)
        if not check.ok:
            raise ValueError(f"the reward Lambda failed its check, nothing launched: {'; '.join(check.problems[:3])}")
        log.info(f"reward Lambda {plan['reward_lambda_arn']} verified on {len(check.table)} samples")
    trainer = runtime.aws.retrying(f"build {plan['trainer']}", lambda: nova_trainer(runtime, plan),
                                   role=runtime.role)
    if plan["trainer"] == "CustomScorerEvaluator":
        job = runtime.aws.retrying("CustomScorerEvaluator.evaluate", trainer.evaluate, role=runtime.role)
    else:
        job = runtime.aws.retrying(f"{plan['trainer']}.train", lambda: trainer.train(wait=False), role=runtime.role)
    if plan["backend"] == "hyperpod":
        from nbtoolkit.aws.hyperpod import monitor_commands

        name = str(job)
        log.info(f"HyperPod job {name} started on {plan['compute']['cluster']}; follow it with: "
                 + " | ".join(" ".join(c) for c in monitor_commands(name, plan["compute"]["namespace"]).values()))
        return {"name": name, "cluster": plan["compute"]["cluster"]}
    name = getattr(job, "training_job_name", None) or getattr(job, "name", None)
    return {"name": name, "arn": getattr(job, "training_job_arn", None), "sdk": plan["trainer"]}


def nova_checkpoint(aws: AwsSession, output_s3: str, job_name: str) -> str | None:
    """The S3 checkpoint a finished Nova job wrote: `checkpoint_s3_bucket` of its manifest.json, which is
    OUTPUT/JOB/manifest.json (HyperPod) or inside OUTPUT/JOB/output/output.tar.gz (training jobs); None when
    there is none. Start the next stage from it with JobSpec.extra["checkpoint"]."""
    import io
    import json
    import tarfile

    from nbtoolkit.aws.errors import AwsError

    bucket, base = parse_s3_uri(output_s3.rstrip("/"))
    manifest = None
    for key, packed in ((f"{base}/{job_name}/manifest.json", False),
                        (f"{base}/{job_name}/output/output.tar.gz", True)):
        try:
            body = aws.call("s3", "get_object", Bucket=bucket, Key=key, context={"bucket": bucket})["Body"].read()
        except AwsError:
            continue
        if packed:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
                member = next((m for m in tar.getmembers() if m.name.lstrip("./") == "manifest.json"), None)
                body = tar.extractfile(member).read() if member is not None else None
        if body:
            manifest = json.loads(body)
            break
    checkpoint = str((manifest or {}).get("checkpoint_s3_bucket") or "").strip()
    return checkpoint if checkpoint.startswith("s3://") else None

"""Time and money of a SageMaker, HyperPod or Nova job: instance type x count x estimated hours x price.

Hours come from the training FLOPs (about 6 x parameters x tokens for full fine-tuning, 4 x for LoRA, whose
frozen weights get no weight gradients; 2 x per generated or evaluated token) over the instances' peak GPU
throughput at a stated utilization range, plus the minutes a job spends starting. Prices come from the AWS Price
List API (boto3 `pricing`, get_products) when credentials allow, else from the dated table shipped in
nbtoolkit/estimate/data/sagemaker_prices.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nbtoolkit.errors import unknown_name_message
from nbtoolkit.estimate.core import Estimate

# Model FLOPs utilization of fine-tuning jobs: small models and short sequences sit at the low end.
UTILIZATION = (0.15, 0.45)
STARTUP_SECONDS = (180.0, 600.0)  # provisioning, image pull and data download before the first step
FLOPS_PER_TOKEN = {"sft_full": 6, "sft_lora": 4, "rft_lora": 4, "eval": 2}
PRICE_LIST_REGION = "us-east-1"  # the Price List API answers from us-east-1 (and ap-south-1) only


@dataclass(frozen=True)
class InstancePrice:
    """USD per instance-hour and where the figure came from."""

    instance_type: str
    usd_per_hour: float | None
    source: str


def _data(name: str) -> dict[str, Any]:
    return json.loads(resources.files("nbtoolkit.estimate").joinpath(f"data/{name}").read_text())


def price_table() -> dict[str, Any]:
    """The shipped table: {"date", "region", "source", "usd_per_hour": {instance type: price or None}}."""
    return _data("sagemaker_prices.json")


def _table_price(instance_type: str) -> InstancePrice:
    table = price_table()
    price = table["usd_per_hour"].get(instance_type)
    where = f"shipped table of {table['date']} ({table['region']}, {table['source']})"
    return InstancePrice(instance_type, price, where if price is not None else f"not in the {where}")


def price_list_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "instanceName", "Value": instance_type},
            {"Type": "TERM_MATCH", "Field": "component", "Value": "Training"}]


def parse_price_list(price_list: list[str], instance_type: str) -> float | None:
    """The on-demand hourly USD price of `instance_type` training in Price List products (JSON strings)."""
    prices = []
    for raw in price_list:
        product = json.loads(raw)
        attributes = product.get("product", {}).get("attributes", {})
        if attributes.get("instanceName", instance_type) != instance_type:
            continue
        if attributes.get("component", "Training") != "Training":
            continue
        for offer in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in offer.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and dimension.get("unit", "Hrs").lower().startswith("hr") and float(usd) > 0:
                    prices.append(float(usd))
    return min(prices) if prices else None


def instance_price(instance_type: str, region: str = "us-east-1", *, client: Any = None,
                   offline: bool = False) -> InstancePrice:
    """The training price of one instance-hour: the Price List API when it answers, else the shipped table.

    client: a boto3 `pricing` client (made from the default credentials when None).
    """
    if not offline:
        try:
            if client is None:
                import boto3

                session = boto3.Session()
                if session.get_credentials() is None:
                    raise LookupError("no AWS credentials")
                client = session.client("pricing", region_name=PRICE_LIST_REGION)
            response = client.get_products(ServiceCode="AmazonSageMaker", MaxResults=100,
                                           Filters=price_list_filters(instance_type, region))
            price = parse_price_list(response.get("PriceList", []), instance_type)
            if price is not None:
                return InstancePrice(instance_type, price, f"AWS Price List API ({region}, on-demand training)")
        except Exception:  # noqa: BLE001 - no credentials, no network, no permission: the table answers
            pass
    return _table_price(instance_type)


def refresh_price_table(path: str | Path, region: str = "us-east-1", *, client: Any = None) -> dict[str, Any]:
    """Write a price table like the shipped one from the Price List API (what a release refreshes)."""
    from datetime import date

    table = price_table()
    prices = {}
    for instance_type in table["usd_per_hour"]:
        found = instance_price(instance_type, region, client=client)
        prices[instance_type] = found.usd_per_hour if found.source.startswith("AWS Price List") else None
    fresh = {**table, "date": date.today().isoformat(), "region": region, "usd_per_hour": prices}
    Path(path).write_text(json.dumps(fresh, indent=2) + "\n")
    return fresh


def peak_tflops(instance_type: str) -> tuple[float, str]:
    """(peak dense TFLOPS of the instance's GPUs, a description such as '8 x H100')."""
    from nbtoolkit.aws.validation import GPU_INSTANCES

    accelerator = GPU_INSTANCES.get(instance_type)
    if accelerator is None:
        raise ValueError(unknown_name_message("GPU instance type", instance_type, GPU_INSTANCES))
    per_gpu = _data("gpu_peaks.json")["tflops"][accelerator.gpu]
    return per_gpu * accelerator.gpus, f"{accelerator.gpus} x {accelerator.gpu}"


def nova_instance_count(model: str, kind: str, instance_type: str, count: int | None = None) -> int:
    """The instances a Nova recipe runs on: `count` when the recipe allows it, else the smallest it allows."""
    from nbtoolkit.aws.nova import NOVA_2_SFT_REPLICAS, NOVA_INSTANCES
    from nbtoolkit.models import resolve_model

    name = resolve_model(model).name
    allowed = NOVA_INSTANCES.get((name, kind), ())
    if instance_type not in allowed:
        raise ValueError(f"{name} {kind} does not run on {instance_type}; the Nova recipes support "
                         f"{', '.join(allowed) or 'no instance type for this combination'}")
    if kind == "eval":
        return 1
    replicas = NOVA_2_SFT_REPLICAS if name == "nova-lite-2" and kind.startswith("sft") else None
    if count is None:
        return replicas[0] if replicas else 1
    if replicas and count not in replicas:
        raise ValueError(f"Nova 2 Lite SFT runs on {NOVA_2_SFT_REPLICAS} instances, not {count}")
    return count


def training_flops(kind: str, parameters: float, tokens: float, generated_tokens: float = 0.0) -> float:
    """FLOPs of a job: FLOPS_PER_TOKEN[kind] x parameters per processed token, 2 x per generated token."""
    if kind not in FLOPS_PER_TOKEN:
        raise ValueError(unknown_name_message("job kind", kind, FLOPS_PER_TOKEN))
    return FLOPS_PER_TOKEN[kind] * parameters * tokens + 2 * parameters * generated_tokens


def cloud_estimate(kind: str, *, instance_type: str, instance_count: int = 1, parameters: float | None,
                   tokens: float, generated_tokens: float = 0.0, region: str = "us-east-1",
                   utilization: tuple[float, float] = UTILIZATION, price: InstancePrice | None = None,
                   what: str | None = None, client: Any = None, offline: bool = False) -> Estimate:
    """Hours and dollars of one job: FLOPs over the instances' peak at `utilization`, plus start-up, times
    the price of instance_count instances. parameters=None (Nova publishes no parameter counts) raises, naming
    the hourly price."""
    peak, gpus = peak_tflops(instance_type)
    price = price or instance_price(instance_type, region, client=client, offline=offline)
    what = what or f"{kind} on {instance_count} x {instance_type}"
    per_hour = None if price.usd_per_hour is None else price.usd_per_hour * instance_count
    notes = [f"{instance_count} x {instance_type} ({gpus}, {peak:g} peak TFLOPS each)",
             f"price: {'$%.2f per instance-hour' % price.usd_per_hour if price.usd_per_hour else 'unknown'} "
             f"from the {price.source}"]
    if parameters is None:
        raise ValueError(f"{what}: hours need the model's parameter count (Nova models publish none): pass "
                         "parameters= to assume one; the hourly price alone is "
                         + (f"${per_hour:,.2f} for {instance_count} instance(s)" if per_hour else "unknown"))
    flops = training_flops(kind, parameters, tokens, generated_tokens)
    busy_low = flops / (peak * 1e12 * instance_count * utilization[1])
    busy_high = flops / (peak * 1e12 * instance_count * utilization[0])
    low, high = STARTUP_SECONDS[0] + busy_low, STARTUP_SECONDS[1] + busy_high
    notes.append(f"{flops:.3g} FLOPs ({FLOPS_PER_TOKEN[kind]} x {parameters:.3g} parameters x {tokens:.3g} tokens"
                 + (f" + 2 x parameters x {generated_tokens:.3g} generated" if generated_tokens else "")
                 + f") at {utilization[0]:.0%}-{utilization[1]:.0%} of peak, plus "
                 f"{STARTUP_SECONDS[0] / 60:.0f}-{STARTUP_SECONDS[1] / 60:.0f} min of start-up")
    return Estimate(what, low, high, work=tokens, unit="tokens", source=price.source,
                    low_usd=None if per_hour is None else per_hour * low / 3600,
                    high_usd=None if per_hour is None else per_hour * high / 3600, notes=tuple(notes))


def job_tokens(kind: str, config: Any, rows: int | None = None, mean_sequence: float = 0.0,
               mean_prompt: float = 0.0) -> tuple[float, float]:
    """(processed tokens, generated tokens) of a job from its config and the data's mean lengths."""
    if kind.startswith("sft"):
        return config.max_steps * config.global_batch_size * mean_sequence, 0.0
    if kind == "rft_lora":
        replies = config.max_steps * config.global_batch_size
        return replies * (mean_prompt + config.max_new_tokens), replies * config.max_new_tokens
    if kind == "eval":
        rows = min(config.limit, rows) if config.limit and rows else (rows or config.limit)
        return rows * mean_prompt, rows * config.max_new_tokens
    raise ValueError(unknown_name_message("job kind", kind, FLOPS_PER_TOKEN))


def estimate_cloud_job(spec: Any, *, instance_type: str, instance_count: int = 1, parameters: float | None = None,
                       region: str = "us-east-1", client: Any = None, offline: bool = False) -> Estimate:
    """Hours and cost of a built-in job spec on SageMaker: its tokens counted from its data file with the model's
    tokenizer. parameters: None takes the model registry's count (for a Nova model, use cloud_estimate with
    assumed parameters and token counts)."""
    from nbtoolkit.estimate.local import data_file
    from nbtoolkit.estimate.tokens import model_tokenizer, token_stats
    from nbtoolkit.models import resolve_model

    config = spec.config
    stats = token_stats(data_file(spec), model_tokenizer(spec.model), tokenizer_name=spec.model)
    mean_sequence = stats.mean_sequence(config.max_length, config.max_prompt_tokens) if hasattr(
        config, "max_length") else 0.0
    tokens, generated = job_tokens(spec.kind, config, stats.rows, mean_sequence,
                                   stats.mean_prompt(config.max_prompt_tokens))
    if parameters is None:
        parameters = resolve_model(spec.model).parameters
    return cloud_estimate(spec.kind, instance_type=instance_type, instance_count=instance_count,
                          parameters=parameters, tokens=tokens, generated_tokens=generated, region=region,
                          client=client, offline=offline, what=f"{spec.kind} {spec.name!r} on {instance_count} x "
                                                               f"{instance_type}")

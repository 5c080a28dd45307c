"""Seeded, stratified splits that never touch global random state, and the case study's sft/eval/rft split as a
preset."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbtoolkit.errors import DataError, unknown_name_message


@dataclass(frozen=True)
class SplitPreset:
    """Disjoint split sizes plus derived splits built as unions of them.

    A size is a row count, a (fraction, cap) pair (that share of the rows, at most cap rows, at least one), or
    None for every row the other splits leave (at most one split).
    """

    name: str
    sizes: dict[str, int | tuple[float, int] | None]
    unions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def total(self) -> int:
        return sum(v for v in self.sizes.values() if isinstance(v, int))

    def counts(self, n_rows: int, *, scale_to_fit: bool = False, source: str | None = None) -> dict[str, int]:
        """Row counts of each split for a table of n_rows rows (`source` names the file in errors)."""
        if all(isinstance(v, int) for v in self.sizes.values()):
            return scale_sizes(self.sizes, n_rows, source=source) if scale_to_fit else dict(self.sizes)
        counts = {name: (size if isinstance(size, int) else max(1, min(size[1], round(size[0] * n_rows))))
                  for name, size in self.sizes.items() if size is not None}
        rest = [name for name, size in self.sizes.items() if size is None]
        left = n_rows - sum(counts.values())
        if left < len(rest):
            raise DataError(f"{n_rows} rows are too few for the {self.name} splits "
                            f"({', '.join(f'{k} {v}' for k, v in counts.items())}, and rows left for {rest})",
                            source=source)
        counts.update({name: left for name in rest})
        return {name: counts[name] for name in self.sizes}


SPLIT_PRESETS: dict[str, SplitPreset] = {
    "sft-eval-rft": SplitPreset(
        "sft-eval-rft",
        sizes={"sft": 3500, "eval": 500, "rft": 700},
        # RFT trains on its own rows plus every SFT row, so it keeps what SFT taught (docs/case-study.md).
        unions={"rft": ("rft", "sft")},
        description="3,500 SFT / 500 eval / 700 RFT; the RFT set is the 700 RFT rows plus all 3,500 SFT rows",
    ),
    # Every choice (checkpoint, whether RFT's result is kept) is made on `validation`; `eval` is scored once.
    # RFT trains on prompts SFT never saw: on rows SFT has fit, nearly every sampled reply earns the same reward.
    "holdout": SplitPreset(
        "holdout",
        sizes={"validation": (0.1, 300), "rft": (0.12, 700), "eval": (0.1, 500), "sft": None},
        description="eval 10% (at most 500 rows), validation 10% (at most 300), RFT prompts 12% (at most 700), "
                    "SFT the rest; RFT prompts are rows SFT never trains on",
    ),
    # For a training file whose evaluation file is separate.
    "train-holdout": SplitPreset(
        "train-holdout",
        sizes={"validation": (0.1, 300), "rft": (0.12, 700), "sft": None},
        description="validation 10% (at most 300 rows), RFT prompts 12% (at most 700), SFT the rest",
    ),
}


def stratified_order(labels: pd.Series | None, n: int, seed: int) -> np.ndarray:
    """A permutation of 0..n-1 in which every prefix keeps the label proportions.

    Rows are shuffled within their label and ranked by (position + jitter) / label size, so cutting the
    order into consecutive pieces gives stratified splits of any sizes.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return rng.permutation(n)
    codes, _ = pd.factorize(labels.astype(str), sort=True)
    rank = np.empty(n)
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        shuffled = rng.permutation(members)
        rank[shuffled] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(rank, kind="stable")


def scale_sizes(sizes: dict[str, int], n_rows: int, *, source: str | None = None) -> dict[str, int]:
    """Shrink `sizes` proportionally to fit `n_rows` (largest remainder, every split keeps >= 1 row)."""
    total = sum(sizes.values())
    if total <= n_rows:
        return dict(sizes)
    if n_rows < len(sizes):
        raise DataError(f"{n_rows} rows cannot be split into {len(sizes)} non-empty splits "
                        f"({', '.join(sizes)}); add rows or prepare without a split (split=None, --split none)",
                        source=source)
    exact = {k: v * n_rows / total for k, v in sizes.items()}
    scaled = {k: max(1, int(v)) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True)
    i = 0
    while sum(scaled.values()) < n_rows:
        scaled[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(scaled.values()) > n_rows:
        largest = max(scaled, key=scaled.get)
        scaled[largest] -= 1
    return scaled


def split_frame(
    frame: pd.DataFrame,
    sizes: dict[str, int | float],
    *,
    label_column: str | None = None,
    seed: int = 0,
    unions: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Split `frame` into disjoint parts of the given sizes (row counts, or fractions summing to <= 1).

    Stratified by `label_column` when given; deterministic for a seed; rows keep their index.
    `unions` adds derived splits, e.g. {"rft": ("rft", "sft")}.
    """
    n = len(frame)
    if all(isinstance(v, float) for v in sizes.values()):
        if sum(sizes.values()) > 1 + 1e-9:
            raise ValueError(f"split fractions sum to {sum(sizes.values()):.3f} > 1")
        counts = {k: int(round(v * n)) for k, v in sizes.items()}
    else:
        counts = {k: int(v) for k, v in sizes.items()}
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"split sizes must be positive: {counts}")
    if sum(counts.values()) > n:
        raise DataError(f"splits need {sum(counts.values()):,} rows but the data has {n:,}; "
                        "use fewer rows per split or scale_to_fit=True", source=frame.attrs.get("source"))
    labels = frame[label_column] if label_column else None
    order = stratified_order(labels, n, seed)
    parts: dict[str, pd.DataFrame] = {}
    start = 0
    for name, count in counts.items():
        parts[name] = frame.iloc[np.sort(order[start:start + count])]
        start += count
    for name, members in (unions or {}).items():
        for member in members:
            if member not in parts:
                raise ValueError(unknown_name_message("split", member, parts))
        parts[name] = pd.concat([parts[m] for m in members])
    for part in parts.values():
        part.attrs.update(frame.attrs)
    return parts


def split_with_preset(
    frame: pd.DataFrame,
    preset: str | SplitPreset,
    *,
    label_column: str | None = None,
    seed: int = 0,
    scale_to_fit: bool = False,
) -> dict[str, pd.DataFrame]:
    """Apply a named preset; with `scale_to_fit`, a smaller dataset gets proportionally smaller splits."""
    if isinstance(preset, str):
        if preset not in SPLIT_PRESETS:
            raise ValueError(unknown_name_message("split preset", preset, SPLIT_PRESETS))
        preset = SPLIT_PRESETS[preset]
    sizes = preset.counts(len(frame), scale_to_fit=scale_to_fit, source=frame.attrs.get("source"))
    return split_frame(frame, sizes, label_column=label_column, seed=seed, unions=preset.unions)


def label_distribution(parts: dict[str, pd.DataFrame], label_column: str) -> pd.DataFrame:
    """Rows per label (rows) and split (columns), with a total row."""
    table = pd.DataFrame({name: part[label_column].astype(str).value_counts() for name, part in parts.items()})
    table = table.fillna(0).astype(int).sort_index()
    table.loc["total"] = table.sum()
    return table

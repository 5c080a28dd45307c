"""Batches that honor a mix exactly: each source's rows per batch follow its share with no drift over a run.

Rows are dealt one slot at a time with Balinski and Young's quota method (the next row goes to the source with the
largest share / (rows so far + 1) among those still below share x rows dealt), which keeps every source within
quota after every row: its cumulative count is floor or ceil of share x rows so far. So a batch holds exactly
share x batch_size rows of a source whenever that is a whole number (50% of 8 is 4 in every batch), and never
drifts otherwise. Rows within a source are drawn from per-epoch permutations, so which rows a step trains on is
a function of (seed, step) alone and a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from math import lcm
from typing import Any

import numpy as np

from nbtoolkit.mixing.config import CUSTOMER, MixConfig, MixError


def exact_shares(shares_percent: Mapping[str, float]) -> dict[str, Fraction]:
    """Percent shares as exact fractions of 1 (decimal values read as written, so 50 -> 1/2, 0.1 -> 1/1000)."""
    exact = {name: Fraction(repr(float(value))) / 100 for name, value in shares_percent.items() if value > 0}
    total = sum(exact.values())
    if total <= 0:
        raise MixError("no source has a positive share")
    return {name: share / total for name, share in exact.items()}


def deal_rows(shares: Sequence[Fraction], cumulative: Sequence[int], rows: int) -> list[int]:
    """Rows of each source among the next `rows` slots, given the cumulative counts so far (the quota method)."""
    denominator = lcm(*(share.denominator for share in shares))
    weights = [share.numerator * (denominator // share.denominator) for share in shares]  # share = weight / denom
    counts = list(cumulative)
    dealt = sum(counts)
    for _ in range(rows):
        dealt += 1
        eligible = [k for k, w in enumerate(weights) if counts[k] * denominator < w * dealt]
        best = max(eligible, key=lambda k: (weights[k] / (counts[k] + 1), -k))
        counts[best] += 1
    return [after - before for after, before in zip(counts, cumulative)]


class MixedBatchOrder:
    """Which rows each optimizer step trains on when sources are mixed; the interface of sft.BatchOrder.

    Rows are numbered source after source in `names` order (the customer's rows first), so `rows(step)` returns
    indices into the concatenation of the sources' example lists.
    """

    def __init__(self, names: Sequence[str], sizes: Sequence[int], shares: Mapping[str, Fraction], batch_size: int,
                 seed: int) -> None:
        if len(names) != len(sizes):
            raise ValueError("one size per source")
        empty = [n for n, s in zip(names, sizes) if s == 0 and shares.get(n, 0) > 0]
        if empty:
            raise MixError(f"sources with a share but no rows: {', '.join(empty)}")
        self.names = list(names)
        self.sizes = list(sizes)
        self.shares = [Fraction(shares.get(n, 0)) for n in names]
        self.batch_size = batch_size
        self.seed = seed
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        self._cumulative: list[list[int]] = [[0] * len(names)]  # counts before step s
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    def _extend(self, step: int) -> None:
        while len(self._cumulative) <= step + 1:
            last = self._cumulative[-1]
            counts = deal_rows(self.shares, last, self.batch_size)
            self._cumulative.append([a + b for a, b in zip(last, counts)])

    def counts(self, step: int) -> list[int]:
        """Rows of each source in step `step` (0-based)."""
        self._extend(step)
        before, after = self._cumulative[step], self._cumulative[step + 1]
        return [b - a for a, b in zip(before, after)]

    def cumulative(self, steps: int) -> list[int]:
        """Rows of each source in the first `steps` steps."""
        self._extend(max(steps - 1, 0))
        return list(self._cumulative[steps])

    def _row(self, source: int, position: int) -> int:
        epoch, offset = divmod(position, self.sizes[source])
        key = (source, epoch)
        if key not in self._permutations:
            self._permutations = {k: v for k, v in self._permutations.items() if k[0] != source or k[1] == epoch - 1}
            rng = np.random.default_rng([self.seed, 7, source, epoch])
            self._permutations[key] = rng.permutation(self.sizes[source])
        return self.offsets[source] + int(self._permutations[key][offset])

    def rows(self, step: int) -> list[int]:
        """Row indices of optimizer step `step` (0-based), source after source."""
        counts = self.counts(step)
        start = self._cumulative[step]
        return [self._row(k, start[k] + i) for k in range(len(self.names)) for i in range(counts[k])]

    def source_of(self, row: int) -> str:
        index = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.names[index]

    def epoch(self, step: int) -> float:
        """Epochs of the first source (the customer's data) completed after `step` steps."""
        return self.cumulative(step)[0] / self.sizes[0]

    def realized(self, steps: int) -> dict[str, Any]:
        """What the first `steps` steps trained on: rows, share and per-batch range of each source."""
        total = steps * self.batch_size
        rows = self.cumulative(steps)
        per_batch = [self.counts(s) for s in range(steps)]
        out: dict[str, Any] = {"steps": steps, "batch_size": self.batch_size, "rows": total, "sources": {}}
        worst = 0.0
        for k, name in enumerate(self.names):
            target = float(self.shares[k]) * total
            worst = max(worst, abs(rows[k] - target))
            column = [c[k] for c in per_batch] or [0]
            out["sources"][name] = {
                "target_percent": round(float(self.shares[k]) * 100, 6),
                "realized_percent": round(100 * rows[k] / total, 6) if total else None,
                "rows": rows[k], "rows_available": self.sizes[k],
                "epochs": round(rows[k] / self.sizes[k], 4) if self.sizes[k] else None,
                "per_batch_min": min(column), "per_batch_max": max(column)}
        out["max_deviation_rows"] = round(worst, 6)
        return out


def mixed_order(mix: MixConfig, customer_rows: int, general_rows: Mapping[str, int], batch_size: int,
                seed: int) -> MixedBatchOrder:
    """The batch order of a run: customer rows first, then each category of the mix with its row count."""
    missing = [c for c in mix.category_weights if not general_rows.get(c)]
    if missing:
        raise MixError(f"the mix gives weight to {', '.join(missing)} but no general data was provided for "
                       f"{'it' if len(missing) == 1 else 'them'}; add a source for each (GeneralDataRegistry) or "
                       f"use mix.restricted_to({sorted(c for c, n in general_rows.items() if n)})")
    names = [CUSTOMER, *mix.category_weights]
    sizes = [customer_rows, *(general_rows[c] for c in mix.category_weights)]
    return MixedBatchOrder(names, sizes, exact_shares(mix.effective_shares()), batch_size, seed)

"""Row numbering shared by every data step, so an error always names the user's original row."""

from __future__ import annotations

import pandas as pd

ROW_INDEX = "row"


def number_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` indexed by 1-based input row numbers (kept through filtering and splits)."""
    out = frame.copy()
    out.index = pd.RangeIndex(1, len(out) + 1, name=ROW_INDEX)
    return out


def row_numbers(frame: pd.DataFrame) -> list[int]:
    """The 1-based input row number of each row of `frame`."""
    if frame.index.name == ROW_INDEX:
        return [int(r) for r in frame.index]
    return list(range(1, len(frame) + 1))

"""Tolerant label extraction from free-text replies ("HQ.", "The answer is hq", "LQ-EDIT")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=64)
def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    # Longest labels first so "LQ_EDIT" wins over a hypothetical "LQ"; "_", "-" and spaces are interchangeable.
    parts = []
    for label in sorted(labels, key=len, reverse=True):
        tokens = [re.escape(t) for t in re.split(r"[_\-\s]+", label.strip()) if t]
        parts.append(r"[_\-\s]?".join(tokens))
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(f"(?:{p})" for p in parts) + r")(?![A-Za-z0-9])",
                      re.IGNORECASE)


def _canonical(text: str) -> str:
    return re.sub(r"[_\-\s]+", "_", text.strip()).lower()


def extract_label(reply: str | None, labels: Sequence[str]) -> str | None:
    """The first declared label mentioned in `reply` (canonical spelling), or None when there is none."""
    if not reply or not labels:
        return None
    labels = tuple(labels)
    match = _label_pattern(labels).search(reply)
    if match is None:
        return None
    by_canonical = {_canonical(label): label for label in labels}
    return by_canonical.get(_canonical(match.group(1)))

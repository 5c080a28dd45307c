"""Errors a user can act on: each names what went wrong and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NbtoolkitError(Exception):
    """Base class for every error nbtoolkit raises on purpose."""


class DataError(NbtoolkitError, ValueError):
    """Bad input data, located by file, row (1-based data row), line and column where known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.row = row
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ModelError(NbtoolkitError):
    """A model cannot be found, converted or loaded here."""


def closest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelled name (case-insensitive), or None when nothing is close."""
    candidates = list(candidates)
    by_lower = {c.lower(): c for c in candidates}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def unknown_name_message(kind: str, name: str, candidates: Iterable[str]) -> str:
    """'unknown column 'Titel'; did you mean 'Title'? (available: ...)'."""
    candidates = list(candidates)
    suggestion = closest_name(name, candidates)
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    return f"unknown {kind} {name!r}{hint} (available: {', '.join(map(repr, candidates))})"

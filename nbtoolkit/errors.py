"""Errors a user can act on: each names what went wrong and where."""

from __future__ import annotations

import difflib
import errno
import os
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


class ConfigError(NbtoolkitError, ValueError):
    """A configuration argument that cannot work, named with the fix; raised at construction."""


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


# What to do about a failed read or write, by errno; the one place OS errors become advice.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or choose a folder on another disk",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "the path is a folder, not a file",
    errno.EEXIST: "the path exists and is not a folder; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.ENOENT: "the path does not exist",
}


def os_error_message(error: OSError, action: str) -> str:
    """'cannot write: the disk is full; free some space ... [Errno 28] (path)' for any OSError."""
    fix = _OS_ERROR_FIXES.get(error.errno or -1, error.strerror or str(error))
    where = f" ({os.fsdecode(error.filename)})" if error.filename else ""
    return f"cannot {action}: {fix}{where}"


def file_error(error: OSError, action: str, source: str | os.PathLike | None = None) -> DataError:
    """A DataError for an OSError met while reading or writing `source` (errno decides the advice)."""
    return DataError(os_error_message(error, action), source=None if source is None else os.fspath(source))

"""Make text safe for chat-template training: reserved strings and HTML, with a per-row record of changes."""

from __future__ import annotations

import html
import os
import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from typing import Literal

import pandas as pd

from nbtoolkit.data.rows import row_numbers

# Case-sensitive substrings that clash with the Nova chat template (docs/nova-data-formats.md).
RESERVED_ROLE_MARKERS = (
    "System:", "SYSTEM:", "User:", "USER:", "Bot:", "BOT:", "Assistant:", "ASSISTANT:", "Thought:",
)
RESERVED_TOKENS = ("[EOS]", "<image>", "<video>", "<unk>")
RESERVED_STRINGS = RESERVED_ROLE_MARKERS + RESERVED_TOKENS

ReservedMode = Literal["rewrite", "drop", "reject"]
RESERVED_MODES = ("rewrite", "drop", "reject")

_ROLE_MARKER_RE = re.compile(
    r"\b(" + "|".join(re.escape(m[:-1]) for m in RESERVED_ROLE_MARKERS) + r"):"
)
_RESERVED_TOKEN_RE = re.compile("|".join(re.escape(t) for t in RESERVED_TOKENS))


def find_reserved(text: str) -> list[str]:
    """Reserved strings present in `text`, in list order."""
    return [s for s in RESERVED_STRINGS if s in text]


def rewrite_reserved(text: str) -> str:
    """The rewrite: a space before the colon of role markers, bracket tokens removed."""
    text = _ROLE_MARKER_RE.sub(r"\1 :", text)
    return _RESERVED_TOKEN_RE.sub("", text)


class _TextExtractor(HTMLParser):
    """HTML to readable text: paragraphs and blocks on their own lines, code kept verbatim."""

    _BLOCKS = {"p", "div", "pre", "blockquote", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._in_pre = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n\n")
        if tag == "pre":
            self._in_pre += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = max(0, self._in_pre - 1)
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data if self._in_pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        joined = "".join(self.parts)
        lines = [line.rstrip() for line in joined.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """Convert an HTML body (e.g. a Stack Overflow question) to plain text."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return html.unescape(parser.text())


@dataclass(frozen=True)
class TextChange:
    """One change the sanitizer made to one cell."""

    row: int
    column: str
    rule: str  # "html_to_text" | "reserved_rewrite" | "reserved_drop"
    detail: str
    before: str
    after: str

    def to_dict(self) -> dict:
        return asdict(self)


def _excerpt(text: str, start: int = 0, limit: int = 160) -> str:
    start = max(0, min(start, len(text) - limit))
    piece = text[start:start + limit]
    return ("…" if start else "") + piece + ("…" if start + limit < len(text) else "")


def _change_excerpts(before: str, after: str, context: int = 60) -> tuple[str, str]:
    """Excerpts of both texts around the first place they differ."""
    first = len(os.path.commonprefix([before, after]))
    return _excerpt(before, first - context), _excerpt(after, first - context)


@dataclass
class SanitizeResult:
    """The cleaned frame, the per-row record of what changed, and the rows dropped."""

    frame: pd.DataFrame
    changes: list[TextChange]
    dropped_rows: list[int]

    def changes_frame(self) -> pd.DataFrame:
        columns = ["row", "column", "rule", "detail", "before", "after"]
        return pd.DataFrame([c.to_dict() for c in self.changes], columns=columns)

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.rule] = counts.get(change.rule, 0) + 1
        return {"changes": counts, "rows_changed": len({c.row for c in self.changes}),
                "rows_dropped": len(self.dropped_rows)}


def sanitize_frame(
    frame: pd.DataFrame,
    text_columns: list[str] | tuple[str, ...],
    *,
    html_columns: list[str] | tuple[str, ...] = (),
    reserved: ReservedMode = "rewrite",
) -> SanitizeResult:
    """Return a sanitized copy of `frame`; the input frame is never modified.

    `html_columns` are converted from HTML to text first. Reserved strings in `text_columns` are rewritten
    (a space before the colon), or their rows dropped, or left in place for the validator to reject ("reject").
    Row numbers in the record are the input row numbers (see `rows.number_rows`).
    """
    if reserved not in RESERVED_MODES:
        raise ValueError(f"reserved must be one of {RESERVED_MODES}, got {reserved!r}")
    out = frame.copy()
    rows = row_numbers(frame)
    changes: list[TextChange] = []
    dropped: list[int] = []
    for column in html_columns:
        values = out[column].tolist()
        for position, (row, value) in enumerate(zip(rows, values)):
            if isinstance(value, str) and ("<" in value or "&" in value):
                text = html_to_text(value)
                if text != value:
                    values[position] = text
                    changes.append(TextChange(row, column, "html_to_text", "HTML converted to text",
                                              _excerpt(value), _excerpt(text)))
        out[column] = values
    if reserved == "reject":
        return SanitizeResult(out, changes, dropped)
    drop_positions: set[int] = set()
    for column in text_columns:
        values = out[column].tolist()
        for position, (row, value) in enumerate(zip(rows, values)):
            if not isinstance(value, str):
                continue
            found = find_reserved(value)
            if not found:
                continue
            if reserved == "drop":
                drop_positions.add(position)
                changes.append(TextChange(row, column, "reserved_drop",
                                          "row dropped: contains " + ", ".join(found), _excerpt(value), ""))
                continue
            text = rewrite_reserved(value)
            values[position] = text
            changes.append(TextChange(row, column, "reserved_rewrite", "rewrote " + ", ".join(found),
                                      *_change_excerpts(value, text)))
        out[column] = values
    if drop_positions:
        dropped = sorted(rows[p] for p in drop_positions)
        keep = [p not in drop_positions for p in range(len(out))]
        out = out[keep]
    return SanitizeResult(out, changes, dropped)

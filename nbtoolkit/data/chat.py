"""Reading "chat" JSONL files ({"messages": [...]}) row by row, as the local trainers and the data mixer use them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nbtoolkit.errors import DataError


def read_chat_rows(path: str | os.PathLike, *, limit: int | None = None) -> list[tuple[int, list[dict]]]:
    """(line number, messages) of each row of a "chat" JSONL file; DataError for anything the trainer cannot use.

    Each row needs {"messages": [...]} with string contents, at least one user turn, and the assistant's answer
    as the last message.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError("file not found (pass the chat.jsonl written by prepare_dataset)", source=source)
    rows: list[tuple[int, list[dict]]] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"not valid JSON ({error.msg} at column {error.colno})", source=source,
                                line=line_number) from None
            rows.append((line_number, _chat_messages(record, source, len(rows) + 1, line_number)))
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise DataError("the file has no rows", source=source)
    return rows


def _chat_messages(record: Any, source: str, row: int, line: int) -> list[dict]:
    def fail(message: str) -> DataError:
        return DataError(message, source=source, row=row, line=line)

    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        raise fail('expected a chat record {"messages": [{"role": ..., "content": ...}, ...]}')
    messages = record["messages"]
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise fail(f"messages[{i}] needs a role and a content")
        if not isinstance(message["content"], str):
            raise fail(f"messages[{i}].content must be a string (a Converse-format file? use the chat format "
                       "file, chat.jsonl, that prepare_dataset writes)")
    if not any(m["role"] == "user" for m in messages):
        raise fail("no user message")
    if messages[-1]["role"] != "assistant":
        raise fail("no assistant answer: the last message must be the assistant's answer to train on")
    if not messages[-1]["content"].strip():
        raise fail("the assistant answer is empty")
    return messages

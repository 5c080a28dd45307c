"""ColumnMapping: which of the user's columns feed each standard field of a training method."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd

from nbtoolkit.errors import ConfigError, DataError, unknown_name_message

METHODS = ("sft", "rft", "eval", "cpt")

# The service's own key names per method (docs/nova-data-formats.md), translated to ColumnMapping fields.
METHOD_KEYS: dict[str, dict[str, str]] = {
    "sft": {"question": "question", "answer": "answer", "system": "system"},
    "rft": {"question": "question", "reference_answer": "answer", "system": "system", "id": "id"},
    "eval": {"query": "question", "response": "answer", "system": "system", "metadata": "metadata"},
    "cpt": {"text": "text"},
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "sft": ("question", "answer"),
    "rft": ("question", "reference_answer"),
    "eval": ("query", "response"),
    "cpt": ("text",),
}

Columns = tuple[str, ...]

# Column names that commonly hold a question or an answer (compared case-insensitively), in preference order;
# used when no column carries the service's own key name, e.g. a `text,label` classification file.
# An `input` or `context` column next to the question is joined to it (Alpaca's instruction + input).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "query", "prompt", "instruction", "input", "text", "sentence", "content", "review"),
    "answer": ("answer", "response", "reference_answer", "completion", "output", "label", "labels", "target",
               "class", "category", "rating", "sentiment"),
}


def _as_columns(value: str | list[str] | tuple[str, ...] | None) -> Columns:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"expected a column name or a list of column names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ColumnMapping:
    """Map input columns to the standard fields shared by every method.

    A text field may combine several columns (joined by `separator`, e.g. Title + Body). The system prompt comes
    from a column (`system`) or is one constant for every row (`system_prompt`), not both. `metadata` columns
    travel with each row (RFT extra keys, eval metadata). Use `for_method` to pass the service's key names.
    """

    question: Columns = field(default=(), metadata={"help": "column(s) holding the prompt / query"})
    answer: Columns = field(default=(), metadata={"help": "column holding the answer, label or reference"})
    system: str | None = field(default=None, metadata={"help": "column holding a per-row system prompt"})
    system_prompt: str | None = field(default=None, metadata={"help": "one system prompt for every row"})
    id: str | None = field(default=None, metadata={"help": "column holding a row id (RFT)"})
    metadata: Columns = field(default=(), metadata={"help": "extra columns carried along (RFT, eval)"})
    text: Columns = field(default=(), metadata={"help": "column(s) holding raw text (CPT)"})
    separator: str = field(default="\n\n", metadata={"help": "joins combined columns"})

    def __post_init__(self) -> None:
        for name in ("question", "answer", "metadata", "text"):
            object.__setattr__(self, name, _as_columns(getattr(self, name)))
        if self.system and self.system_prompt:
            raise ValueError("give the system prompt either as a column (system) or as text (system_prompt), not both")
        if len(self.answer) > 1:
            raise ValueError(f"the answer comes from one column, got {list(self.answer)}")
        if self.system_prompt is not None and not self.system_prompt.strip():
            raise ValueError("system_prompt is blank; leave it unset instead")

    @classmethod
    def for_method(cls, method: str, **keys: Any) -> ColumnMapping:
        """Build from the service's key names, e.g. `for_method("eval", query="Body", response="Y")`."""
        method = _check_method(method)
        known = METHOD_KEYS[method]
        kwargs: dict[str, Any] = {}
        for key, value in keys.items():
            if key in ("system_prompt", "separator"):
                kwargs[key] = value
            elif key in known:
                kwargs[known[key]] = value
            else:
                raise ValueError(unknown_name_message(f"{method} mapping key", key,
                                                      [*known, "system_prompt", "separator"]))
        return cls(**kwargs)

    def method_keys(self, method: str) -> dict[str, Any]:
        """This mapping under the service's key names for `method` (unset keys omitted)."""
        method = _check_method(method)
        out: dict[str, Any] = {}
        for key, attribute in METHOD_KEYS[method].items():
            value = getattr(self, attribute)
            if value:
                out[key] = list(value) if isinstance(value, tuple) else value
        if self.system_prompt and "system" in METHOD_KEYS[method]:
            out["system_prompt"] = self.system_prompt
        return out

    def input_columns(self) -> list[str]:
        """Every input column this mapping reads, in order, without repeats."""
        columns = [*self.question, *self.answer, *([self.system] if self.system else []),
                   *([self.id] if self.id else []), *self.metadata, *self.text]
        return list(dict.fromkeys(columns))

    def check(self, frame: pd.DataFrame, method: str, *, source: str | None = None) -> None:
        """Raise DataError when a key `method` needs is unmapped or names a missing column."""
        method = _check_method(method)
        for key in REQUIRED_KEYS[method]:
            if not getattr(self, METHOD_KEYS[method][key]):
                raise DataError(f"the {method} mapping needs {key!r}; map it to one of the columns "
                                f"{list(frame.columns)}", source=source)
        available = [str(c) for c in frame.columns]
        for column in self.input_columns():
            if column not in frame.columns:
                raise DataError(unknown_name_message("column", column, available), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnMapping:
        names = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(unknown_name_message("mapping field", unknown[0], sorted(names)))
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(unknown_name_message("method", method, METHODS))
    return method


def infer_mapping(frame: pd.DataFrame, method: str = "sft", *, system_prompt: str | None = None) -> ColumnMapping:
    """Identity mapping when the column names already match a method's keys; DataError otherwise.

    Any method's key names are accepted (question/answer, query/response, reference_answer, text), so a
    file written for one method maps for another without configuration. For a method with a question and an
    answer, common names fill the gaps (`COLUMN_ALIASES`: text/label, sentence/label, prompt/completion, ...).
    """
    method = _check_method(method)
    names = [str(c) for c in frame.columns]
    columns = set(names)
    kwargs: dict[str, Any] = {}
    for keys in (METHOD_KEYS[method], *METHOD_KEYS.values()):
        for key, attribute in keys.items():
            if key in columns and attribute not in kwargs:
                kwargs[attribute] = key
    if method != "cpt":
        kwargs.pop("text", None)  # a text column is either the question (below) or nothing for this method
        by_lower = {name.lower(): name for name in reversed(names)}
        for attribute in ("question", "answer"):
            if attribute in kwargs:
                continue
            used = {kwargs.get("question"), kwargs.get("answer"), kwargs.get("system"), kwargs.get("id")}
            alias = next((by_lower[a] for a in COLUMN_ALIASES[attribute]
                          if a in by_lower and by_lower[a] not in used), None)
            if alias is not None:
                kwargs[attribute] = alias
        # An instruction's optional context column travels with it (Alpaca: instruction, input, output).
        context = next((by_lower[c] for c in ("input", "context") if c in by_lower), None)
        question = kwargs.get("question")
        if context is not None and question is not None and context not in (question, kwargs.get("answer")):
            kwargs["question"] = (question, context)
    if system_prompt is not None:
        kwargs.pop("system", None)
        kwargs["system_prompt"] = system_prompt
    mapping = ColumnMapping(**kwargs)
    mapping.check(frame, method, source=frame.attrs.get("source"))
    return mapping

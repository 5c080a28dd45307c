"""Task presets: the label set and system prompt of a known classification task."""

from __future__ import annotations

from dataclasses import dataclass

STACKOVERFLOW_SYSTEM_PROMPT = """\
This is a stack overflow question from 2016-2020 and it can be classified into three categories:
* HQ: High-quality posts without a single edit.
* LQ_EDIT: Low-quality posts with a negative score, and multiple community edits. However, they remain open after those changes.
* LQ_CLOSE: Low-quality posts that were closed by the community without a single edit.
You are a technical assistant who will classify the question from users into any of above three categories. Respond with only the category name: HQ, LQ_EDIT, or LQ_CLOSE.
**Do not add any explanation, just give the category as output**."""


@dataclass(frozen=True)
class TaskPreset:
    """A classification task: its labels and the system prompt that asks for them."""

    name: str
    labels: tuple[str, ...]
    system_prompt: str
    description: str


TASKS: dict[str, TaskPreset] = {
    "stackoverflow-quality": TaskPreset(
        "stackoverflow-quality",
        labels=("HQ", "LQ_EDIT", "LQ_CLOSE"),
        system_prompt=STACKOVERFLOW_SYSTEM_PROMPT,
        description="classify a Stack Overflow question as HQ, LQ_EDIT or LQ_CLOSE (docs/case-study.md)",
    ),
}

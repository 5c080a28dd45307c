"""Choices made on a validation split carved from the training data, never on the evaluation file.

`ValidationSet` is a fixed, stratified sample of the validation rows; `validation_accuracy` scores a model on it
(greedy replies, exact match on the label); `BestWeights` keeps the trainable weights of the best-scoring step of
a run so the run can end on them instead of on its last step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nbtoolkit.models import LoadedModel

VALIDATION_ROWS = 300  # about ±2.7 points of standard error at 85% accuracy: enough to rank checkpoints
SELECTION_METRIC = "validation_exact_match"
BEST_WEIGHTS_FILE = "best.safetensors"


@dataclass(frozen=True)
class ValidationSet:
    """The rows every validation check scores: conversations, true labels, and how they were drawn."""

    conversations: list[list[dict]]
    truth: list[str]
    labels: tuple[str, ...]
    rows_total: int
    sampling: str
    source: str

    def describe(self) -> str:
        from nbtoolkit.evaluation import describe_rows

        return f"{describe_rows(len(self.truth), self.rows_total, self.sampling)} of {self.source}"


def load_validation_set(path: str | os.PathLike, labels: Sequence[str], *, limit: int = VALIDATION_ROWS,
                        seed: int = 0) -> ValidationSet:
    """A stratified sample of `limit` rows (0: every row) of a chat or gen_qa validation file."""
    from nbtoolkit.evaluation import reference_label, load_eval_examples, sample_rows

    if not labels:
        raise ValueError("validation checks score labels: give the label set")
    examples = load_eval_examples(path)
    rows, sampling = sample_rows(examples, limit, labels, seed=seed)
    chosen = [examples[i] for i in rows]
    return ValidationSet([e.conversation for e in chosen], [reference_label(e.reference, labels) for e in chosen],
                         tuple(labels), len(examples), sampling, Path(path).name)


def validation_accuracy(loaded: LoadedModel, validation: ValidationSet, *, batch_size: int = 16,
                        max_prompt_tokens: int | None = None) -> dict[str, Any]:
    """Exact match (reply == true label) of greedy replies on the validation rows, with its standard error.

    Replies stop one token after the longest label: a longer reply cannot be an exact match.
    """
    from nbtoolkit.generation import generate_replies
    from nbtoolkit.metrics import exact_match, mean_and_stderr

    started = time.perf_counter()
    longest = max(len(loaded.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in validation.labels)
    was_training = loaded.model.training
    replies = generate_replies(loaded, validation.conversations, max_new_tokens=longest + 1, batch_size=batch_size,
                               max_prompt_tokens=max_prompt_tokens, progress=False)
    if was_training:
        loaded.model.train()
    correct = [float(exact_match(reply.text, truth)) for reply, truth in zip(replies, validation.truth)]
    mean, stderr = mean_and_stderr(correct)
    return {"exact_match": mean, "exact_match_stderr": stderr, "rows": len(correct),
            "seconds": round(time.perf_counter() - started, 2)}


class BestWeights:
    """The trainable weights of the best validation score so far, on disk (a full model is 0.5 GB: not in RAM).

    Ties go to the later step. `state()` / `from_state()` let a resumed run keep its best so far.
    """

    def __init__(self, directory: str | os.PathLike, *, step: int | None = None, score: float | None = None,
                 history: dict[str, float] | None = None) -> None:
        self.path = Path(directory) / BEST_WEIGHTS_FILE
        self.step, self.score = step, score
        self.history: dict[str, float] = dict(history or {})

    def offer(self, model: torch.nn.Module, step: int, score: float) -> bool:
        """Record `score` at `step`; save the weights when it is the best so far. Returns whether it was."""
        self.history[str(step)] = score
        if self.score is not None and score < self.score:
            return False
        from safetensors.torch import save_file

        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        save_file({name: p.detach().contiguous().cpu() for name, p in _trainable(model)}, str(tmp))
        os.replace(tmp, self.path)
        self.step, self.score = step, score
        return True

    def restore(self, model: torch.nn.Module) -> None:
        """Copy the saved best weights back into `model`."""
        import torch
        from safetensors.torch import load_file

        saved = load_file(str(self.path))
        with torch.no_grad():
            for name, parameter in _trainable(model):
                parameter.copy_(saved[name].to(parameter.device, parameter.dtype))

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "score": self.score, "history": self.history}

    @classmethod
    def from_state(cls, directory: str | os.PathLike, state: dict[str, Any] | None) -> BestWeights:
        state = state or {}
        best = cls(directory, step=state.get("step"), score=state.get("score"), history=state.get("history"))
        if best.step is not None and not best.path.is_file():
            best.step = best.score = None  # the weights file is gone: only the history survives
        return best


def _trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]

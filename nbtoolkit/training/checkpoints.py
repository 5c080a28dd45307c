"""Checkpoints and exports of a training run (SFT and RFT share them): written atomically, resumable.

A run directory holds checkpoints/step-<N>/ (the last KEEP_CHECKPOINTS: weights or LoRA adapter, optimizer and
scheduler state, RNG state, and trainer_state.json, written last so a directory that has it is complete), and at
the end adapter/ (LoRA) and model/ (merged weights + tokenizer, loadable with load_model).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nbtoolkit.errors import ModelError, NbtoolkitError
from nbtoolkit.runtime.events import write_json_atomic

__all__ = ["CHECKPOINT_PREFIX", "KEEP_CHECKPOINTS", "TrainingProgress", "atomic_directory", "export_model",
           "latest_checkpoint", "load_checkpoint", "remove_leftovers", "save_checkpoint"]

KEEP_CHECKPOINTS = 2
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainingProgress:
    """What a checkpoint records besides tensors: where the data stream is and what the run has done so far."""

    step: int = 0
    rows_seen: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    last_loss: float | None = None
    eval_loss: float | None = None
    eval_step: int | None = None
    config: dict | None = None
    best: dict | None = None  # BestWeights.state(): the best validation score so far and its step


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory, renamed to `target` when the body succeeds and deleted when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(directory: Path) -> None:
    """Our temporary directories left by a process that died while writing (never a complete result)."""
    for name in ("adapter", "model", f"{CHECKPOINT_PREFIX}*"):
        for leftover in [*directory.glob(f".{name}.tmp-*"), *directory.glob(f".{name}.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)


def _checkpoint_step(path: Path) -> int | None:
    suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
    ok = path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and (path / STATE_FILE).is_file()
    return int(suffix) if ok else None


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = run_dir / "checkpoints"
    found = [(_checkpoint_step(p), p) for p in folder.iterdir()] if folder.is_dir() else []
    return sorted((step, path) for step, path in found if step is not None)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    found = _checkpoints(Path(run_dir))
    return found[-1][1] if found else None


def _write_trainer_state(path: Path, progress: TrainingProgress) -> None:
    write_json_atomic(path, asdict(progress))


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, progress: TrainingProgress, lora: bool) -> Path:
    target = run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{progress.step}"
    with atomic_directory(target) as tmp:
        if lora:
            model.save_pretrained(tmp / "adapter")
        else:
            from safetensors.torch import save_model

            save_model(model, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        _write_trainer_state(tmp / STATE_FILE, progress)  # last: a directory with it is complete
    for _, old in _checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, model, optimizer, scheduler, lora: bool, device: str) -> TrainingProgress:
    if lora != (path / "adapter").is_dir():
        kind = "a LoRA" if (path / "adapter").is_dir() else "a full fine-tuning"
        raise NbtoolkitError(f"{path} is from {kind} run; resume it with the same kind of config")
    if lora:
        from peft import load_peft_weights, set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_peft_weights(str(path / "adapter"), device=device))
        if result.unexpected_keys:
            raise ModelError(f"checkpoint {path} does not match this model: unexpected {result.unexpected_keys[:3]}")
    else:
        from safetensors.torch import load_model as load_safetensors

        load_safetensors(model, str(path / "model.safetensors"), device=device)
    states = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainingProgress(**json.loads((path / STATE_FILE).read_text()))


def export_model(model, tokenizer, run_dir: Path, lora: bool) -> dict[str, str | None]:
    """adapter/ (LoRA) and model/ (merged weights + tokenizer), each written to a temp dir and renamed in."""
    paths: dict[str, str | None] = {"adapter": None}
    if lora:
        with atomic_directory(run_dir / "adapter") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        paths["adapter"] = str(run_dir / "adapter")
        model = model.merge_and_unload()
    model.eval()
    with atomic_directory(run_dir / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    paths["model"] = str(run_dir / "model")
    return paths

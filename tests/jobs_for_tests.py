"""Job functions for the runtime tests: no model, a few short steps, same keyword interface as run_sft."""

from __future__ import annotations

import json
import time
from pathlib import Path


def _checkpoint(run_dir: str) -> Path:
    return Path(run_dir) / "checkpoints" / "state.json"


def count(config, *, run_dir, resume=False, log=None, stop_event=None, steps=None, sleep=0.05, save_every=1,
          **_):
    """Counts to `steps` (default config.max_steps), one metrics row per step, checkpointing its step."""
    total = steps or config.max_steps
    state = _checkpoint(run_dir)
    start = json.loads(state.read_text())["step"] if resume and state.exists() else 0
    log.info(f"counting from {start} to {total}")

    def save(step: int) -> None:
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        tmp.replace(state)

    for step in range(start + 1, total + 1):
        if stop_event is not None and stop_event.is_set():
            save(step - 1)
            log.info(f"stop requested: checkpoint at step {step - 1}")
            return {"steps_done": step - 1, "resumed_from": start}
        time.sleep(sleep)
        log.metric(step=step, loss=1.0 / step, lr=0.001)
        log.progress(step, total)
        if step % save_every == 0:
            save(step)
    save(total)
    model_dir = Path(run_dir) / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "weights.txt").write_text(str(total))
    return {"steps_done": total, "resumed_from": start, "final_loss": 1.0 / total, "model_dir": str(model_dir)}


def crash(config, *, run_dir, log=None, **_):
    """Logs two steps, then fails."""
    for step in (1, 2):
        log.metric(step=step, loss=1.0)
    raise ValueError("boom at step 2")


def stubborn(config, *, run_dir, log=None, stop_event=None, **_):
    """Takes a stop_event but never looks at it: cancel() has to SIGKILL it."""
    log.info("ignoring stop requests")
    for _ in range(600):
        time.sleep(0.05)
    return {}


def no_stop_event(config, *, run_dir, log=None):
    """Takes no stop_event: the worker interrupts it on SIGTERM."""
    log.info("sleeping")
    for _ in range(600):
        time.sleep(0.05)
    return {}

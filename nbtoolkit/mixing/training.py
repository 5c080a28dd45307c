"""The part of a local SFT run that mixes general data in: tokenized general rows and the batch order.

run_sft calls `mixed_training` when its job carries a mix (JobSpec extra {"mix", "general_data"}); the run
directory then gets mix.json with the target mix, the general files used and the realized mix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtoolkit.data.chat import read_chat_rows
from nbtoolkit.errors import DataError
from nbtoolkit.runtime.events import write_json_atomic
from nbtoolkit.mixing.config import CUSTOMER, MixConfig, MixError
from nbtoolkit.mixing.sampler import MixedBatchOrder, mixed_order

MIX_FILE = "mix.json"


@dataclass
class MixedTraining:
    """Customer examples followed by each category's examples, and the order that mixes them per batch."""

    mix: MixConfig
    examples: list
    order: MixedBatchOrder
    files: dict[str, dict[str, Any]]

    def record(self, run_dir: str | Path, steps: int, *, planned_steps: int | None = None) -> dict[str, Any]:
        """Write run_dir/mix.json: the target mix, the general data files and what `steps` steps trained on."""
        data = {"mix": self.mix.to_dict(), "nova": self.mix.to_nova(),
                "target_percent": self.mix.effective_shares(), "general_data": self.files,
                "realized": self.order.realized(steps)}
        if planned_steps is not None:
            data["planned"] = self.order.realized(planned_steps)
        write_json_atomic(Path(run_dir) / MIX_FILE, data)
        return data

    def summary(self, steps: int) -> dict[str, float]:
        """Realized percent of every source after `steps` steps (for the run's result)."""
        sources = self.order.realized(steps)["sources"]
        return {name: info["realized_percent"] for name, info in sources.items()}


def mixed_training(mix: MixConfig | Mapping[str, Any], general_data: Mapping[str, str] | None, customer: list,
                   tokenize: Callable[[list, str], list], *, batch_size: int, seed: int,
                   warn: Callable[[str], None] = print) -> MixedTraining:
    """Read and tokenize each category's chat file (rows whose answer cannot fit max_length are dropped and
    reported) and build the batch order. `tokenize(rows, source)` is the trainer's tokenizer for a row list."""
    mix = mix if isinstance(mix, MixConfig) else MixConfig.from_dict(mix)
    general_data = dict(general_data or {})
    if not mix.mixing:
        order = mixed_order(mix, len(customer), {}, batch_size, seed)
        return MixedTraining(mix, list(customer), order, {})
    examples, counts, files = list(customer), {}, {}
    for category in mix.category_weights:
        if category not in general_data:
            raise MixError(f"the mix gives weight to {category!r} but the job has no general_data file for it")
        path = general_data[category]
        rows = read_chat_rows(path)
        kept, dropped = [], 0
        for row in rows:
            try:
                kept += tokenize([row], path)
            except DataError:
                dropped += 1  # an answer longer than max_length: skipped, not cut mid-answer
        if not kept:
            raise MixError(f"no row of {path} fits max_length (all {len(rows)} answers are too long)")
        if dropped:
            warn(f"{dropped} of {len(rows)} rows of {category} ({Path(path).name}) skipped: their answer does not "
                 "fit max_length")
        examples += kept
        counts[category] = len(kept)
        files[category] = {"file": str(path), "rows": len(kept), "skipped_too_long": dropped}
    order = mixed_order(mix, len(customer), counts, batch_size, seed)
    files = {CUSTOMER: {"rows": len(customer)}, **files}
    return MixedTraining(mix, examples, order, files)

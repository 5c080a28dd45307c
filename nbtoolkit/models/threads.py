"""Torch's CPU thread count follows the cores other processes leave free.

torch runs each op on every thread and waits for the slowest at the end of the op. When another busy process
takes one of two cores, the thread that shares a core with it is descheduled for whole time slices, and every op
waits for it: a training step was measured 6-30x slower, not 2x. `CoreShare.update()` (called between steps)
measures how many cores the other processes used since the previous call and sets torch's thread count to the
cores left, so a competing process costs a job about its share of the machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_INTERVAL = 2.0  # seconds between measurements: shorter windows are noise


def _total_busy_seconds() -> float | None:
    """CPU time all processes spent busy since boot (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0  # time the hypervisor gave to others is not ours to use
    return (sum(values[:8]) - idle - steal) / CLOCK_TICKS


def _own_busy_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CoreShare:
    """Sets torch's intra-op threads to the cores other processes leave free, between `cores` and 1."""

    cores: int
    enabled: bool = True

    def __post_init__(self) -> None:
        self._mark: tuple[float, float, float] | None = None
        self.threads = self.cores
        self.others = 0.0

    @classmethod
    def for_this_process(cls) -> CoreShare:
        """The thread count torch starts with is the ceiling; NBTOOLKIT_ADAPTIVE_THREADS=0 turns adapting off."""
        import torch

        return cls(torch.get_num_threads(), enabled=os.environ.get("NBTOOLKIT_ADAPTIVE_THREADS", "1") != "0")

    def update(self) -> int:
        """Measure since the last call and set the thread count; returns it."""
        if not self.enabled or self.cores <= 1:
            return self.threads
        total = _total_busy_seconds()
        if total is None:
            return self.threads
        now, own = time.monotonic(), _own_busy_seconds()
        if self._mark is None:
            self._mark = (now, total, own)
            return self.threads
        then, total_before, own_before = self._mark
        if now - then < MIN_INTERVAL:
            return self.threads
        self._mark = (now, total, own)
        self.others = max(0.0, (total - total_before) - (own - own_before)) / (now - then)
        wanted = max(1, min(self.cores, int(self.cores - self.others + 0.5)))
        if wanted != self.threads:
            import torch

            torch.set_num_threads(wanted)
            self.threads = wanted
        return self.threads

    def restore(self) -> None:
        """Back to the ceiling (other code in this process expects torch's usual thread count)."""
        if self.threads != self.cores:
            import torch

            torch.set_num_threads(self.cores)
            self.threads = self.cores

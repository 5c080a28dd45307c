"""Torch's CPU thread count follows the cores other processes leave free.

torch runs each op on every thread and waits for the slowest at the end of the op. When another busy process
takes one of two cores, the thread that shares a core with it is descheduled for whole time slices, and every op
waits for it: a training step was measured 6-30x slower, not 2x. `CoreShare.update()` (called between steps)
measures how many cores the other processes used since the previous call and sets torch's thread count to the
cores left, so a competing process costs a job about its share of the machine. Processes the scheduler ranks below
this one (a higher nice value in the same session) do not count: they only get the cores the job leaves idle.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_INTERVAL = 2.0  # seconds between measurements: shorter windows are noise
PROC = Path("/proc")


def _autogroups_enabled(proc: Path = PROC) -> bool:
    try:
        return (proc / "sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def competing_busy_seconds(proc: Path = PROC, own_pid: int | None = None) -> dict[int, float] | None:
    """CPU seconds used so far by each process that competes with this one for the cores (Linux /proc), or None
    where /proc cannot tell.

    A process with a higher nice value than ours does not compete: the scheduler gives it the cores only when we
    leave them idle, so taking threads away for it would only slow us. With autogroups on (the default on desktop
    and many server kernels), nice values only order processes of the same session, so a niced process of another
    session (another terminal, another kernel) still competes.
    """
    own_pid = os.getpid() if own_pid is None else own_pid
    try:
        own = (proc / str(own_pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    own_session, own_nice = own[3], int(own[16])
    grouped = _autogroups_enabled(proc)
    busy = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone between the listing and the read
        lower_priority = int(fields[16]) > own_nice and (not grouped or fields[3] == own_session)
        if not lower_priority:
            busy[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return busy


@dataclass
class CoreShare:
    """Sets torch's intra-op threads to the cores other processes leave free, between `cores` and 1."""

    cores: int
    enabled: bool = True

    def __post_init__(self) -> None:
        self._mark: tuple[float, dict[int, float]] | None = None
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
        now = time.monotonic()
        if self._mark is not None and now - self._mark[0] < MIN_INTERVAL:
            return self.threads
        busy = competing_busy_seconds()
        if busy is None:
            return self.threads
        if self._mark is None:
            self._mark = (now, busy)
            return self.threads
        then, before = self._mark
        self._mark = (now, busy)
        # A process that started since the last mark used all its seconds in this window.
        used = sum(seconds - before.get(pid, 0.0) for pid, seconds in busy.items())
        self.others = max(0.0, used) / (now - then)
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

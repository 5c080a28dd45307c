"""Torch's thread count follows the cores other processes leave free."""

from __future__ import annotations

import pytest
import torch

from nbtoolkit.models import threads


@pytest.fixture
def clock(monkeypatch):
    """A fake clock and CPU counters: advance(seconds, others=cores busy elsewhere, own=cores busy here)."""
    state = {"now": 100.0, "total": 1000.0, "own": 10.0}

    def advance(seconds: float, others: float, own: float) -> None:
        state["now"] += seconds
        state["total"] += seconds * (others + own)
        state["own"] += seconds * own

    monkeypatch.setattr(threads.time, "monotonic", lambda: state["now"])
    monkeypatch.setattr(threads, "_total_busy_seconds", lambda: state["total"])
    monkeypatch.setattr(threads, "_own_busy_seconds", lambda: state["own"])
    before = torch.get_num_threads()
    yield advance
    torch.set_num_threads(before)


def test_threads_drop_to_the_free_cores_and_come_back(clock):
    share = threads.CoreShare(cores=2)
    assert share.update() == 2                      # the first call only marks the counters
    clock(5.0, others=1.0, own=1.0)                 # a busy process took a core
    assert share.update() == 1 and torch.get_num_threads() == 1
    clock(1.0, others=0.0, own=1.0)                 # too short a window to judge
    assert share.update() == 1
    clock(5.0, others=0.1, own=1.0)                 # the other process ended
    assert share.update() == 2 and torch.get_num_threads() == 2
    clock(5.0, others=3.0, own=0.5)                 # never below one thread
    assert share.update() == 1
    share.restore()
    assert torch.get_num_threads() == 2


def test_adapting_can_be_turned_off(clock, monkeypatch):
    monkeypatch.setenv("NBTOOLKIT_ADAPTIVE_THREADS", "0")
    share = threads.CoreShare.for_this_process()
    share.update()
    clock(5.0, others=5.0, own=1.0)
    assert share.update() == share.cores == torch.get_num_threads()

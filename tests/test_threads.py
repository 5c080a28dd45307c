"""Torch's thread count follows the cores other processes leave free."""

from __future__ import annotations

import pytest
import torch

from nbtoolkit.models import threads


@pytest.fixture
def clock(monkeypatch):
    """A fake clock and CPU counters: advance(seconds, others=cores busy elsewhere, own=cores busy here)."""
    state = {"now": 100.0, "others": 1000.0}

    def advance(seconds: float, others: float, own: float) -> None:
        state["now"] += seconds
        state["others"] += seconds * others

    monkeypatch.setattr(threads.time, "monotonic", lambda: state["now"])
    monkeypatch.setattr(threads, "competing_busy_seconds", lambda: {4242: state["others"]})
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


def _fake_proc(root, processes, *, autogroups: bool):
    """A /proc with `processes`: {pid: (session, nice, busy seconds)}."""
    (root / "sys/kernel").mkdir(parents=True)
    (root / "sys/kernel/sched_autogroup_enabled").write_text("1\n" if autogroups else "0\n")
    for pid, (session, nice, busy) in processes.items():
        ticks = int(busy * threads.CLOCK_TICKS)
        # fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        # cutime cstime priority nice
        rest = ["R", "1", str(session), str(session), "0", "-1", "0", "0", "0", "0", "0", str(ticks), "0", "0", "0",
                "20", str(nice), "1"]
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(f"{pid} (py (thon)) " + " ".join(rest) + "\n")


@pytest.mark.parametrize("autogroups,counted", [(True, {2: 5.0, 3: 7.0, 5: 11.0}), (False, {2: 5.0, 3: 7.0})])
def test_processes_the_scheduler_ranks_below_us_do_not_compete(tmp_path, autogroups, counted):
    # us: pid 1, session 100, nice 5
    _fake_proc(tmp_path, {1: (100, 5, 1.0), 2: (100, 0, 5.0), 3: (100, 5, 7.0), 4: (100, 19, 9.0),
                          5: (200, 19, 11.0)}, autogroups=autogroups)
    # pid 4 (same session, nice 19) never competes; pid 5 (nice 19, another session) does when autogroups put
    # each session in its own group, where nice only orders processes within the group.
    assert threads.competing_busy_seconds(tmp_path, own_pid=1) == counted


def test_no_proc_means_no_adapting(tmp_path):
    assert threads.competing_busy_seconds(tmp_path, own_pid=1) is None

"""Shared fixtures: an isolated cache, offline hub, and the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Jobs in tests would otherwise log to the user's MLflow store; tests/test_tracking.py turns it on explicitly.
os.environ.setdefault("NBTOOLKIT_TRACKING", "off")


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test when this machine does not have it."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data is not on this machine)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and threads spin-wait badly when other processes share the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

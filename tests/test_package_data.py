"""Every data file nbtoolkit reads at run time ships in the wheel (pyproject.toml's package-data patterns)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nbtoolkit"
SKIPPED_SUFFIXES = {".py", ".pyc", ".pyo"}


def _patterns() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["package-data"]["nbtoolkit"]


def _shipped(relative: Path, patterns: list[str]) -> bool:
    # setuptools' "**/*.json" also matches a file at the package's top level.
    return any(relative.match(pattern) or relative.match(pattern.removeprefix("**/")) for pattern in patterns)


@pytest.mark.skipif(not PACKAGE.is_dir(), reason="needs the checkout's nbtoolkit/ sources")
def test_every_data_file_in_the_package_is_shipped():
    patterns = _patterns()
    data_files = [path.relative_to(PACKAGE) for path in PACKAGE.rglob("*")
                  if path.is_file() and path.suffix not in SKIPPED_SUFFIXES and "__pycache__" not in path.parts]
    missing = [str(path) for path in data_files if not _shipped(path, patterns)]
    assert missing == [], f"add patterns for these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_the_patterns_catch_nested_data_files():
    patterns = _patterns()
    assert _shipped(Path("data/vocabulary/words.json"), patterns)
    assert _shipped(Path("prices.json"), patterns)
    assert not _shipped(Path("data/notes.unknown"), patterns)

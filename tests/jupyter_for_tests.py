"""Jupyter helpers shared by the notebook and browser tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def write_kernelspec(jupyter_path: Path, name: str = "python3") -> Path:
    """A kernelspec `name` under jupyter_path/kernels that runs this interpreter (the project's .venv in CI).

    Put jupyter_path first on JUPYTER_PATH: it then wins over a user-level kernelspec of the same name."""
    directory = jupyter_path / "kernels" / name
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (nbtoolkit tests)", "language": "python", "metadata": {"debugger": False}}
    (directory / "kernel.json").write_text(json.dumps(spec, indent=1))
    return directory

"""What reaches a SageMaker training container: this nbtoolkit source tree, pinned requirements, an entry script and
the job's job.json, laid out in one directory that ModelTrainer uploads as its `code` channel.

The container image brings Python and torch (a newer Python than the one nbtoolkit is installed with here), so the
package is not pip-installed there: its source goes on PYTHONPATH and requirements.txt installs the libraries the
local runtime was tested with.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

ENTRY_SCRIPT = "nbt_entry.py"
JOB_FILE = "job.json"
REQUIREMENTS_FILE = "requirements.txt"
# Libraries the worker imports that the Hugging Face PyTorch image does not bring at the tested versions. torch is
# the image's own (a pip-installed torch would replace its CUDA build); gguf is only needed to convert the embedded
# model, which is uploaded already converted.
CONTAINER_PACKAGES = ("transformers", "peft", "trl", "accelerate", "safetensors", "sentencepiece", "rouge-score",
                      "sacrebleu", "pandas", "pyarrow", "tqdm")
UNPINNED = {"numpy": "numpy>=1.26"}
# Added when the job tracks to MLflow from the container (NBTOOLKIT_TRACKING_URI, e.g. a SageMaker MLflow ARN).
TRACKING_PACKAGES = ("mlflow", "sagemaker-mlflow")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".ipynb_checkpoints")

ENTRY_SOURCE = '''"""Runs one nbtoolkit job in a SageMaker training container (written by nbtoolkit.aws.packaging)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nbtoolkit.aws.entrypoint import main  # noqa: E402

sys.exit(main(job_file=HERE / "job.json", code_dir=HERE))
'''


def container_requirements(tracking: bool = False) -> list[str]:
    """requirements.txt lines: each package pinned to the version installed here (the tested set); with
    tracking=True also MLflow and the SageMaker MLflow plugin."""
    lines = []
    for name in CONTAINER_PACKAGES + (TRACKING_PACKAGES if tracking else ()):
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(name)
    return lines + list(UNPINNED.values())


def package_source() -> Path:
    """The directory of the nbtoolkit package being run."""
    import nbtoolkit

    return Path(nbtoolkit.__file__).resolve().parent


def build_source_dir(target: str | Path, job_json: dict[str, Any], *, tracking: bool = False) -> Path:
    """Write the code channel into `target` (created; must not exist or be empty) and return it."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    shutil.copytree(package_source(), target / "nbtoolkit", ignore=_IGNORE)
    (target / REQUIREMENTS_FILE).write_text("\n".join(container_requirements(tracking)) + "\n")
    (target / ENTRY_SCRIPT).write_text(ENTRY_SOURCE)
    (target / JOB_FILE).write_text(json.dumps(job_json, indent=2))
    return target

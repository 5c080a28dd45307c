#!/usr/bin/env bash
# What the real-browser test (tests/test_browser.py) needs, installed only when missing:
# Debian's chromium (Playwright's own browser download cannot reach its servers here) and the
# playwright Python package (its wheel ships the driver, nothing else is downloaded).
# Never fails the build: when an install is impossible (no root, no apt), the test says what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${NBTOOLKIT_VENV:-.venv}"
CHROMIUM="${NBTOOLKIT_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[browser-deps] installing Debian's chromium (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } \
            >/tmp/nbtoolkit-apt.log 2>&1 \
            || echo "[browser-deps] apt-get failed (see /tmp/nbtoolkit-apt.log); the browser test will say so"
    else
        echo "[browser-deps] $CHROMIUM is missing: install Debian's chromium as root (apt-get install chromium)"
    fi
fi

if ! "$VENV/bin/python" -c "import playwright" 2>/dev/null; then
    echo "[browser-deps] installing playwright (Python package, without a browser download)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt "playwright" \
        2> >(grep -v "is ignored: it is neither" >&2) \
        || echo "[browser-deps] pip install playwright failed; the browser test will say so"
fi
exit 0

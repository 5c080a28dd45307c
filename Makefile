# The two set-up commands of the README. Each creates or reuses .venv first.
.PHONY: pipeline test test-browser test-studio
pipeline:
	bash scripts/bootstrap.sh
	.venv/bin/nbtoolkit pipeline --profile quick

# browser_deps.sh adds what tests/test_browser.py needs (Debian's chromium, playwright) when it is missing.
# Then the second environment: Python 3.12 with SageMaker Studio's versions and nbtoolkit installed from its wheel
# (scripts/test_studio_env.sh; its first run downloads about 4 GB, PyPI's torch 2.8 being the CUDA build).
# NBTOOLKIT_STUDIO_ENV=0 leaves it out.
test:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest
	@if [ "$${NBTOOLKIT_STUDIO_ENV:-1}" = 1 ]; then bash scripts/test_studio_env.sh; \
	else echo "[studio-env] SKIPPED (NBTOOLKIT_STUDIO_ENV=0): the SageMaker Studio environment was NOT tested"; fi

# Only the second environment.
test-studio:
	bash scripts/test_studio_env.sh

# Only the real-browser tests (JupyterLab + chromium); `make test` runs them too.
test-browser:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest -m browser

# The two set-up commands of the README. Each creates or reuses .venv first.
.PHONY: pipeline test test-browser test-studio
pipeline:
	bash scripts/bootstrap.sh
	.venv/bin/nbtoolkit pipeline --profile quick

# browser_deps.sh adds what tests/test_browser.py needs (Debian's chromium, playwright) when it is missing.
# Then the second environment: Python 3.12 with SageMaker Studio's versions, nbtoolkit installed from its wheel
# (scripts/test_studio_env.sh; skipped with a message where no Python 3.12 exists).
test:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest
	bash scripts/test_studio_env.sh

# Only the second environment.
test-studio:
	bash scripts/test_studio_env.sh

# Only the real-browser tests (JupyterLab + chromium); `make test` runs them too.
test-browser:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest -m browser

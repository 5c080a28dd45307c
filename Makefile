# The two set-up commands of the README. Each creates or reuses .venv first.
.PHONY: pipeline test test-browser
pipeline:
	bash scripts/bootstrap.sh
	.venv/bin/nbtoolkit pipeline --profile quick

# browser_deps.sh adds what tests/test_browser.py needs (Debian's chromium, playwright) when it is missing.
test:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest

# Only the real-browser tests (JupyterLab + chromium); `make test` runs them too.
test-browser:
	bash scripts/bootstrap.sh
	bash scripts/browser_deps.sh
	.venv/bin/python -m pytest -m browser

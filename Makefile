# The two set-up commands of the README. Each creates or reuses .venv first.
.PHONY: pipeline test
pipeline:
	bash scripts/bootstrap.sh
	.venv/bin/nbtoolkit pipeline --profile quick

test:
	bash scripts/bootstrap.sh
	.venv/bin/python -m pytest

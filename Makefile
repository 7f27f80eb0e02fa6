# The two commands of the README.
.PHONY: setup test quickstart lint

setup:
	bash scripts/setup.sh

test: setup
	bash scripts/run_tests.sh

quickstart: setup
	bash scripts/quickstart.sh

lint:
	.venv/bin/ruff check jasper tests benchmarks

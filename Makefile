# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench bench-flink-venv clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# `make demo DEMO_FLAGS=--ui` also serves the web console while the demo runs (and prints its URL)
demo: $(STAMP)
	$(BIN)/flowlake demo $(DEMO_FLAGS)

# --max-worker-restart=0: xdist's loadgroup scheduler hangs forever after a worker crash (it never
# hands the crashed group's tests to the replacement), so a crash ends the run with its report instead
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --max-worker-restart=0

lint: $(STAMP)
	$(BIN)/ruff check flowlake harness tests benchmarks dataflows
	$(BIN)/ruff format --check flowlake harness tests benchmarks dataflows

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/table_upsert.py

# PyFlink for benchmarks/nexmark.py (which finds .venv-flink by itself), in its own venv: apache-flink
# pins pyarrow < 17, so it cannot share .venv; it needs Java 11+ on the PATH
bench-flink-venv:
	test -x .venv-flink/bin/python || $(PYTHON) -m venv .venv-flink
	.venv-flink/bin/python -m pip install --quiet apache-flink

clean-demo:
	rm -rf .flowlake

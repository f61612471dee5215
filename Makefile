# Two entry points: `make demo` (the main job) and `make test` (every test).
# `make test-fast`: lint, types, and the in-process unit and golden tests (no suites that
# start apps, engines or copier processes, no TypeScript SDK tests).
PYTHON ?= python3
# Test processes for `make test` (most tests wait on subprocesses and sockets, not the CPU).
TEST_WORKERS ?= 2
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := generator runtime tests bench $(wildcard scripts)

.PHONY: setup demo test test-fast lint clean

$(BIN)/lobeflow: pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./runtime -e '.[dev]'
	@touch $@

setup: $(BIN)/lobeflow

# Scaffold a demo project into ./demo and run its workflow end to end on the local engine.
demo: setup
	$(BIN)/python scripts/demo.py --dest demo

test: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10 -m "not serial"
	$(BIN)/python -m pytest -q -m serial

test-fast: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow and not node" --ignore=tests/reliability --ignore=tests/run

clean:
	rm -rf demo $(VENV)

# Two entry points: `make demo` (the main job) and `make test` (every test).
# `make test-fast`: lint, types, and every test not marked slow, node or serial (the inner
# loop, well under a minute). One room's tests: `make test-fast TESTS=tests/engine`.
# `.venv/bin/pytest --lf` re-runs what failed last.
PYTHON ?= python3
# Test processes for `make test` (most tests wait on subprocesses and sockets, not the CPU).
TEST_WORKERS ?= 2
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := generator runtime tests bench $(wildcard scripts)
TESTS  ?= tests

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
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 -m "not serial" $(TESTS)
	$(BIN)/python -m pytest -q --durations=10 -m serial $(TESTS) || [ $$? -eq 5 ]  # 5: no serial test among TESTS

test-fast: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=10 -m "not slow and not node and not serial" $(TESTS) || [ $$? -eq 5 ]

clean:
	rm -rf demo $(VENV)

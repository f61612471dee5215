# Two entry points: `make demo` (the main job) and `make test` (every test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := generator tests bench $(wildcard scripts)

.PHONY: setup demo test lint clean

$(BIN)/lobeflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/lobeflow

# Scaffold a demo project into ./demo and run its workflow end to end on the local engine.
demo: setup
	$(BIN)/python scripts/demo.py --dest demo

test: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo $(VENV)

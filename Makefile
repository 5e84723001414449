# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv on first use (only Python 3.11+ and make are required).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit format clean

$(BIN)/meter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/meter

demo: $(BIN)/meter
	$(BIN)/meter demo

test: $(BIN)/meter lint typecheck unit

lint: $(BIN)/meter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/meter
	$(BIN)/mypy --strict pricing storage services tasks scheduler workers cli api

unit: $(BIN)/meter
	$(BIN)/pytest -q $(PYTEST_ARGS)

format: $(BIN)/meter
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .meter .pytest_cache .mypy_cache .ruff_cache

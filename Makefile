# One command to run the service, one to test it. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench demo clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(BIN)/.installed  ## set up and run the embedded service with the demo digest
	$(BIN)/newsletter run --demo

test: $(BIN)/.installed  ## set up and run the whole test suite
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check newsletter workers tests
	$(BIN)/mypy newsletter workers

bench: $(BIN)/.installed  ## every benchmark, printing its figures
	for script in tests/perf/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) var

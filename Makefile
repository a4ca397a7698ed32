# One command to run the service, one to test it. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: run test lint bench clean

$(BIN)/.runtime: pyproject.toml
	@echo "make: creating $(VENV) and installing the service and its dependencies (a minute or two the first time)..."
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	@echo "make: installed."
	touch $@

$(BIN)/.dev: $(BIN)/.runtime
	@echo "make: installing the test tools into $(VENV) (a minute or two the first time)..."
	$(PIP) -e ".[dev]"
	touch $@

run: $(BIN)/.runtime  ## set up and run the embedded service, with the demo digest
	$(BIN)/newsletter run --demo

test: $(BIN)/.dev  ## set up and run the whole test suite; lists at the end what a missing package skipped
	$(BIN)/python -m pytest -q -p tests.missing_packages

lint: $(BIN)/.dev
	$(BIN)/ruff check newsletter workers tests
	$(BIN)/mypy newsletter workers

bench: $(BIN)/.dev  ## every benchmark, printing its figures
	for script in tests/perf/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) var

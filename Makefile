# Every target sets up .venv itself, so a fresh clone needs only `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
DEMO_DIR ?= demo

.PHONY: setup test test-all lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned, so nothing later can pull a CUDA build from the registry
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	# the layer contract in pyproject.toml ([tool.importlinter]); see ARCHITECTURE.md
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -m "not slow"

test-all: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/usdcm demo $(DEMO_DIR)

bench: $(STAMP)
	set -e; for script in benchmarks/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .ruff_cache .pytest_cache

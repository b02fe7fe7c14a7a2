# Two commands do all the set-up: `make run` serves the example Todo model, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
DEV := $(VENV)/.dev-stamp

.PHONY: run test lint typecheck services clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV)

run: $(RUNTIME)
	$(BIN)/gateway serve

services:
	bash scripts/ensure-services

lint: $(DEV)
	$(BIN)/ruff check gateway tests loadtests
	$(BIN)/ruff format --check gateway tests loadtests
	$(BIN)/lint-imports --no-cache

typecheck: $(DEV)
	$(BIN)/mypy gateway

test: $(DEV) services lint typecheck
	$(BIN)/pytest
	GATEWAY_BIN=$(abspath $(BIN))/gateway node --test clients/js/test/

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

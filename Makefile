# Escapement: `make run` starts the product with a living demo; `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help
BIN := .venv/bin
PORT ?= 8000
# Test processes for `make test` (pytest-xdist; `auto`: one per core, `0`: the suite in one).
PYTEST_WORKERS ?= auto

.PHONY: help venv run test pytest fuzz lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.venv/.installed: requirements.txt requirements-dev.txt .python-version
	scripts/venv.sh requirements-dev.txt
	touch $@

venv: .venv/.installed  ## create .venv and install the pinned requirements

run: venv  ## start PostgreSQL and Valkey under var/, migrate, seed the demo and serve web + worker + scheduler
	$(BIN)/python -m controlplane.embedded run --dir var/services -- scripts/run-demo.sh $(PORT)

test: venv  ## lint, then the whole suite against real PostgreSQL and Redis (started if needed)
	$(MAKE) --no-print-directory lint
	scripts/test-services.sh $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

pytest: venv  ## the suite only (no lint); PYTEST_ARGS="-k name" narrows it
	scripts/test-services.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

fuzz: venv  ## the API fuzz, full size: FUZZ_EXAMPLES (2000) random cases per operation and mode
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} FUZZ_RANDOM=1 scripts/test-services.sh $(BIN)/python -m pytest tests/hostile/test_api_fuzz.py $(PYTEST_ARGS)

lint: venv  ## ruff (lint + format check), mypy, and the import contracts of .importlinter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=. $(BIN)/lint-imports --no-cache

format: venv  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv  ## the benchmarks in bench/ (figures go to docs/benchmarks.md)
	scripts/test-services.sh $(BIN)/python bench/run.py

clean:  ## remove the database, broker files and services under var/
	rm -rf var/

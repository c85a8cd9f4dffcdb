# Two commands on a fresh clone: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

## Apply migrations, then serve on $HOST:$PORT (default 127.0.0.1:8000, SQLite in ./gallery.db).
run: $(VENV)/.installed
	$(BIN)/gallery serve

## The whole suite: SQLite always, and PostgreSQL too when TEST_DATABASE_URL is set.
test: $(VENV)/.installed-dev
	$(BIN)/pytest

## ruff (lint and format check) and mypy --strict on app/.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix app tests migrations bench
	$(BIN)/ruff format app tests migrations bench

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed

## Load benchmark against PostgreSQL (BENCH_DATABASE_URL); BENCH_ARGS="--scale 1000000 ...".
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

migrate: $(VENV)/.installed
	$(BIN)/gallery migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

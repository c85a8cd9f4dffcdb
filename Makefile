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
	$(BIN)/ruff check app tests migrations
	$(BIN)/ruff format --check app tests migrations
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix app tests migrations
	$(BIN)/ruff format app tests migrations

migrate: $(VENV)/.installed
	$(BIN)/gallery migrate

## Latency of GET /users during bursts of 20 concurrent logins (loopback, temporary SQLite).
bench: $(VENV)/.installed
	$(BIN)/python bench/login_burst.py --output bench/results/login_burst.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

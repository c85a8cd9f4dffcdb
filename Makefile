# Two commands on a fresh clone: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test fuzz soak soak-long lint format migrate clean

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

## The suite without fuzzing and soak: SQLite always, PostgreSQL too when TEST_DATABASE_URL is set.
test: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not fuzz and not soak"

## Schemathesis against every operation (FUZZ_MAX_EXAMPLES per operation, default 40).
fuzz: $(VENV)/.installed-dev
	$(BIN)/pytest -m fuzz

## Short load soak on a throwaway PostgreSQL cluster (SOAK_WARMUP 15 s, then SOAK_SECONDS 10 s).
soak: $(VENV)/.installed-dev
	$(BIN)/pytest -m soak -s

## The long soak by hand: 60 s, 64 clients, 2 workers, on a throwaway PostgreSQL cluster.
soak-long: $(VENV)/.installed-dev
	$(BIN)/python -m bench.soak --own-cluster --seconds 60 --clients 64 --workers 2 --output bench/results/soak-latest.json

## ruff (lint and format check) and mypy --strict on app/.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix app tests migrations bench
	$(BIN)/ruff format app tests migrations bench

migrate: $(VENV)/.installed
	$(BIN)/gallery migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

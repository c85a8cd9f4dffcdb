# Two commands on a fresh clone: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test fuzz soak soak-long lint format migrate bench bench-login clean browser-deps compose-test lock

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
## The browser test runs when /usr/bin/chromium exists (`make browser-deps` installs it).
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

## Debian's Chromium for tests/test_browser.py (Playwright drives it; no browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium with apt-get"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## The real containers: stand-in base images, compose up, smoke flow via nginx, scale, db restart.
compose-test:
	tests/containers/compose_test.sh

## Refresh requirements.lock (exact versions + hashes) from pyproject.toml's dependencies.
lock: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
	  --no-header -o requirements.lock

## ruff (lint and format check) and mypy --strict on app/.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix app tests migrations bench
	$(BIN)/ruff format app tests migrations bench

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed

## Load benchmark against PostgreSQL (BENCH_DATABASE_URL); BENCH_ARGS="--scale 1000000 ...".
## Then the link-health part (bench/recheck.py: CPU per check, a recheck pass against its
## floor, gallery pages with rechecks on and off); RECHECK_BENCH_ARGS="--images 20000 ...".
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.recheck $(RECHECK_BENCH_ARGS)

migrate: $(VENV)/.installed
	$(BIN)/gallery migrate

## Latency of GET /users during bursts of 20 concurrent logins (loopback, temporary SQLite).
bench-login: $(VENV)/.installed
	$(BIN)/python bench/login_burst.py --output bench/results/login_burst.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

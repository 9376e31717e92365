# Same targets locally and in CI (.ci/run calls them).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev test lint typecheck fmt bench bench-limits bench-sim bench-breaker bench-budgets bench-redis bench-stream bench-conversations bench-submit bench-fairness bench-fair-settle fuzz check clean

$(BIN)/courier: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/courier

install: $(BIN)/courier

# First README command: the whole system on this machine with a demo job.
dev: install
	$(BIN)/courier dev

# Second README command: the whole test suite, TEST_WORKERS processes (each claims its own
# Redis DB; a test file runs whole in one process).
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint typecheck test

# Schemathesis against the API's own /openapi.json (also part of `make test`); prints the case count.
fuzz: install
	$(BIN)/pytest -q -s tests/producers/test_fuzz.py

bench: install
	$(BIN)/python -m bench.run

bench-sim: install
	$(BIN)/python -m bench.simulator_concurrency

bench-stream: install
	$(BIN)/python -m bench.streaming

bench-fairness: install
	$(BIN)/python -m bench.fairness

bench-fair-settle: install
	$(BIN)/python -m bench.fair_settle

bench-limits: install
	$(BIN)/python -m bench.rate_limits

bench-breaker: install
	$(BIN)/python -m bench.breaker

bench-budgets: install
	$(BIN)/python -m bench.budgets

# Child jobs (parent_job_id): submission and start at depth 1, 10, 100 against a plain job.
bench-conversations: install
	$(BIN)/python -m bench.conversations

# What one job costs Redis (commands, CPU, bytes) and the jobs/s one Redis core carries.
bench-redis: install
	$(BIN)/python -m bench.redis_capacity

# Single POST /v1/jobs and GET /v1/jobs/{id} against a minimal FastAPI endpoint (wrk).
bench-submit: install
	$(BIN)/python -m bench.submit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

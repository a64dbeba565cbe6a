# The two commands a newcomer needs: `make up` (deploy the stack to the local default
# target and print where to look) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: venv deps test test-fast lint bench bench-rollouts up down clean

# The local default target: a Debian 12 systemd container on 127.0.0.2 (docs/deploy.md).
up: deps venv
	$(BIN)/python -m gourmetgram.deploy.nspawn up
	GOURMETGRAM_LOCAL_NAME=local $(BIN)/pyinfra -y inventory.py deploy.py $(DEPLOY_ARGS)
	$(BIN)/python -m gourmetgram.deploy.nspawn report

down:
	$(BIN)/python -m gourmetgram.deploy.nspawn down

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Grafana's dashboard schema for tests/grafana/test_dashboard_schema.py: pinned versions
# from the lockfile (npm ci), installed once; the tests download nothing.
SCHEMA_DIR := tests/grafana/schema

deps: $(SCHEMA_DIR)/node_modules/.installed
	bash scripts/install-test-deps.sh

$(SCHEMA_DIR)/node_modules/.installed: $(SCHEMA_DIR)/package-lock.json
	npm ci --prefix $(SCHEMA_DIR) --no-audit --no-fund --loglevel=error
	touch $@

test: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Everything but the deploy's end-to-end test (a few minutes instead of ~15).
test-fast: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not e2e" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python bench/bench_api.py $(BENCH_ARGS)

# The canary controller's scorecard on the real stack (docs/analysis.md, about 30 min):
# e.g. make bench-rollouts BENCH_ARGS="--kinds good,hang --runs-good 2 --runs-bad 1".
bench-rollouts: venv
	$(BIN)/python bench/bench_rollouts.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

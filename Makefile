# The two commands a newcomer needs: `make up` (deploy, once the deploy lands) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)

.PHONY: venv deps test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps:
	bash scripts/install-test-deps.sh

test: deps venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python bench/bench_api.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# file_uploader: every command a developer or operator needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is (re)built whenever a requirements file changes.
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv run test lint bench

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(INSTALLED) ## create .venv and install the requirements

run: $(INSTALLED) ## start the gateway on :8080 (S3 settings from .env)
	$(BIN)/python -m file_uploader

test: $(INSTALLED) ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED) ## check the code with ruff
	$(BIN)/ruff check file_uploader tests
	$(BIN)/ruff format --check file_uploader tests

bench: $(INSTALLED) ## gateway vs direct S3: throughput and memory table (minutes; BENCH_* env, see bench/bench.py)
	$(BIN)/python bench/bench.py

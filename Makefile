# file_uploader: every command a developer or operator needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is (re)built whenever a requirements file changes.
INSTALLED := $(VENV)/.installed
COMPOSE := docker compose -f docker/docker-compose.yml
IMAGE ?= file-uploader

.DEFAULT_GOAL := help
.PHONY: help venv system-deps run test test-fast lint soak bench start-gunicorn run-dev stop-dev logs docker-run docker-logs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(INSTALLED) ## create .venv and install the requirements

run: $(INSTALLED) ## start the gateway on :8080 (S3 from .env, else a local in-memory S3)
	$(BIN)/python -m devtools.localrun

system-deps: ## as root: Debian's chromium and Ceph RGW for the tests (else: say what is missing)
	bash devtools/system-deps.sh

test: $(INSTALLED) system-deps ## run the whole test suite (moto, Ceph RGW, curl, tus clients, Chromium)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(INSTALLED) ## the edit loop: every test but the slow, process and browser ones
	$(BIN)/python -m pytest -m "not slow and not process and not browser" $(PYTEST_ARGS)

lint: $(INSTALLED) ## check the code: ruff, and mypy for types
	$(BIN)/ruff check file_uploader devtools tests bench soak
	$(BIN)/ruff format --check file_uploader devtools tests bench soak
	$(BIN)/mypy

start-gunicorn: $(INSTALLED) ## serve with gunicorn: WORKERS (default one per core), HOST, PORT from env/.env
	$(BIN)/gunicorn file_uploader.app:create_app -c gunicorn.conf.py

run-dev: ## build and start gateway replicas + MinIO with docker compose (http://localhost:8080)
	$(COMPOSE) up --build --detach

stop-dev: ## stop the compose stack (MinIO's volume, and so the files, are kept)
	$(COMPOSE) down --remove-orphans

logs: ## follow the compose stack's logs
	$(COMPOSE) logs --follow

docker-run: ## build the image and run it alone: --env-file .env -p 8080:8080
	docker build -f docker/Dockerfile -t $(IMAGE) .
	docker run --detach --rm --name $(IMAGE) --env-file .env -p 8080:8080 $(IMAGE)

docker-logs: ## follow the logs of `make docker-run`'s container
	docker logs --follow $(IMAGE)

soak: $(INSTALLED) ## mixed workload against a real gateway + moto (SOAK_SECONDS=180, SOAK_USERS=8)
	$(BIN)/python soak/soak.py

bench: $(INSTALLED) ## gateway vs direct S3: throughput and memory table (minutes; BENCH_* env, see bench/bench.py)
	$(BIN)/python bench/bench.py

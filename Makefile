# file_uploader: every command a developer or operator needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is (re)built whenever a requirements file or the package's metadata changes.
INSTALLED := $(VENV)/.installed
IMAGE ?= file-uploader
# Where the proxy of `make run-dev`, or the container of `make docker-run`, answers.
HTTP_PORT ?= 8080
# The container engine: docker where a Docker engine answers, else podman
# (Debian's; `make test-deploy` installs it), with podman-compose from the venv.
# Worked out once, and only by the targets that use it.
DOCKER ?= $(eval DOCKER := $(shell docker info >/dev/null 2>&1 && echo docker || \
	{ command -v podman >/dev/null && echo podman || echo docker; }))$(DOCKER)
COMPOSE_TOOL = $(if $(filter podman,$(DOCKER)),$(BIN)/podman-compose,docker compose)
# --env-file: compose fills ${...} from this .env, not from docker/.env.
# BUILDAH_FORMAT: podman builds OCI images by default, which have no HEALTHCHECK.
COMPOSE = HTTP_PORT=$(HTTP_PORT) STOP_TIMEOUT=$(STOP_TIMEOUT) BUILDAH_FORMAT=docker \
	$(COMPOSE_TOOL) --env-file .env -f docker/docker-compose.yml
# What the compose targets need first: .env with its secrets, and
# podman-compose when podman is the engine.
COMPOSE_NEEDS = dot-env $(if $(filter podman,$(DOCKER)),$(INSTALLED))
# Seconds a stopping container gets before it is killed: the gateway's
# GRACEFUL_TIMEOUT (from the environment, else .env, else 30) plus 10 for
# gunicorn to close. The proxy gets as long, so uploads through it can finish.
GRACEFUL_TIMEOUT ?= $(or $(shell sed -n 's/^GRACEFUL_TIMEOUT=\([0-9][0-9]*\).*/\1/p' .env 2>/dev/null | tail -n 1),30)
STOP_TIMEOUT ?= $(shell expr $(GRACEFUL_TIMEOUT) + 10)
# Extra `docker run` options for `make docker-run`, e.g. --network NAME.
DOCKER_RUN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv system-deps run test test-fast test-deploy test-distributed lint soak bench start-gunicorn run-dev stop-dev \
	logs docker-run docker-logs dot-env

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(INSTALLED): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@# The package itself, editable: .venv/bin/file-uploader (the client) works
	@# from any directory and runs this checkout's code.
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $@

venv: $(INSTALLED) ## create .venv, install the requirements and the package (.venv/bin/file-uploader)

run: $(INSTALLED) ## start the gateway on :8080 (S3 from .env, else a local in-memory S3)
	$(BIN)/python -m devtools.localrun

system-deps: ## as root: Debian's chromium and Ceph RGW for the tests (else: say what is missing)
	bash devtools/system-deps.sh

# The tests run in TEST_WORKERS processes (pytest-xdist; auto: one per core, 0: in pytest's own process),
# each with its own moto server, and with its own Ceph cluster once it runs an RGW test.
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS)
# test-fast runs two workers per core unless TEST_WORKERS is given: a worker waits for its moto
# server and for the timeouts its tests wait out as often as it computes, and one per core left
# both cores a third idle. worksteal: a worker that runs out takes tests from the busiest, so
# they end together.
FAST_WORKERS = $(if $(filter file,$(origin TEST_WORKERS)),$(shell echo $$((2 * $$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)))),$(TEST_WORKERS))
XDIST_FAST = -n $(FAST_WORKERS) --dist worksteal
# What the edit loop leaves out. Spelt in full: a -m here replaces the one in setup.cfg's addopts.
FAST_MARKERS = not slow and not process and not browser and not deploy and not distributed

# Where PYTHONDONTWRITEBYTECODE is set (some shells and images set it), each worker compiled
# every module and pytest rewrote every test module again on each run: 8 s of CPU per worker,
# a sixth of test-fast. The test targets keep the caches (__pycache__/, ignored by git).
test test-fast: export PYTHONDONTWRITEBYTECODE :=

test: $(INSTALLED) system-deps ## run the whole test suite (moto, Ceph RGW, curl, tus clients, Chromium), a worker per core (TEST_WORKERS)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-distributed: $(INSTALLED) system-deps ## break SeaweedFS (3 volume servers) and Ceph (3 OSDs, 2 RGWs) while uploads run (minutes)
	$(BIN)/python -m pytest -m distributed --timeout=400 tests/distributed $(PYTEST_ARGS)

test-fast: $(INSTALLED) ## the edit loop: every test but the slow, process and browser ones, two workers per core (1 min 15 s on 2 quiet cores, 140 s of CPU)
	$(BIN)/python -m pytest $(XDIST_FAST) -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

lint: $(INSTALLED) ## check the code: ruff, and mypy for types
	$(BIN)/ruff check file_uploader devtools tests bench soak
	$(BIN)/ruff format --check file_uploader devtools tests bench soak
	$(BIN)/mypy

start-gunicorn: $(INSTALLED) ## serve with gunicorn: WORKERS (default one per core), HOST, PORT from env/.env
	$(BIN)/gunicorn file_uploader.app:create_app -c gunicorn.conf.py

# Secrets that every replica and worker must share, generated once into .env
# (created, readable by its owner only, when missing) and never changed after.
dot-env:
	@umask 077; test -f .env || { touch .env && echo "make: created .env"; }; \
	for name in SHARE_SECRET MINIO_ROOT_PASSWORD; do \
	    grep -q "^$$name=." .env && continue; \
	    value=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))') || exit 1; \
	    grep -v "^$$name=" .env > .env.new; \
	    echo "$$name=$$value" >> .env.new; \
	    cat .env.new > .env && rm .env.new; \
	    echo "make: wrote a new $$name to .env"; \
	done

run-dev: $(COMPOSE_NEEDS) ## build and start gateway replicas + MinIO + nginx; returns once it serves on :8080 (HTTP_PORT)
	@# Built once: podman-compose would build it once per replica.
	$(COMPOSE) build gateway
	$(COMPOSE) up --detach
	@# Compose v2 starts nginx only once the replicas are healthy; podman 4.3
	@# cannot wait for health, so wait here for the whole chain, on any engine.
	@for i in $$(seq 120); do \
	    curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:$(HTTP_PORT)/readyz 2>/dev/null && \
	        echo "make: serving on http://127.0.0.1:$(HTTP_PORT)" && exit 0; \
	    sleep 1; \
	done; echo "make: nothing ready on :$(HTTP_PORT) after 120 s (make logs)"; exit 1

stop-dev: $(COMPOSE_NEEDS) ## stop the stack, letting uploads in flight finish (MinIO's volume, and so the files, are kept)
	@# In order: the proxy first (it waits for the requests it carries), then
	@# the gateways, then MinIO. Compose v2 orders `down` so itself;
	@# podman-compose stops every container at once, S3 under live uploads.
	-$(COMPOSE) stop proxy
	-$(COMPOSE) stop gateway
	$(COMPOSE) down --remove-orphans

logs: $(COMPOSE_NEEDS) ## follow the compose stack's logs
	$(COMPOSE) logs --follow

docker-run: dot-env ## build the image and run it alone on :8080 (HTTP_PORT) with .env (replacing one already there)
	BUILDAH_FORMAT=docker $(DOCKER) build -f docker/Dockerfile -t $(IMAGE) .
	@# A container already there (running, or stopped and kept for its logs) is
	@# replaced; a running one is stopped gracefully first.
	@$(DOCKER) stop --time $(STOP_TIMEOUT) $(IMAGE) >/dev/null 2>&1 || true
	@$(DOCKER) rm --force $(IMAGE) >/dev/null 2>&1 || true
	@# --stop-timeout: `docker stop` waits that long (not 10 s) before SIGKILL,
	@# so uploads get their GRACEFUL_TIMEOUT. No --rm: the logs of a stopped or
	@# crashed container stay readable with `make docker-logs`.
	$(DOCKER) run --detach --name $(IMAGE) --env-file .env -e HOST=0.0.0.0 -e PORT=8080 \
	    --stop-timeout $(STOP_TIMEOUT) -p $(HTTP_PORT):8080 $(DOCKER_RUN_ARGS) $(IMAGE)

docker-logs: ## follow the logs of `make docker-run`'s container
	$(DOCKER) logs --follow $(IMAGE)

# Debian's container engine and what it needs here (installed by test-deploy
# as root when there is no Docker engine); debootstrap builds stand-in images
# when the images the product names cannot be pulled.
DEPLOY_PACKAGES := podman buildah runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns iptables \
	debootstrap

test-deploy: $(INSTALLED) ## build the image, run the compose stack with a real engine and check it through nginx (minutes)
	@packages="$(DEPLOY_PACKAGES)"; docker info >/dev/null 2>&1 && packages=debootstrap; \
	if ! dpkg -s $$packages >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing $$packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get -o DPkg::Lock::Timeout=300 install -y -qq $$packages >/dev/null; \
	fi
	$(BIN)/python -m pytest -m deploy --timeout=1500 tests/deploy $(PYTEST_ARGS)

soak: $(INSTALLED) ## mixed workload against a real gateway + moto (SOAK_SECONDS=180, SOAK_USERS=8)
	$(BIN)/python soak/soak.py

bench: $(INSTALLED) ## gateway vs direct S3: throughput and memory table (minutes; BENCH_* env, see bench/bench.py)
	$(BIN)/python bench/bench.py

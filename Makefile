# One task runner. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: venv demo test lint typecheck unit bench api worker up db-upgrade docker images image clean chromium screenshots faults

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

docker:
	scripts/ensure-docker

images: docker
	scripts/build-test-images

# Debian's headless Chromium and chromedriver, for the console's browser tests.
chromium:
	scripts/ensure-chromium

# The orchestrator image (services/orchestrator/Dockerfile) from the local Debian base;
# apt and pip use the host network, pip trusts the host's local CAs (a TLS-intercepting
# proxy may stand before PyPI). Layers are cached: a rebuild without changes takes
# seconds, a source change rebuilds only the moonmind wheel. The replaced image is dropped
# (unless a container still uses it).
IMAGE ?= moonmind/orchestrator:latest
image: images
	set -e; old="$$(docker image inspect -f '{{.Id}}' $(IMAGE) 2>/dev/null || true)"; \
	DOCKER_BUILDKIT=0 docker build --network host \
		--build-arg BASE_IMAGE=moonmind/python-base:bookworm \
		--build-arg EXTRA_CA_CERTS="$$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null)" \
		-f services/orchestrator/Dockerfile -t $(IMAGE) .; \
	new="$$(docker image inspect -f '{{.Id}}' $(IMAGE))"; \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then docker rmi "$$old" >/dev/null 2>&1 || true; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Every test, against real PostgreSQL (127.0.0.1:5432), RabbitMQ (127.0.0.1:5672) and
# a Docker engine that scripts/ensure-docker starts if needed.
test: venv images chromium lint typecheck
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

# The console's pages in real Chromium against a real fix run: var/screenshots/*.png
screenshots: venv images chromium
	$(BIN)/python -m pytest -q tests/integration/console/test_console_browser.py $(PYTEST_ARGS)

# The fault matrix (tests/faults) FAULTS_N times each, with the long forms (a 30 s database
# outage), then its table: fault, repetitions, runs ended, stuck, duplicated effects, bytes
# lost. `make test` runs the same tests once (the quick form).
FAULTS_N ?= 3
faults: venv images
	@mkdir -p var/faults && rm -f var/faults/results.jsonl
	FAULTS_N=$(FAULTS_N) FAULTS_FULL=1 FAULTS_REPORT=var/faults/results.jsonl \
		$(BIN)/python -m pytest -ra tests/faults $(PYTEST_ARGS); status=$$?; \
	$(BIN)/python scripts/faults_table.py var/faults/results.jsonl; exit $$status

unit: venv
	$(BIN)/python -m pytest -ra tests/unit $(PYTEST_ARGS)

demo: venv images
	$(BIN)/python -m moonmind.demo

bench: venv images
	$(BIN)/python -m bench.bench_orchestrator

db-upgrade: venv
	$(BIN)/moonmind db upgrade

api: venv
	$(BIN)/moonmind orchestrator api

worker: venv
	$(BIN)/moonmind orchestrator worker

up: venv
	$(BIN)/moonmind orchestrator up

clean:
	rm -rf var/artifacts var/celery var/orchestrator.db*

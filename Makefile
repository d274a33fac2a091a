# Flywheel — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: install browser demo test test-unit test-dags test-integration test-services lint up up-services demo-services down status clean compile bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

# installs the exact pins, then the project itself (editable, no dependency resolution)
$(VENV)/.installed: requirements.txt pyproject.toml | $(UV)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install  ## play the whole loop on the embedded default; leaves the UIs running
	$(BIN)/python -m flywheel.cli demo

# the browser test (tests/integration/test_ui.py) drives Debian's chromium through Playwright's executable_path
# (Playwright never downloads a browser here): installed with apt when missing and we are root
browser:
	@command -v chromium >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get install -y --no-install-recommends chromium \
	  || { apt-get update && apt-get install -y --no-install-recommends chromium; }; \
	  else echo "chromium is missing: run 'sudo apt-get install -y chromium' (tests/integration/test_ui.py needs it)"; fi; }

TESTS := tests/unit tests/dags tests/services tests/integration

# the whole suite as two pytest sessions side by side (tests/conftest.py, FLYWHEEL_TEST_SHARD): `demo` runs the unit
# and DAG tests while the embedded demo plays, then the tests of that demo; `rest` the other integration tests, then
# the scale-out tests once their demo has played. One session alone left a core idle for ~7 minutes of scheduler
# waits (bench/README.md, "What `make test` spends"). `rest` prints its report after `demo`'s.
test: install browser  ## the whole suite (unit, DAG integrity, integration through the real scheduler)
	@mkdir -p .flywheel
	@FLYWHEEL_TEST_SHARD=rest $(BIN)/python -m pytest $(TESTS) -q -p no:cacheprovider --durations=20 \
	  > .flywheel/test-rest.log 2>&1 & rest=$$!; \
	trap 'kill -TERM $$rest 2>/dev/null; wait $$rest; exit 130' INT TERM; \
	FLYWHEEL_TEST_SHARD=demo $(BIN)/python -m pytest $(TESTS) -q --durations=30; demo=$$?; \
	wait $$rest; other=$$?; \
	echo "== the other session (FLYWHEEL_TEST_SHARD=rest), .flywheel/test-rest.log:"; cat .flywheel/test-rest.log; \
	echo "== sessions: demo exit $$demo, rest exit $$other"; \
	exit $$(( demo != 0 || other != 0 ))

test-unit: install
	$(BIN)/python -m pytest tests -q -m unit

test-dags: install
	$(BIN)/python -m pytest tests -q -m dags

test-integration: install browser
	$(BIN)/python -m pytest tests -q -m integration

test-services: install  ## the scale-out layer alone (needs PostgreSQL and Redis on 127.0.0.1)
	$(BIN)/python -m pytest tests -q -m services

lint: install
	$(BIN)/ruff check . && $(BIN)/mypy

up: install  ## start the embedded services without playing the scenario
	$(BIN)/python -m flywheel.cli up

up-services: install  ## the docker-compose topology natively: Celery + PostgreSQL + Redis + S3 + MLflow server
	FLYWHEEL_TOPOLOGY=services $(BIN)/python -m flywheel.cli up

demo-services: install  ## the whole loop on the native scale-out topology
	FLYWHEEL_TOPOLOGY=services $(BIN)/python -m flywheel.cli demo

down:  ## stop everything `make demo` / `make up` started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m flywheel.cli down; else echo "nothing to stop"; fi

status: install
	$(BIN)/python -m flywheel.cli status

bench: install
	$(BIN)/python bench/demo_stages.py

compile: $(UV)  ## re-pin requirements.txt from requirements.in
	$(UV) pip compile requirements.in --python-version 3.11 -o requirements.txt

clean: down
	rm -rf .flywheel

# The project's entry points. `make run` and `make test` are the two set-up
# commands the README promises; everything else is a building block of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SSO_HOME ?= .sso

.PHONY: run test lint typecheck format proto bench bench-suite bench-quick venv system-deps test-py clean help

help:
	@echo "make run    - start the SSO service on the embedded default (SQLite) on 127.0.0.1:50051"
	@echo "make test   - install what is needed and run lint, types and every test"
	@echo "make lint   - ruff, import-linter, mypy --strict"
	@echo "make proto  - regenerate service/sso_proto from service/proto"
	@echo "make bench  - benchmark Login/Refresh/ValidateToken against PostgreSQL and Redis"
	@echo "              then the load-test suite (every scenario swept to saturation)"
	@echo "make bench-suite / bench-quick - only the load-test suite, full or a 1-minute smoke run"
	@echo "make cluster-up / cluster-down - the local Kubernetes control plane"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[service,operator,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@mkdir -p $(SSO_HOME)
	$(BIN)/sso migrate
	$(BIN)/sso keys ensure
	$(BIN)/sso apps ensure-demo
	$(BIN)/sso serve --hint

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy service/sso operator/sso_operator bench

typecheck: lint

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

test: system-deps $(STAMP) lint k8s-binaries test-py

test-py: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: system-deps $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.suite

bench-suite: system-deps $(STAMP)
	$(BIN)/python -m bench.suite

bench-quick: system-deps $(STAMP)
	$(BIN)/python -m bench.suite --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

include e2e/cluster.mk

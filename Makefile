# pagemill: `make demo` and `make test` work on a fresh machine; everything else is a step of them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PAGEMILL := $(VENV)/bin/pagemill
PYTEST_ARGS ?=

.PHONY: setup system-deps venv services demo test lint bench clean

setup: system-deps venv services

system-deps:
	@bash infra/local/system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

services:
	@bash infra/local/ensure-services.sh

demo: setup
	$(PAGEMILL) demo $(if $(KEEP),--keep-running)

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check pipeline workers tests migrations
	$(VENV)/bin/ruff format --check pipeline workers tests migrations
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

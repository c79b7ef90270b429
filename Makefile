# pagemill: `make demo` and `make test` work on a fresh machine; everything else is a step of them.
#
#   make lock          re-resolve the lock files after editing dependencies (keeps pins that fit)
#   make lock-upgrade  move every lock to the newest versions that fit
#   make lint          ruff (check + format) and strict mypy
#   make lint-infra    hadolint, yamllint, docker-compose config, terraform fmt, checkov, schemas
#   make ci            what CI runs (.ci/run): lint, lint-infra, test
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PAGEMILL := $(VENV)/bin/pagemill
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
# -q -q: errors only (pip warns about every configured index that does not answer).
PIP := -m pip install -q -q --disable-pip-version-check
PYTEST_ARGS ?=
PY_SOURCES := pipeline workers tests migrations infra bench

.PHONY: setup system-deps lock-check venv tools services demo test bench lint lint-infra ci \
	lock lock-upgrade clean

setup: system-deps venv services

system-deps:
	@bash infra/local/system-deps.sh

# The lock files must describe pyproject.toml: a dependency added without `make lock` stops here.
lock-check:
	@python3 infra/lock.py check

venv: lock-check $(VENV)/.installed

# Exactly the locked versions, each checked against its hash; --no-deps because the lock is
# complete (the check below proves it), and pagemill itself is built with the locked setuptools.
# uv (itself from the tools lock) downloads in parallel: a fresh install takes a fraction of
# pip's time.
$(VENV)/.installed: requirements/dev.lock pyproject.toml | $(UV)
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing requirements/dev.lock into $(VENV)"
	@$(UV) pip install --quiet --python $(PY) --require-hashes --no-deps -r requirements/dev.lock
	@$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	@$(UV) pip check --quiet --python $(PY) || { $(UV) pip check --python $(PY); exit 1; }
	@touch $@

# The infrastructure linters live apart: checkov's pins conflict with the pipeline's.
tools: lock-check $(TOOLS)/.installed

$(TOOLS)/.installed: requirements/tools.lock | $(UV)
	@echo "installing requirements/tools.lock into $(TOOLS)"
	@$(UV) pip install --quiet --python $(TOOLS)/bin/python --require-hashes --no-deps \
		-r requirements/tools.lock
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
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy

lint-infra: system-deps tools
	@bash infra/lint.sh $(TOOLS)

ci: lint lint-infra test

# uv comes from the tools lock (pinned, hashed) and installs everything else.
$(UV):
	@test -x $(TOOLS)/bin/python || python3 -m venv $(TOOLS)
	@$(TOOLS)/bin/python $(PIP) --require-hashes --no-deps -r <(python3 infra/lock.py requirement uv)

lock: $(UV)
	python3 infra/lock.py compile --uv $(UV)

lock-upgrade: $(UV)
	python3 infra/lock.py compile --uv $(UV) --upgrade

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache

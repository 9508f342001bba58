# make demo      set up, start a local server, deploy the account-suggestion model, predict
# make test      every tier: brings up the test environment it needs, runs, tears it down
# make test-unit the fast tier only (no services, no root)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip's own progress (each package as it is downloaded) shows; PIP_FLAGS=-q hides it.
PIP_FLAGS ?= --progress-bar on

.PHONY: venv test test-unit lint demo bench testenv-up testenv-down clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg requirements/dev.txt requirements/kserve.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing Gazelle and its dependencies into $(VENV) with pip; the first time this takes a few minutes."
	$(PY) -m pip install $(PIP_FLAGS) -c requirements/constraints.txt -r requirements/dev.txt -e '.[all]'
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -c requirements/constraints.txt -r requirements/kserve.txt
	touch $@

lint: venv
	$(PY) -m mypy

test-unit: venv lint
	$(PY) -m pytest tests/unit

test: venv
	bash testenv/run-tests.sh

demo: venv
	$(PY) notebooks/demo.py

bench: venv
	$(PY) bench/runtime.py
	$(PY) bench/deploy.py

testenv-up:
	bash testenv/up.sh

testenv-down:
	bash testenv/down.sh

clean:
	rm -rf $(VENV) build *.egg-info

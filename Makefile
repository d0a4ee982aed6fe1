# leveret's build and test commands.  `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: all test demo bench regen check-codegen typecheck pytest broker clean

all: test

# The virtualenv, rebuilt whenever pyproject.toml changes (the stamp is older then).
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench-stamp: $(VENV)/.stamp
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

.venv: $(VENV)/.stamp

# RabbitMQ for the tests: installed from Debian's packages when missing (needs root);
# not needed when LEVERET_TEST_URL points at a broker.  The node itself is started by
# the tests (tests/conftest.py), on its own ports, and stopped when they end.
broker:
	@if [ -z "$${LEVERET_TEST_URL:-}" ]; then $(PYTHON) scripts/rabbitmq.py install >/dev/null; fi

check-codegen: $(VENV)/.stamp
	$(PY) -m codegen --check

typecheck: $(VENV)/.stamp
	$(PY) -m mypy leveret codegen scripts benchmarks tests

pytest: $(VENV)/.stamp broker
	$(PY) -m pytest -q

test: $(VENV)/.stamp broker
	$(PY) -m codegen --check
	$(PY) -m mypy leveret codegen scripts benchmarks tests
	$(PY) -m pytest -q

demo: $(VENV)/.stamp
	$(PY) scripts/demo.py

bench: $(VENV)/.bench-stamp
	$(PY) -m benchmarks

regen: $(VENV)/.stamp
	$(PY) -m codegen

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

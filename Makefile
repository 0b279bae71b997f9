# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint unit deps clean bench cluster-test

run: $(STAMP)
	$(VENV)/bin/tidings serve --demo $(ARGS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

## Everything the test suite needs on a bare machine: RabbitMQ (and a 3-node cluster of it
## beside, for tests/faults/test_cluster.py), Node packages, Chromium.
deps: $(STAMP)
	bash scripts/ensure-rabbitmq.sh
	bash scripts/ensure-rabbitmq-cluster.sh
	bash scripts/ensure-node.sh
	bash scripts/ensure-chromium.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test: deps lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

## The cluster test at the issue's size: 1,000 clients on two tidings nodes.
cluster-test: $(STAMP)
	bash scripts/ensure-rabbitmq-cluster.sh
	TIDINGS_CLUSTER_CLIENTS=1000 TIDINGS_CLUSTER_RATE=10 $(VENV)/bin/pytest -q -s tests/faults/test_cluster.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) conformance/node_modules .pytest_cache .mypy_cache .ruff_cache

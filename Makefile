# Two commands matter: `make demo` and `make test`. Each sets up everything it needs (hack/setup.sh).
.PHONY: setup test test-fast demo crds lint bench clean

VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

setup:
	bash hack/setup.sh

test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m modeldeploy_operator.crd --check
	$(VENV)/pytest -q

# Unit tests only: no control plane, seconds.
test-fast:
	$(VENV)/pytest -q tests/operator tests/runtime tests/optimize -m "not cluster and not realnode"

demo: setup
	$(VENV)/python hack/demo.py

crds:
	$(VENV)/python -m modeldeploy_operator.crd

lint:
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

bench: setup
	$(VENV)/python bench/operator/run.py
	$(VENV)/python bench/runtime/run.py
	$(VENV)/python bench/node/run.py

clean:
	rm -rf .venv .pytest_cache

# One-command setup, run and test. A second call reuses what is installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
CONFIG ?= quick

# Small-machine defaults (see grl_aecnn/runtime.py); the user's environment wins.
export OMP_NUM_THREADS ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_AUTH_MODE ?= disabled
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false

.PHONY: help setup data run test test-fast bench mlflow-ui clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the pinned dependencies + this project

data:  ## install Fashion-MNIST from Debian when it is missing (needs apt and root)
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST not found at $(FMNIST): install the Debian package dataset-fashion-mnist or pass --set data.data_dir=DIR"; \
	fi

run: setup data  ## run the whole pipeline on the embedded default (CONFIG=quick)
	$(BIN)/grl-aecnn run --config $(CONFIG)

test: setup data  ## run the test suite
	$(BIN)/python -m pytest -q

bench: setup data  ## run the benchmarks (print figures and ratios)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

mlflow-ui: setup  ## browse the local MLflow store at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean:  ## remove outputs and the local MLflow store (keeps .venv)
	rm -rf outputs mlruns

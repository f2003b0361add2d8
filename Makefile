# One-command set-up and entry points. `make help` lists the targets.
#
# The CPU build of PyTorch is installed first (pinned by TORCH_VERSION) so that the
# package's unpinned `torch>=2.2` requirement is already satisfied and pip never pulls a
# multi-gigabyte CUDA build. Users with a GPU override it, e.g.
#   make setup TORCH_VERSION=2.5.1 TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= dev,atari
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup demo test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned CPU torch and the package (dev extras)

demo: $(STAMP)  ## the main job: a short agent training run (quick preset), then its evaluation
	$(BIN)/mbrl-causal train --env InterventionalPong-v0 --preset quick

test: $(STAMP)  ## run the test suite (the command CI runs)
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## speed benchmarks (JSON in runs/bench_{envs,models,agent}.json)
	$(BIN)/python -m pip install -e ".[$(EXTRAS),bench]"
	$(BIN)/mbrl-causal bench envs --json runs/bench_envs.json
	$(BIN)/mbrl-causal bench models --json runs/bench_models.json
	$(BIN)/mbrl-causal bench agent --json runs/bench_agent.json

clean:  ## remove the virtual environment
	rm -rf $(VENV)

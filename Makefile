# Two commands do all set-up on a fresh clone:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# DVC stage commands call `mgr`, so the venv must be first on PATH for `dvc repro` too.
export PATH := $(BIN):$(PATH)
# Offline by design: no model or data download at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Without this DVC starts a detached analytics process.
export DVC_NO_ANALYTICS := 1

.PHONY: run test setup clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: a few minutes; log in $(VENV)/install.log)"
	@$(BIN)/python -m pip install -c constraints.txt -e '.[dev]' > $(VENV)/install.log 2>&1 \
		|| { tail -n 40 $(VENV)/install.log; echo "pip install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest

clean:
	rm -rf $(VENV) data/raw/synthetic data/ingested data/image_cache .dvc/cache

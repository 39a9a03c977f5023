# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo demo-long test lint venv

venv: $(STAMP)

# torch/torchvision are pinned to the versions the tests run on; pyproject.toml keeps the supported ranges.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The whole study on the embedded synthetic VG-format dataset: data, DETR pretraining, training,
# evaluation and the report (reports/demo/report.html).
demo: $(STAMP)
	$(VENV)/bin/snakemake --config mode=demo --cores all
	@echo "Report: $(abspath reports/demo/report.html)"

demo-long: $(STAMP)
	$(VENV)/bin/snakemake --config mode=demo --configfile demo/long.yaml --cores all
	@echo "Report: $(abspath reports/demo/report.html)"

# Three workers on two cores: a third of the suite waits on SLURM and subprocesses (tests/conftest.py).
PYTEST_WORKERS ?= 3

test: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

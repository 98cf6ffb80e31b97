# `make study` and `make test` each create .venv if missing and install the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

study: $(STAMP)
	$(BIN)/memstudy study --fresh  # measure on this machine: the committed results are replaced

test: $(STAMP)
	$(BIN)/python -m pytest -q

# speed and overhead figures -> results/bench/ (bench.csv, env.json, bench.md); PyTorch figures need the
# optional extra: $(BIN)/pip install -e '.[torch]' (a CPU build of torch 2.13.0), else they are skipped
bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.table --readme  # README's table is generated from bench.csv

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info

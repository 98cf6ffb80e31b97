# `make study` and `make test` each create .venv if missing and install the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study example readme results test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,distributed]'  # the Dask tests run too
	touch $(STAMP)

# the example step the README shows (What one step holds), measured as `memstudy run` prints it
EXAMPLE := --depth 8 --width 256 --batch 64 --mode both

study: $(STAMP)
	$(BIN)/memstudy study --fresh  # measure on this machine: the committed results are replaced
	$(MAKE) example
	$(MAKE) readme

example: $(STAMP)
	mkdir -p results/example
	$(BIN)/memstudy run $(EXAMPLE) --json > results/example/run.jsonl.tmp
	mv results/example/run.jsonl.tmp results/example/run.jsonl

# README's and docs/'s figures are rendered from results/ (tests/test_published.py checks they match): rerun after
# any study, the example or the benchmark is regenerated (tools/ is not installed: it reads this folder)
readme: $(STAMP)
	$(BIN)/python -m tools.published --readme

# every committed result afresh, then the README's figures from them (the benchmark is `make bench`)
results: $(STAMP)
	$(BIN)/memstudy study --all --fresh
	$(MAKE) example
	$(MAKE) readme

test: $(STAMP)
	$(BIN)/python -m pytest -q

# speed and overhead figures -> results/bench/ (bench.csv, env.json, bench.md); PyTorch figures need the
# optional extra: $(BIN)/pip install -e '.[torch]' (a CPU build of torch 2.13.0), else they are skipped
bench: $(STAMP)
	$(BIN)/python -m benchmarks  # as processes come: the main table
	$(BIN)/python -m benchmarks --heap warm --only speed --out results/bench/heap-warm  # the companion run
	$(MAKE) readme  # docs/performance.md's table and the prose that quotes bench.csv

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info

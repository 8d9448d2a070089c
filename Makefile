# Two commands do all the set-up (see README.md):
#   make quickstart   install everything, then fit, recommend and evaluate on the embedded dataset
#   make test         install whatever is missing, then run the default test suite
#
# TORCH pins the torch wheel. torch==2.13.0 is the CPU build on this project's machines; elsewhere
# override it, e.g. `make quickstart TORCH=torch` for whatever build your platform prefers.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.recsys-installed

.PHONY: install quickstart test test-slow lint typecheck bench bench-fast bench-full clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,plot,dask,bench,fast]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/recsys quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check recsys features models tests benchmarks
	$(BIN)/ruff format --check recsys features models tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy recsys features models benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/foundation.py

# The benchmark runner (benchmarks/README.md): quality against peers, speed against references, scale.
bench-fast: $(STAMP)
	$(BIN)/python benchmarks/run.py --profile fast

bench-full: $(STAMP)
	$(BIN)/python benchmarks/run.py --profile full

clean:
	rm -rf $(VENV) build *.egg-info

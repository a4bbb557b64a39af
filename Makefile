# vfanalytics: `make demo` then `make test` on a fresh clone (needs only python3 >= 3.11 and make).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STORE  ?= data/vfanalytics.duckdb
export VFA_STORE ?= $(STORE)

.PHONY: demo test lab lint report bench clean help

help:
	@echo "make demo   - set up .venv, generate the demo store, run every report"
	@echo "make test   - install the dev extra and run the test suite"
	@echo "make lab    - JupyterLab on notebooks/"
	@echo "make lint   - ruff + mypy"
	@echo "make report - run every report on \$$VFA_STORE"
	@echo "make bench  - run the benchmark scripts"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(VENV)/.lab-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	@touch $@

demo: $(VENV)/.installed
	$(BIN)/vfa demo generate --store $(STORE)
	$(BIN)/vfa store info --store $(STORE)
	@if $(BIN)/vfa report --help >/dev/null 2>&1; then $(BIN)/vfa report all --store $(STORE); fi

report: $(VENV)/.installed
	$(BIN)/vfa report all --store $(STORE)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: $(VENV)/.lab-installed
	$(BIN)/jupyter lab notebooks/

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check vfanalytics tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) reports data/*.duckdb data/*.duckdb.wal data/generated

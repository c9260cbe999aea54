# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   – creates .venv if missing, installs ssl-bench, runs the digits comparison
#   make test   – creates .venv if missing, installs ssl-bench with the dev extra, runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls when pyproject.toml changes (new dependencies or entry points).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssl-bench sweep --dataset digits --labels 50 --seeds 0,1,2 --out runs/demo --quiet
	$(BIN)/ssl-bench report runs/demo --out reports/digits-50

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-enable

clean:
	rm -rf runs .pytest_cache .benchmarks

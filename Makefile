# Two entry points on a fresh machine: `make demo` and `make test`. Both create and use .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# to take a CPU-only torch build on a machine without a GPU.
PIP_ARGS ?=
INPUT  ?=
PYTEST_ARGS ?=

.PHONY: venv test test-all demo bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_ARGS) -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -m "not gpu and not slow" $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/sapiens-stream demo $(if $(INPUT),--input $(INPUT)) --out out/demo

bench: venv
	$(BIN)/python bench/models.py

lint: venv
	$(BIN)/python -m ruff check models flows actors storage bench tests

clean:
	rm -rf $(VENV) out .pytest_cache

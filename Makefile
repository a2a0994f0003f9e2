# Two entry points on a fresh machine: `make demo` and `make test`. Both create and use .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# to take a CPU-only torch build on a machine without a GPU.
PIP_ARGS ?=
INPUT  ?= ../shared/data/people_walking_720p.avi
PYTEST_ARGS ?=

.PHONY: venv test test-all soak demo bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_ARGS) -e '.[test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q --doctest-modules storage media
	$(BIN)/python -m pytest -m "not gpu and not slow" $(PYTEST_ARGS)

test-all: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Longer runs kept out of CI: every test marked slow, then 200 jobs through one service.
SOAK_JOBS ?= 200
soak: venv
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)
	$(BIN)/python bench/load.py --jobs $(SOAK_JOBS) --max-jobs 4

# The whole pipeline on Ray, then an overlay video. With a CUDA device: the released 0.3B
# checkpoints and RT-DETR (downloaded once into the hub and torch caches); offline, or without
# a GPU (the released models would take hours on a CPU), the random-weight tiny model, which
# the output and every picture say.
DEMO_RUN = $(BIN)/sapiens-stream run $(INPUT) --job-id demo --stride 10 --max-side 320 --output-root out/demo
demo: venv
	rm -rf out/demo/demo.zarr
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  $(DEMO_RUN) --model 0.3b --detector rtdetr || { \
	    echo "demo: the released weights could not be run (offline?): tiny, random weights"; \
	    rm -rf out/demo/demo.zarr; $(DEMO_RUN); }; \
	else \
	  echo "demo: no CUDA device: the random-weight tiny model (not a prediction)"; $(DEMO_RUN); \
	fi
	$(BIN)/sapiens-stream render out/demo/demo.zarr --out out/demo/demo.mp4
	$(BIN)/sapiens-stream render out/demo/demo.zarr --out out/demo/frame.png --frame 10

bench: venv
	$(BIN)/python bench/models.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/load.py

# Style, formatting and the import contracts of pyproject.toml (the floors of the code base).
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check models media flows actors storage bench tests
	@# No Python file over 600 lines: a file that grows is split by concept.
	@big=$$(find models media flows actors storage bench tests deploy -name '*.py' \
	  -exec awk 'END { if (NR > 600) print FILENAME ": " NR " lines (limit 600)" }' {} \;); \
	  if [ -n "$$big" ]; then echo "$$big"; exit 1; fi
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) out .pytest_cache
